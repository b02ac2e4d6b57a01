"""Which lifecycle actions are due: pure functions of a bucket's stored rules (see
``frontend.s3.lifecycle``) and the versions of one key or the bucket's uploads, so the
leader's chore can propose exactly what they return. Standard library only.

Semantics follow the S3 user guide ("Expiring objects", "Lifecycle configuration
elements"):
- every time is rounded up to the next midnight UTC (``due``); a ``Date`` applies to every
  matching object once it has passed, whenever the object was written;
- Expiration acts on the current version only, never on a delete marker that still hides
  versions; a delete marker left as a key's only version (an "expired object delete
  marker") is removed by ``ExpiredObjectDeleteMarker`` at once and by ``Days``/``Date``
  once due, counted from the marker's creation;
- NoncurrentVersionExpiration counts ``NoncurrentDays`` from the moment a version became
  noncurrent and keeps the ``NewerNoncurrentVersions`` newest noncurrent versions however
  old they are;
- delete markers have neither tags nor a size: a rule filtering on either never matches
  one.
"""

from __future__ import annotations

import math
from typing import Any


def due(base: float, days: int, day: float) -> float:
    """When an action ``days`` after ``base`` is due: rounded up to the next midnight."""
    return math.ceil((base + days * day) / day) * day


def _enabled(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for rule in rules if rule.get("status") == "Enabled"]


def _matches(flt: dict[str, Any], key: str, version: dict[str, Any]) -> bool:
    if not key.startswith(flt.get("prefix") or ""):
        return False
    tags, gt, lt = flt.get("tags") or {}, flt.get("gt"), flt.get("lt")
    if version.get("marker"):
        return not tags and gt is None and lt is None
    own = version.get("tags") or {}
    if any(own.get(name) != value for name, value in tags.items()):
        return False
    size = version.get("size", 0)
    return (gt is None or size > gt) and (lt is None or size < lt)


def _expired(expiration: dict[str, Any] | None, created: float, now: float, day: float) -> bool:
    """Whether a Days or Date expiration has come for a version written at ``created``."""
    if not expiration:
        return False
    if expiration.get("days") is not None:
        return due(created, expiration["days"], day) <= now
    if expiration.get("date") is not None:
        return expiration["date"] <= now
    return False


def expiration(rules: list[dict[str, Any]], key: str, version: dict[str, Any],
               day: float = 86400.0) -> tuple[float, str] | None:
    """The ``x-amz-expiration`` of a current object (``version``: its created, size and
    tags as a dict): (when, rule id) of the earliest Days or Date Expiration of an
    enabled rule whose filter matches it, or None. AWS's header reports this for PUT,
    GET and HEAD; ``day`` is S3's day unless a test shortens it."""
    best: tuple[float, str] | None = None
    for rule in _enabled(rules):
        action = rule.get("expiration") or {}
        if action.get("days") is not None:
            when = due(version["created"], action["days"], day)
        elif action.get("date") is not None:
            when = float(action["date"])
        else:
            continue
        if _matches(rule.get("filter") or {}, key, version) and (best is None or when < best[0]):
            best = (when, rule.get("id") or "")
    return best


def _noncurrent_since(versions: list[dict[str, Any]], index: int) -> float:
    superseded = versions[index].get("superseded")
    return superseded if superseded is not None else versions[index - 1]["created"]


def key_actions(rules: list[dict[str, Any]], versioning: str, versions: list[dict[str, Any]], now: float,
                day: float, key: str | None = None) -> list[tuple[str, int]]:
    """The due actions on one key, whose ``versions`` are listed newest first.

    ``("expire", seq)``: the current version's Expiration has come (the state machine
    deletes it, or hides it behind a delete marker in a versioned bucket);
    ``("noncurrent", seq)``: a noncurrent version (or delete marker) to delete for good;
    ``("marker", seq)``: the latest delete marker, left as the key's only version, to
    remove. No seq appears twice.

    ``key`` is the key the versions belong to, which prefix filters need: pass it, or give
    the newest version a ``"key"``; with neither, ValueError (rather than no prefix rule
    ever matching). ``versioning`` ("", "Enabled" or "Suspended") changes what the state
    machine does with an action, not which actions are due."""
    if not versions:
        return []
    if key is None:
        if "key" not in versions[0]:
            raise ValueError("key_actions needs the key of the versions")
        key = versions[0]["key"]
    active = _enabled(rules)
    current = versions[0]
    matching = [rule for rule in active if _matches(rule.get("filter") or {}, key, current)]
    actions: list[tuple[str, int]] = []
    if not current.get("marker"):
        if any(_expired(rule.get("expiration"), current["created"], now, day) for rule in matching):
            actions.append(("expire", current["seq"]))
    gone = _noncurrent_actions(active, key, versions, now, day)
    actions += [("noncurrent", seq) for seq in gone]
    if current.get("marker") and len(versions) - 1 == len(gone):
        for rule in matching:
            expiration = rule.get("expiration") or {}
            if expiration.get("marker") or _expired(expiration, current["created"], now, day):
                actions.append(("marker", current["seq"]))
                break
    return actions


def _noncurrent_actions(rules: list[dict[str, Any]], key: str, versions: list[dict[str, Any]], now: float,
                        day: float) -> list[int]:
    """The seqs of the noncurrent versions some rule's NoncurrentVersionExpiration removes.

    Only data versions count toward NewerNoncurrentVersions (a delete marker holds no data
    to keep), so a rule never removes more data than it promises to keep."""
    gone: list[int] = []
    newer = 0  # noncurrent data versions newer than this one (a running count: O(versions))
    for index in range(1, len(versions)):
        version = versions[index]
        if index > 1 and not versions[index - 1].get("marker"):
            newer += 1
        since = _noncurrent_since(versions, index)
        for rule in rules:
            noncurrent = rule.get("noncurrent")
            if not noncurrent or not _matches(rule.get("filter") or {}, key, version):
                continue
            keep = noncurrent.get("newer")
            if (keep is None or newer >= keep) and due(since, noncurrent["days"], day) <= now:
                gone.append(version["seq"])
                break
    return gone


def upload_actions(rules: list[dict[str, Any]], uploads: list[dict[str, Any]], now: float, day: float) -> list[str]:
    """The ids of the multipart ``uploads`` whose AbortIncompleteMultipartUpload has come.
    Only prefix filters apply: a rule with a tag or size filter cannot carry the action."""
    active = [rule for rule in _enabled(rules) if rule.get("abort_days")]
    out: list[str] = []
    for upload in uploads:
        for rule in active:
            flt = rule.get("filter") or {}
            if flt.get("tags") or flt.get("gt") is not None or flt.get("lt") is not None:
                continue
            if upload["key"].startswith(flt.get("prefix") or "") and due(upload["created"], rule["abort_days"],
                                                                          day) <= now:
                out.append(upload["upload_id"])
                break
    return out
