"""S3 Object Lock: Put/GetObjectLockConfiguration, Put/GetObjectRetention, Put/GetObjectLegalHold
and the ``x-amz-object-lock-*`` headers of object writes and reads.

Parsing is pure (``parse_lock_config``, ``parse_retention``, ``parse_legal_hold``,
``lock_headers``); the Raft commands (``set_object_lock``, ``set_retention``,
``set_legal_hold``) enforce the lock rules atomically. Stored: the bucket config
``object_lock`` ``{"enabled", "mode", "days", "years"}``; a version's meta
``"retention": [mode, until_epoch]`` and ``"hold": bool`` (absent: never set)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from quart import Response

from core import wire
from frontend import iam, s3xml
from frontend.checksums import ALGORITHMS
from frontend.context import Context, empty_response, meta_call, object_query, read_body, version_param, xml_response
from frontend.errors import S3Error, from_reply, from_wire

MODES = ("GOVERNANCE", "COMPLIANCE")
MAX_DAYS, MAX_YEARS = 36500, 100  # AWS: a default retention of at most 100 years
MAX_LOCK_BODY = 64 * 1024
FULL = "full"  # frontend.routes.FULL: importing routes (which imports this module) is a cycle
MODE_HEADER = "x-amz-object-lock-mode"
DATE_HEADER = "x-amz-object-lock-retain-until-date"
HOLD_HEADER = "x-amz-object-lock-legal-hold"
BYPASS_HEADER = "x-amz-bypass-governance-retention"
MISSING_CONFIG = "Bucket is missing Object Lock Configuration"
PAST_DATE = "The retain until date must be in the future!"
BOTH_HEADERS = "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied."
INTEGRITY = "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters"
_INT = re.compile(r"-?[0-9]{1,18}")
_DATE = re.compile(r"[0-9][0-9T:.,+\-Z ]*")


def parse_date(text: str | None) -> float:
    """An ISO 8601 date-time (``2030-02-01T00:00:00.000Z``, an offset, or none: UTC) as
    seconds since the epoch; ValueError if it is not one."""
    if text is None or len(text) > 64 or not _DATE.fullmatch(text):
        raise ValueError(f"not an ISO 8601 date: {text!r}")
    when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def iso(ts: float) -> str:
    """``ts`` as AWS writes dates: ISO 8601 in UTC with milliseconds and Z."""
    ms = round(ts * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _fields(element: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The children of ``element`` by local name: each at most once, none unknown."""
    out: dict[str, Any] = {}
    for child in element:
        name = s3xml.local(child.tag)
        if name not in allowed or name in out:
            raise S3Error("MalformedXML")
        out[name] = child
    return out


def _root(body: bytes, name: str) -> Any:
    if (root := s3xml.parse(body)) is None or s3xml.local(root.tag) != name:
        raise S3Error("MalformedXML")
    return root


def _text(element: Any) -> str:
    return (element.text or "").strip()


def _period(element: Any, name: str) -> int:
    text = _text(element)
    if not _INT.fullmatch(text) or int(text) > 2**31 - 1:
        raise S3Error("MalformedXML")
    value = int(text)
    if value <= 0:
        raise S3Error("InvalidRetentionPeriod", "Default retention period must be a positive integer value.",
                      ArgumentName=name, ArgumentValue=text)
    if value > (MAX_DAYS if name == "Days" else MAX_YEARS):
        raise S3Error("InvalidRetentionPeriod", "Default retention period is too large.", ArgumentName=name,
                      ArgumentValue=text)
    return value


def parse_lock_config(body: bytes) -> dict[str, Any]:
    """An ``ObjectLockConfiguration`` body as the stored config."""
    fields = _fields(_root(body, "ObjectLockConfiguration"), ("ObjectLockEnabled", "Rule"))
    if "ObjectLockEnabled" not in fields or _text(fields["ObjectLockEnabled"]) != "Enabled":
        raise S3Error("MalformedXML")
    config: dict[str, Any] = {"enabled": True, "mode": None, "days": None, "years": None}
    if "Rule" not in fields:
        return config
    rule = _fields(fields["Rule"], ("DefaultRetention",))
    if "DefaultRetention" not in rule:
        raise S3Error("MalformedXML")
    retention = _fields(rule["DefaultRetention"], ("Mode", "Days", "Years"))
    if "Mode" not in retention or _text(retention["Mode"]) not in MODES:
        raise S3Error("MalformedXML")
    if ("Days" in retention) == ("Years" in retention):
        raise S3Error("MalformedXML")
    config["mode"] = _text(retention["Mode"])
    for name in ("Days", "Years"):
        if name in retention:
            config[name.lower()] = _period(retention[name], name)
    return config


def parse_retention(body: bytes, now: float | None = None) -> list[Any] | None:
    """A ``Retention`` body as ``[mode, until]``; an empty one (None) removes it."""
    fields = _fields(_root(body, "Retention"), ("Mode", "RetainUntilDate"))
    if not fields:
        return None
    if len(fields) != 2 or _text(fields["Mode"]) not in MODES:
        raise S3Error("MalformedXML")
    try:
        until = parse_date(_text(fields["RetainUntilDate"]))
    except (ValueError, OverflowError):
        raise S3Error("MalformedXML") from None
    if until <= (time.time() if now is None else now):
        raise S3Error("InvalidArgument", PAST_DATE)
    return [_text(fields["Mode"]), until]


def parse_legal_hold(body: bytes) -> bool:
    """A ``LegalHold`` body: whether the hold is ON."""
    fields = _fields(_root(body, "LegalHold"), ("Status",))
    status = _text(fields["Status"]) if "Status" in fields else None
    if status not in ("ON", "OFF"):
        raise S3Error("MalformedXML")
    return status == "ON"


def lock_headers(headers: Mapping[str, str], now: float | None = None) -> dict[str, Any]:
    """The lock a write asks for with ``x-amz-object-lock-*`` headers: ``{}``, or any of
    ``{"retention": [mode, until], "hold": bool}``."""
    mode, date, hold = (headers.get(h) or None for h in (MODE_HEADER, DATE_HEADER, HOLD_HEADER))
    out: dict[str, Any] = {} if hold is None else {"hold": _hold_header(hold)}
    if (mode is None) != (date is None):
        raise S3Error("InvalidArgument", BOTH_HEADERS, ArgumentName=MODE_HEADER if mode is None else DATE_HEADER)
    if mode is not None and date is not None:
        if mode not in MODES:
            raise S3Error("InvalidArgument", "Unknown wormMode directive.", ArgumentName=MODE_HEADER,
                          ArgumentValue=mode)
        try:
            until = parse_date(date)
        except (ValueError, OverflowError):
            raise S3Error("InvalidArgument", "The retain until date must be provided in ISO 8601 format",
                          ArgumentName=DATE_HEADER, ArgumentValue=date) from None
        if until <= (time.time() if now is None else now):
            raise S3Error("InvalidArgument", PAST_DATE, ArgumentName=DATE_HEADER, ArgumentValue=date)
        out["retention"] = [mode, until]
    return out


def _hold_header(hold: str) -> bool:
    if hold not in ("ON", "OFF"):
        raise S3Error("InvalidArgument", "Legal Hold must be either of 'ON' or 'OFF'", ArgumentName=HOLD_HEADER,
                      ArgumentValue=hold)
    return hold == "ON"


def has_integrity_header(headers: Mapping[str, str]) -> bool:
    """Whether the body carries an integrity check: Content-MD5 or a checksum (header,
    trailer, or only ``x-amz-sdk-checksum-algorithm``)."""
    trailer = (headers.get("x-amz-trailer") or "").lower().replace(" ", "").split(",")
    return bool(headers.get("content-md5") or headers.get("x-amz-sdk-checksum-algorithm")
                or any(headers.get(f"x-amz-checksum-{a}") or f"x-amz-checksum-{a}" in trailer for a in ALGORITHMS))


def require_integrity_header(headers: Mapping[str, str]) -> None:
    """AWS refuses a locked write (lock headers, or a bucket's default retention: that
    one the state machine checks) whose body carries no integrity check."""
    if not has_integrity_header(headers):
        raise S3Error("InvalidRequest", INTEGRITY)


def response_headers(meta: Mapping[str, Any]) -> dict[str, str]:
    """The ``x-amz-object-lock-*`` headers GetObject and HeadObject answer for a version."""
    out: dict[str, str] = {}
    if meta.get("retention"):
        mode, until = meta["retention"]
        out[MODE_HEADER], out[DATE_HEADER] = mode, iso(until)
    if "hold" in meta:
        out[HOLD_HEADER] = "ON" if meta["hold"] else "OFF"
    return out


async def bypass_allowed(ctx: Context, request: Any, bucket: str) -> bool:
    """Whether the principal may bypass GOVERNANCE retention: an admin, or one with
    full access to the bucket (Cairn's s3:BypassGovernanceRetention)."""
    try:
        if not request.principal.admin:
            await iam.authorize(ctx, request.principal, bucket, FULL)
    except S3Error as exc:
        if exc.code != "AccessDenied":
            raise
        return False
    return True


async def bypass_requested(ctx: Context, request: Any, bucket: str) -> bool:
    """x-amz-bypass-governance-retention: true, from a principal allowed to bypass."""
    asked = (request.headers.get(BYPASS_HEADER) or "").strip().lower() == "true"
    return asked and await bypass_allowed(ctx, request, bucket)


def _config_query(bucket: str) -> dict[str, Any]:
    return {"q": "bucket_config", "bucket": bucket, "name": "object_lock"}


async def lock_config(ctx: Context, bucket: str) -> dict[str, Any] | None:
    """The bucket's stored object lock configuration, or None."""
    return (await meta_call(ctx.meta.read(_config_query(bucket))))["value"]


async def require_lock(ctx: Context, bucket: str) -> dict[str, Any]:
    """The bucket's lock configuration; InvalidRequest (as AWS) if it has none."""
    config = await lock_config(ctx, bucket)
    if not config:
        raise S3Error("InvalidRequest", MISSING_CONFIG)
    return config


async def _locked_object(ctx: Context, request: Any, bucket: str, key: str, vid: str | None) -> dict[str, Any]:
    """The version's meta, read with the bucket's lock config behind one Raft barrier:
    a bucket without one is InvalidRequest before the object is looked at."""
    try:
        config, obj = await ctx.meta.read_many(
            [_config_query(bucket), object_query(request, bucket, key, vid)])
    except wire.WireError as exc:
        raise from_wire(exc) from None
    if not config.get("ok"):
        raise from_reply(config)
    if not config["value"]:
        raise S3Error("InvalidRequest", MISSING_CONFIG)
    if not obj.get("ok"):
        raise from_reply(obj)
    return obj["obj"].get("meta", {})


async def put_lock_config(ctx: Context, request: Any, bucket: str) -> Response:
    config = parse_lock_config(await read_body(request, MAX_LOCK_BODY))
    await meta_call(ctx.meta.write({"op": "set_object_lock", "bucket": bucket, "config": config,
                                    "token": request.headers.get("x-amz-bucket-object-lock-token")}))
    return empty_response()


async def get_lock_config(ctx: Context, bucket: str) -> Response:
    config = await lock_config(ctx, bucket)
    if not config:
        raise S3Error("ObjectLockConfigurationNotFoundError", BucketName=bucket)
    rule = ""
    if config.get("mode"):
        period = f"<Days>{int(config['days'])}</Days>" if config.get("days") else f"<Years>{int(config['years'])}</Years>"
        rule = f"<Rule><DefaultRetention><Mode>{config['mode']}</Mode>{period}</DefaultRetention></Rule>"
    return xml_response(f'{s3xml.HEAD}<ObjectLockConfiguration xmlns="{s3xml.NS}"><ObjectLockEnabled>Enabled'
                        f"</ObjectLockEnabled>{rule}</ObjectLockConfiguration>".encode())


async def put_retention(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    vid = version_param(params)
    retention = parse_retention(await read_body(request, MAX_LOCK_BODY))
    await require_lock(ctx, bucket)
    bypass = await bypass_requested(ctx, request, bucket)
    await meta_call(ctx.meta.write({"op": "set_retention", "bucket": bucket, "key": key, "vid": vid,
                                    "retention": retention,
                                    "bypass": bypass, "ts": time.time()}))
    return empty_response()


async def get_retention(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    meta = await _locked_object(ctx, request, bucket, key, version_param(params))
    if not meta.get("retention"):
        raise S3Error("NoSuchObjectLockConfiguration")
    mode, until = meta["retention"]
    return xml_response(f'{s3xml.HEAD}<Retention xmlns="{s3xml.NS}"><Mode>{mode}</Mode>'
                        f"<RetainUntilDate>{iso(until)}</RetainUntilDate></Retention>".encode())


async def put_legal_hold(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    vid = version_param(params)
    hold = parse_legal_hold(await read_body(request, MAX_LOCK_BODY))
    await require_lock(ctx, bucket)
    await meta_call(ctx.meta.write({"op": "set_legal_hold", "bucket": bucket, "key": key, "vid": vid, "hold": hold,
                                    "ts": time.time()}))
    return empty_response()


async def get_legal_hold(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    meta = await _locked_object(ctx, request, bucket, key, version_param(params))
    if "hold" not in meta:
        raise S3Error("NoSuchObjectLockConfiguration")
    status = "ON" if meta["hold"] else "OFF"
    return xml_response(f'{s3xml.HEAD}<LegalHold xmlns="{s3xml.NS}"><Status>{status}</Status></LegalHold>'.encode())
