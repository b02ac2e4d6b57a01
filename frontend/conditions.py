"""Conditional requests (RFC 9110 section 13, as S3 applies them).

Reads: If-Match / If-Unmodified-Since fail with 412 PreconditionFailed; If-None-Match /
If-Modified-Since answer 304 Not Modified. Writes (PutObject, CompleteMultipartUpload):
``If-None-Match: *`` (create only if absent) and ``If-Match: <etag>`` (replace only that
version), and deletes (DeleteObject's If-Match, x-amz-if-match-last-modified-time and
x-amz-if-match-size, DeleteObjects' per-object ETag, LastModifiedTime and Size) are
turned into a condition that the Raft state machine decides atomically at commit, so
two racing writers can never both win.
"""

from __future__ import annotations

import datetime
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


def write_condition(headers: Any, since: float | None = None) -> dict[str, Any]:
    """The condition a write carries into the state machine ({} when unconditional).
    ``If-None-Match: *`` is True (as before ETags were taken); ``If-None-Match: <etags>``
    a list: the write fails if the current object has one of them (RFC 9110; AWS
    documents only ``*``). ``since``: when the write began, for AWS's 409 on an object
    deleted meanwhile."""
    cond: dict[str, Any] = {}
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        tags = _etags(if_none_match)
        cond["if_none_match"] = True if tags == ["*"] else tags
    if_match = headers.get("if-match")
    if if_match is not None:
        cond["if_match"] = _etags(if_match)
    if cond and since is not None:
        cond["since"] = since
    return cond


def delete_condition(headers: Any) -> dict[str, Any]:
    """DeleteObject's conditions ({} when none): If-Match (ETags or ``*``),
    x-amz-if-match-last-modified-time (an HTTP or ISO 8601 date), x-amz-if-match-size;
    the state machine judges them against the version the delete removes."""
    return entry_condition(headers.get("if-match"), headers.get("x-amz-if-match-last-modified-time"),
                           headers.get("x-amz-if-match-size"))


def entry_condition(etag: str | None, mtime: str | None, size: str | None) -> dict[str, Any]:
    """One delete's condition from its three values (DeleteObject's headers, or a
    DeleteObjects <Object>'s ETag, LastModifiedTime and Size); a malformed time or size
    is InvalidArgument."""
    cond: dict[str, Any] = {}
    if etag is not None:
        cond["if_match"] = _etags(etag) or [""]
    if mtime is not None:
        stamp = _date(mtime.strip())
        if stamp is None:
            stamp = _iso_date(mtime.strip())
        if stamp is None:
            raise S3Error("InvalidArgument", "Invalid last modified time.")
        cond["mtime"] = stamp
    if size is not None:
        try:
            cond["size"] = int(size.strip())
        except ValueError:
            raise S3Error("InvalidArgument", "Invalid size.") from None
        if cond["size"] < 0:
            raise S3Error("InvalidArgument", "Invalid size.")
    return cond


def _iso_date(value: str) -> float | None:
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()
