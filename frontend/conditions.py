"""Conditional requests (RFC 9110 section 13, as S3 applies them).

Reads: If-Match / If-Unmodified-Since fail with 412 PreconditionFailed; If-None-Match /
If-Modified-Since answer 304 Not Modified. Writes (PutObject, CompleteMultipartUpload):
``If-None-Match: *`` (create only if absent) and ``If-Match: <etag>`` (replace only that
version) are turned into a condition that the Raft state machine decides atomically at
commit, so two racing writers can never both win.
"""

from __future__ import annotations

import email.utils
from typing import Any

from frontend.errors import S3Error


def _etags(value: str) -> list[str]:
    return [v.strip().removeprefix("W/").strip('"') for v in value.split(",") if v.strip()]


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # an invalid date is ignored, as RFC 9110 says
    return parsed.timestamp()


def check_read(headers: Any, etag: str, modified: float) -> bool:
    """Raise 412 for a failed If-Match / If-Unmodified-Since; return True when the
    client's copy is current (answer 304)."""
    modified = float(int(modified))  # HTTP dates have one-second resolution
    if_match = headers.get("if-match")
    if if_match is not None:
        if "*" not in _etags(if_match) and etag not in _etags(if_match):
            raise S3Error("PreconditionFailed", Condition="If-Match")
    else:
        since = _date(headers.get("if-unmodified-since"))
        if since is not None and modified > since:
            raise S3Error("PreconditionFailed", Condition="If-Unmodified-Since")
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        return "*" in _etags(if_none_match) or etag in _etags(if_none_match)
    since = _date(headers.get("if-modified-since"))
    return since is not None and modified <= since


def write_condition(headers: Any) -> dict[str, Any]:
    """The condition a write carries into the state machine ({} when unconditional)."""
    cond: dict[str, Any] = {}
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise S3Error("NotImplemented", "If-None-Match on a write only supports '*'.")
        cond["if_none_match"] = True
    if_match = headers.get("if-match")
    if if_match is not None:
        cond["if_match"] = _etags(if_match)
    return cond
