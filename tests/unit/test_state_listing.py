"""Tests of the state machine's object listing (``raftmeta.sm.objects``) against a
reference implementation, on random and hypothesis-generated key sets. Helpers: ``tests.unit.metastate``."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftmeta.state import MetaState
from tests.unit.metastate import Replica, create, obj, put, replica


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


# ---------------------------------------------------------------------- listing


def reference_entries(keys: set[str] | list[str], prefix: str, delimiter: str) -> list[tuple[str, bool]]:
    """Brute-force S3 ListObjects: every key under ``prefix`` in order; with a delimiter,
    a key whose remainder after the prefix contains it rolls up into the common prefix
    ending at its first occurrence. Returns (name, is_common_prefix) in name order."""
    entries: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for key in sorted(keys):
        if not key.startswith(prefix):
            continue
        if delimiter:
            rest = key[len(prefix):]
            pos = rest.find(delimiter)
            if pos >= 0:
                common = prefix + rest[: pos + len(delimiter)]
                if common not in seen:
                    seen.add(common)
                    entries.append((common, True))
                continue
        entries.append((key, False))
    assert entries == sorted(entries), "reference bug: entries must already be in name order"
    return entries


def reference_page(entries: list[tuple[str, bool]], after: str, max_keys: int) -> dict[str, Any]:
    rest = [e for e in entries if e[0] > after]
    page = rest[:max_keys]
    return {
        "contents": [n for n, p in page if not p],
        "prefixes": [n for n, p in page if p],
        "truncated": len(rest) > max_keys,
        "last": page[-1][0] if page else "",
    }


def page_entries(page: dict[str, Any]) -> list[tuple[str, bool]]:
    contents = [c["key"] for c in page["contents"]]
    assert contents == sorted(contents)
    assert page["prefixes"] == sorted(page["prefixes"])
    return sorted([(k, False) for k in contents] + [(p, True) for p in page["prefixes"]])


def check_listing(state: MetaState, bucket: str, keys: set[str], prefix: str, delimiter: str, max_keys: int,
                  after: str = "") -> None:
    entries = reference_entries(keys, prefix, delimiter)
    q = {"q": "list", "bucket": bucket, "prefix": prefix, "delimiter": delimiter, "max_keys": max_keys}

    # one page from an arbitrary start
    page = state.query({**q, "after": after})
    assert page["ok"] is True
    got = {k: page[k] for k in ("truncated", "last")}
    got["contents"] = [c["key"] for c in page["contents"]]
    got["prefixes"] = page["prefixes"]
    assert got == reference_page(entries, after, max_keys), (sorted(keys), prefix, delimiter, max_keys, after)

    # paging from the start with after = last, until not truncated
    listed: list[tuple[str, bool]] = []
    cursor = ""
    for _ in range(len(entries) + 2):
        page = state.query({**q, "after": cursor})
        ents = page_entries(page)
        assert len(ents) <= max_keys
        if page["truncated"]:
            assert len(ents) == max_keys
        if ents:
            assert page["last"] == ents[-1][0]
        listed += ents
        if not page["truncated"]:
            break
        cursor = page["last"]
    else:
        pytest.fail("listing did not terminate")
    assert listed == entries, (sorted(keys), prefix, delimiter, max_keys)
    assert len({n for n, _ in listed}) == len(listed)


ALPHABET = ["a", "b", "/", "!", " ", "-", "é", "日", "\U0001f600", "\x7f"]
DELIMITERS = ["/", "//", "ab", "a", "!", " ", "é", "/a", "\U0001f600"]


def rand_str(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(lo, hi)))


@pytest.fixture(scope="module")
def list_state(tmp_path_factory: pytest.TempPathFactory):
    s = MetaState(str(tmp_path_factory.mktemp("list") / "meta.db"))
    yield s
    s.close()


class _Counter:
    index = 0
    bucket = 0


def _fill(state: MetaState, keys: set[str]) -> str:
    _Counter.bucket += 1
    name = f"bkt{_Counter.bucket}"
    _Counter.index += 1
    assert state.apply(_Counter.index, create(name))["ok"]
    for k in keys:
        _Counter.index += 1
        assert state.apply(_Counter.index, put(k, obj(size=len(k)), bucket=name))["ok"]
    return name


def test_listing_matches_reference_on_random_key_sets(list_state: MetaState) -> None:
    rng = random.Random(20240611)
    for _ in range(70):
        keys = {rand_str(rng, 1, 5) for _ in range(rng.randint(0, 30))}
        bucket = _fill(list_state, keys)
        for _ in range(6):
            roll = rng.random()
            if roll < 0.3 and keys:
                prefix = rng.choice(sorted(keys))[: rng.randint(0, 3)]
            else:
                prefix = rand_str(rng, 0, 2)
            delimiter = "" if rng.random() < 0.2 else rng.choice(DELIMITERS)
            max_keys = rng.choice([1, 1, 2, 3, 5, 1000])
            entries = reference_entries(keys, prefix, delimiter)
            roll = rng.random()
            if roll < 0.3 and entries:
                after = rng.choice(entries)[0]  # a key or a common prefix, as a cursor would be
            elif roll < 0.5 and keys:
                after = rng.choice(sorted(keys))  # a key inside a rolled-up prefix: StartAfter
            elif roll < 0.8:
                after = rand_str(rng, 0, 4)
            else:
                after = ""
            check_listing(list_state, bucket, keys, prefix, delimiter, max_keys, after)


_token = st.sampled_from(ALPHABET + ["ab", "//"])
_text = st.lists(_token, min_size=0, max_size=4).map("".join)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.sets(st.lists(_token, min_size=1, max_size=5).map("".join), max_size=20),
    prefix=_text,
    delimiter=st.sampled_from(["", *DELIMITERS]),
    max_keys=st.integers(min_value=1, max_value=6),
    after=_text,
)
def test_listing_matches_reference_hypothesis(list_state: MetaState, keys: set[str], prefix: str, delimiter: str,
                                              max_keys: int, after: str) -> None:
    bucket = _fill(list_state, keys)
    check_listing(list_state, bucket, keys, prefix, delimiter, max_keys, after)


def test_listing_max_keys_1_pages_across_common_prefixes(rep: Replica) -> None:
    rep.apply(create())
    keys = ["a b", "a!", "a/1", "a/2", "a/x/y", "a0", "b", "c/x/y", "c/z", "d"]
    for k in keys:
        rep.apply(put(k, obj()))
    pages = []
    after = ""
    while True:
        page = rep.q(q="list", bucket="b", delimiter="/", after=after, max_keys=1)
        pages.append(([c["key"] for c in page["contents"]], page["prefixes"], page["truncated"], page["last"]))
        if not page["truncated"]:
            break
        after = page["last"]
    assert pages == [
        (["a b"], [], True, "a b"),
        (["a!"], [], True, "a!"),
        ([], ["a/"], True, "a/"),
        (["a0"], [], True, "a0"),
        (["b"], [], True, "b"),
        ([], ["c/"], True, "c/"),
        (["d"], [], False, "d"),
    ]
    # the same with a prefix: only the part after the prefix is searched for the delimiter
    page = rep.q(q="list", bucket="b", prefix="a/", delimiter="/", max_keys=1000)
    assert ([c["key"] for c in page["contents"]], page["prefixes"]) == (["a/1", "a/2"], ["a/x/"])


def test_listing_multichar_delimiter_and_prefix_boundary(rep: Replica) -> None:
    rep.apply(create())
    for k in ["x//y", "x/y", "x//z//w", "x///", "a//b", "a/b"]:
        rep.apply(put(k, obj()))
    page = rep.q(q="list", bucket="b", prefix="x", delimiter="//")
    assert [c["key"] for c in page["contents"]] == ["x/y"]
    assert page["prefixes"] == ["x//"]
    # the delimiter must start after the prefix: "a/" + "/b" has no "//" in "/b"
    page = rep.q(q="list", bucket="b", prefix="a/", delimiter="//")
    assert [c["key"] for c in page["contents"]] == ["a//b", "a/b"]
    assert page["prefixes"] == []


def test_listing_entries_carry_size_etag_created(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj(size=5, etag="e5", created=3.25)))
    assert rep.q(q="list", bucket="b")["contents"] == [{"key": "k", "size": 5, "etag": "e5", "created": 3.25}]
    assert rep.q(q="list", bucket="b", after="k") == {
        "ok": True, "contents": [], "prefixes": [], "truncated": False, "last": "",
    }


def test_listing_prefix_ending_in_u_d7ff(rep: Replica) -> None:
    rep.apply(create())
    keys = ["x\ud7ffa", "x\ud7ff", "y"]
    for k in keys:
        rep.apply(put(k, obj()))
    page = rep.q(q="list", bucket="b", prefix="x\ud7ff")
    assert [c["key"] for c in page["contents"]] == ["x\ud7ff", "x\ud7ffa"]


def test_listing_prefix_ending_in_max_code_point(rep: Replica) -> None:
    rep.apply(create())
    for k in ["x\U0010ffffa", "y"]:
        rep.apply(put(k, obj()))
    page = rep.q(q="list", bucket="b", prefix="x\U0010ffff")
    assert [c["key"] for c in page["contents"]] == ["x\U0010ffffa"]


def test_listing_common_prefix_ending_in_u_d7ff(rep: Replica) -> None:
    rep.apply(create())
    for k in ["q/\ud7ffz", "q/\ud7ffy", "r"]:
        rep.apply(put(k, obj()))
    page = rep.q(q="list", bucket="b", delimiter="\ud7ff")
    assert page["prefixes"] == ["q/\ud7ff"]
    assert [c["key"] for c in page["contents"]] == ["r"]


def test_a_page_as_rows_holds_the_same_objects_as_maps(rep: Replica) -> None:
    rep.apply(create())
    for n, key in enumerate(("a&b", "a<c>", "a/d", "e")):
        rep.apply(put(key, obj(size=n, etag=f"e{n}", created=3.25 + n)))
    for query in ({}, {"delimiter": "/"}, {"max_keys": 2}):
        maps = rep.q(q="list", bucket="b", **query)
        rows = rep.q(q="list", bucket="b", rows=True, **query)
        assert [list(r) for r in rows["contents"]] == [[c["key"], c["size"], c["etag"], c["created"]]
                                                       for c in maps["contents"]]
        assert {**rows, "contents": None} == {**maps, "contents": None}
