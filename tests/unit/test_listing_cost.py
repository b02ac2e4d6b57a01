"""A listing page costs the same wherever it starts: SQLite's virtual-machine steps for the
last page of a long prefix stay within a small factor of the first page's (they grew
with the page's position when the query had two lower bounds). Counted, not timed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftmeta.sm.objects import q_list
from tests.unit.metastate import Replica, create, obj, replica

KEYS = 20_000


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


def _steps(rep: Replica, **q: object) -> tuple[int, dict]:
    db = rep.state.db
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    db.set_progress_handler(tick, 100)  # called every 100 VM instructions
    try:
        page = q_list(db, {"bucket": "b", **q})
    finally:
        db.set_progress_handler(None, 0)
    return count[0], page


def test_a_late_page_costs_what_the_first_does(rep: Replica) -> None:
    rep.apply(create())
    cmds = [{"op": "put_object", "bucket": "b", "key": f"p/{n:06d}", "obj": obj(size=0), "ts": 2.0}
            for n in range(KEYS)]
    for start in range(0, KEYS, 256):
        rep.apply({"op": "batch", "cmds": cmds[start:start + 256]})
    rep.apply({"op": "put_object", "bucket": "b", "key": "q/after", "obj": obj(size=0), "ts": 2.0})
    first, page = _steps(rep, prefix="p/", max_keys=1000)
    assert [c["key"] for c in page["contents"]][:2] == ["p/000000", "p/000001"]
    late, page = _steps(rep, prefix="p/", after=f"p/{KEYS - 1001:06d}", max_keys=1000)
    assert [c["key"] for c in page["contents"]] == [f"p/{n:06d}" for n in range(KEYS - 1000, KEYS)]
    assert late < 2 * first + 10, (first, late)  # before: ~20x at 20,000 keys
