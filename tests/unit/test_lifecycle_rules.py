"""Tests of the lifecycle rule evaluator (raftmeta.chores.lifecycle_rules): which versions
of a key and which multipart uploads are due, with the midnight rounding, filters,
disabled rules, NewerNoncurrentVersions and delete markers. Rules are built as
``frontend.s3.lifecycle.parse_lifecycle`` stores them; one test checks the two agree."""

from __future__ import annotations

from typing import Any

import pytest

from frontend.s3.lifecycle import parse_lifecycle
from raftmeta.chores.lifecycle_rules import due, key_actions, upload_actions

DAY = 86400.0
T0 = 1_800_000_000.0 - 1_800_000_000.0 % DAY  # a midnight UTC (2027-01-15)


def make_rule(status: str = "Enabled", prefix: str = "", tags: dict[str, str] | None = None, gt: int | None = None,
              lt: int | None = None, expiration: dict[str, Any] | None = None,
              noncurrent: dict[str, Any] | None = None, abort_days: int | None = None) -> dict[str, Any]:
    return {"id": "r", "status": status, "filter": {"prefix": prefix, "tags": tags or {}, "gt": gt, "lt": lt},
            "expiration": expiration, "noncurrent": noncurrent, "abort_days": abort_days, "transitions": [],
            "noncurrent_transitions": []}


def version(seq: int, created: float, superseded: float | None = None, marker: bool = False, size: int = 10,
            tags: dict[str, str] | None = None, null: bool = False) -> dict[str, Any]:
    return {"seq": seq, "null": null, "marker": marker, "size": 0 if marker else size, "created": created,
            "superseded": superseded, "tags": {} if marker else (tags or {})}


def history(*created: float, marker_latest: bool = False) -> list[dict[str, Any]]:
    """Versions written at ``created`` (oldest first), returned newest first as key_actions
    takes them; each older one became noncurrent when the next was written."""
    out = [version(n + 1, at, created[n + 1] if n + 1 < len(created) else None,
                   marker=marker_latest and n + 1 == len(created)) for n, at in enumerate(created)]
    return out[::-1]


def actions(rules: list[dict[str, Any]], versions: list[dict[str, Any]], now: float, key: str = "k",
            versioning: str = "Enabled", day: float = DAY) -> list[tuple[str, int]]:
    return key_actions(rules, versioning, versions, now, day, key=key)


# ------------------------------------------------------------------------- due

def test_due_rounds_up_to_the_next_midnight() -> None:
    assert due(T0 + 10.5 * 3600, 3, DAY) == T0 + 4 * DAY  # 10:30 + 3 days -> the 4th midnight
    assert due(T0, 3, DAY) == T0 + 3 * DAY  # already at midnight: no extra day
    assert due(T0 + 1, 1, DAY) == T0 + 2 * DAY
    assert due(T0 - 1, 1, DAY) == T0 + DAY
    assert due(25.0, 2, 10.0) == 50.0  # a shortened day, as in tests
    assert due(30.0, 2, 10.0) == 50.0


# ------------------------------------------------------------ current versions

def test_expiration_days_with_rounding() -> None:
    rules = [make_rule(expiration={"days": 1})]
    written = [version(1, T0 + 3600)]
    assert actions(rules, written, T0 + DAY + 3600) == []  # 24 hours later, still before the midnight
    assert actions(rules, written, T0 + 2 * DAY - 1) == []
    assert actions(rules, written, T0 + 2 * DAY) == [("expire", 1)]


def test_expiration_date_applies_to_objects_written_after_it() -> None:
    rules = [make_rule(expiration={"date": T0})]
    assert actions(rules, [version(1, T0 + DAY)], T0 + DAY + 5) == [("expire", 1)]
    assert actions(rules, [version(1, T0 - DAY)], T0 - 1) == []


def test_unversioned_and_suspended_buckets() -> None:
    rules = [make_rule(expiration={"days": 1})]
    assert actions(rules, [version(1, T0)], T0 + DAY, versioning="") == [("expire", 1)]
    assert actions(rules, [version(1, T0, null=True)], T0 + DAY, versioning="Suspended") == [("expire", 1)]


def test_disabled_rules_do_nothing() -> None:
    rules = [make_rule(status="Disabled", expiration={"days": 1}, noncurrent={"days": 1, "newer": None})]
    assert actions(rules, history(T0, T0 + 1), T0 + 100 * DAY) == []


def test_no_rules_no_versions() -> None:
    assert actions([], history(T0), T0 + 100 * DAY) == []
    assert actions([make_rule(expiration={"days": 1})], [], T0 + 100 * DAY) == []


def test_a_latest_delete_marker_is_not_expired() -> None:
    rules = [make_rule(expiration={"days": 1})]
    assert actions(rules, history(T0, T0 + DAY, marker_latest=True), T0 + 50 * DAY) == []


def test_prefix_filter() -> None:
    rules = [make_rule(prefix="logs/", expiration={"days": 1})]
    assert actions(rules, [version(1, T0)], T0 + DAY, key="logs/a") == [("expire", 1)]
    assert actions(rules, [version(1, T0)], T0 + DAY, key="log") == []
    assert actions(rules, [version(1, T0)], T0 + DAY, key="x/logs/a") == []


def test_key_from_the_versions_or_refused() -> None:
    rules = [make_rule(prefix="logs/", expiration={"days": 1})]
    keyed = [dict(version(1, T0), key="logs/a")]
    assert key_actions(rules, "", keyed, T0 + DAY, DAY) == [("expire", 1)]
    with pytest.raises(ValueError):
        key_actions(rules, "", [version(1, T0)], T0 + DAY, DAY)


def test_tag_filter() -> None:
    rules = [make_rule(tags={"class": "tmp", "team": "a"}, expiration={"days": 1})]
    now = T0 + DAY
    assert actions(rules, [version(1, T0, tags={"class": "tmp", "team": "a", "x": "y"})], now) == [("expire", 1)]
    assert actions(rules, [version(1, T0, tags={"class": "tmp"})], now) == []
    assert actions(rules, [version(1, T0, tags={"class": "TMP", "team": "a"})], now) == []
    assert actions(rules, [version(1, T0)], now) == []


def test_tag_with_empty_value() -> None:
    rules = [make_rule(tags={"k": ""}, expiration={"days": 1})]
    assert actions(rules, [version(1, T0, tags={"k": ""})], T0 + DAY) == [("expire", 1)]
    assert actions(rules, [version(1, T0)], T0 + DAY) == []


@pytest.mark.parametrize("gt,lt,size,hit", [(10, None, 10, False), (10, None, 11, True), (None, 10, 10, False),
                                            (None, 10, 9, True), (0, None, 0, False), (5, 8, 6, True),
                                            (5, 8, 8, False), (5, 8, 5, False)])
def test_size_filter_is_strict(gt: int | None, lt: int | None, size: int, hit: bool) -> None:
    rules = [make_rule(gt=gt, lt=lt, expiration={"days": 1})]
    assert actions(rules, [version(1, T0, size=size)], T0 + DAY) == ([("expire", 1)] if hit else [])


def test_any_matching_rule_is_enough() -> None:
    rules = [make_rule(prefix="a", expiration={"days": 30}), make_rule(prefix="ab", expiration={"days": 2})]
    assert actions(rules, [version(1, T0)], T0 + 2 * DAY, key="abc") == [("expire", 1)]


# ----------------------------------------------------------- noncurrent versions

def test_noncurrent_days_count_from_when_superseded() -> None:
    rules = [make_rule(noncurrent={"days": 3, "newer": None})]
    versions = history(T0 - 100 * DAY, T0 + 10.5 * 3600)  # the old one became noncurrent at 10:30
    assert actions(rules, versions, T0 + 4 * DAY - 1) == []
    assert actions(rules, versions, T0 + 4 * DAY) == [("noncurrent", 1)]


def test_superseded_missing_falls_back_to_the_successor() -> None:
    rules = [make_rule(noncurrent={"days": 1, "newer": None})]
    versions = [version(2, T0 + 5), version(1, T0 - 50 * DAY, superseded=None)]
    assert actions(rules, versions, T0 + DAY) == []
    assert actions(rules, versions, T0 + 2 * DAY) == [("noncurrent", 1)]


def test_newer_noncurrent_versions_are_kept_however_old() -> None:
    rules = [make_rule(noncurrent={"days": 1, "newer": 2})]
    versions = history(T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4)  # seq 5 current, 4..1 noncurrent
    assert actions(rules, versions, T0 + 100 * DAY) == [("noncurrent", 2), ("noncurrent", 1)]
    assert actions(rules, versions, T0 + 1) == []  # old enough to count, not yet due
    assert actions([make_rule(noncurrent={"days": 1, "newer": 4})], versions, T0 + 100 * DAY) == []


def test_newer_counts_data_versions_not_markers() -> None:
    rules = [make_rule(noncurrent={"days": 1, "newer": 1})]
    versions = [version(4, T0 + 3), version(3, T0 + 2, superseded=T0 + 3, marker=True),
                version(2, T0 + 1, superseded=T0 + 2), version(1, T0, superseded=T0 + 1)]
    # no data version is newer than the marker, one (seq 2) is newer than seq 1: only seq 1 goes
    assert actions(rules, versions, T0 + 100 * DAY) == [("noncurrent", 1)]
    keep_none = [make_rule(noncurrent={"days": 1, "newer": None})]
    assert actions(keep_none, versions, T0 + 100 * DAY) == [("noncurrent", 3), ("noncurrent", 2), ("noncurrent", 1)]


def test_noncurrent_versions_filtered_by_their_own_tags() -> None:
    rules = [make_rule(tags={"t": "1"}, noncurrent={"days": 1, "newer": None})]
    versions = [version(3, T0 + 2), version(2, T0 + 1, T0 + 2, tags={"t": "1"}), version(1, T0, T0 + 1)]
    assert actions(rules, versions, T0 + 10 * DAY) == [("noncurrent", 2)]


def test_expiration_and_noncurrent_together() -> None:
    rules = [make_rule(expiration={"days": 5}, noncurrent={"days": 1, "newer": None})]
    versions = history(T0 - 10 * DAY, T0)
    assert actions(rules, versions, T0 + 5 * DAY) == [("expire", 2), ("noncurrent", 1)]


# -------------------------------------------------------------- delete markers

def test_expired_object_delete_marker_removed_at_once() -> None:
    rules = [make_rule(expiration={"marker": True})]
    lone = [version(7, T0 + 5, marker=True)]
    assert actions(rules, lone, T0 + 6) == [("marker", 7)]
    assert actions([make_rule(expiration={"marker": False})], lone, T0 + 100 * DAY) == []


def test_marker_hiding_versions_is_kept() -> None:
    rules = [make_rule(expiration={"marker": True})]
    assert actions(rules, history(T0, T0 + 1, marker_latest=True), T0 + 100 * DAY) == []


def test_marker_alone_once_noncurrent_versions_go_in_the_same_pass() -> None:
    rules = [make_rule(expiration={"marker": True}, noncurrent={"days": 1, "newer": None})]
    versions = history(T0 - 5 * DAY, T0 - 4 * DAY, T0, marker_latest=True)
    assert actions(rules, versions, T0 + 2 * DAY) == [("noncurrent", 2), ("noncurrent", 1), ("marker", 3)]
    # one noncurrent version not yet due: the marker still hides it
    assert actions(rules, versions, T0 + DAY - 1) == [("noncurrent", 1)]
    kept = [make_rule(expiration={"marker": True}, noncurrent={"days": 1, "newer": 1})]
    assert actions(kept, versions, T0 + 10 * DAY) == [("noncurrent", 1)]


def test_expiration_days_or_date_also_remove_a_lone_marker() -> None:
    lone = [version(3, T0 + 3600, marker=True)]
    assert actions([make_rule(expiration={"days": 2})], lone, T0 + 3 * DAY - 1) == []
    assert actions([make_rule(expiration={"days": 2})], lone, T0 + 3 * DAY) == [("marker", 3)]
    assert actions([make_rule(expiration={"date": T0 + DAY})], lone, T0 + DAY) == [("marker", 3)]
    assert actions([make_rule(expiration={"date": T0 + DAY})], lone, T0 + DAY - 1) == []


def test_tag_and_size_filters_never_match_markers() -> None:
    lone = [version(3, T0, marker=True)]
    for rule in (make_rule(tags={"a": "b"}, expiration={"days": 1}), make_rule(gt=0, expiration={"days": 1}),
                 make_rule(lt=100, expiration={"days": 1})):
        assert actions([rule], lone, T0 + 10 * DAY) == []
    versions = [version(2, T0 + 1), version(1, T0, T0 + 1, marker=True)]
    assert actions([make_rule(lt=100, noncurrent={"days": 1, "newer": None})], versions, T0 + 10 * DAY) == []


def test_marker_prefix_and_disabled() -> None:
    lone = [version(3, T0, marker=True)]
    assert actions([make_rule(prefix="a/", expiration={"marker": True})], lone, T0 + 1, key="b/x") == []
    assert actions([make_rule(status="Disabled", expiration={"marker": True})], lone, T0 + 1) == []


def test_no_seq_twice() -> None:
    rules = [make_rule(expiration={"marker": True}, noncurrent={"days": 1, "newer": None}),
             make_rule(expiration={"days": 1}, noncurrent={"days": 1, "newer": None})]
    versions = history(T0, T0 + 1, T0 + 2, marker_latest=True)
    result = actions(rules, versions, T0 + 10 * DAY)
    assert sorted(result) == [("marker", 3), ("noncurrent", 1), ("noncurrent", 2)]
    assert len({seq for _, seq in result}) == len(result)


# -------------------------------------------------------------------- uploads

def test_upload_actions() -> None:
    uploads = [{"upload_id": "u1", "key": "tmp/a", "created": T0 + 3600},
               {"upload_id": "u2", "key": "keep/b", "created": T0},
               {"upload_id": "u3", "key": "tmp/c", "created": T0 + DAY}]
    rules = [make_rule(prefix="tmp/", abort_days=1), make_rule(status="Disabled", abort_days=1),
             make_rule(expiration={"days": 1})]
    assert upload_actions(rules, uploads, T0 + 2 * DAY - 1, DAY) == []
    assert upload_actions(rules, uploads, T0 + 2 * DAY, DAY) == ["u1", "u3"]
    assert upload_actions([make_rule(abort_days=1)], uploads, T0 + 2 * DAY, DAY) == ["u1", "u2", "u3"]
    assert upload_actions([make_rule(tags={"a": "b"}, abort_days=1)], uploads, T0 + 9 * DAY, DAY) == []
    assert upload_actions([], uploads, T0 + 9 * DAY, DAY) == []


# -------------------------------------------------------- with parsed rules

def test_parsed_rules_evaluate() -> None:
    body = (b'<LifecycleConfiguration><Rule><ID>a</ID><Filter><And><Prefix>logs/</Prefix><Tag><Key>t</Key>'
            b"<Value>1</Value></Tag><ObjectSizeLessThan>100</ObjectSizeLessThan></And></Filter>"
            b"<Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule>"
            b"<Rule><ID>b</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status>"
            b"<AbortIncompleteMultipartUpload><DaysAfterInitiation>2</DaysAfterInitiation>"
            b"</AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>")
    rules = parse_lifecycle(body)
    assert actions(rules, [version(1, T0, size=99, tags={"t": "1"})], T0 + DAY, key="logs/x") == [("expire", 1)]
    assert actions(rules, [version(1, T0, size=100, tags={"t": "1"})], T0 + DAY, key="logs/x") == []
    uploads = [{"upload_id": "u", "key": "logs/y", "created": T0}]
    assert upload_actions(rules, uploads, T0 + 2 * DAY, DAY) == ["u"]
