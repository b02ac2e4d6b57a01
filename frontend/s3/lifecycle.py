"""Bucket lifecycle: Put/Get/DeleteBucketLifecycleConfiguration.

``parse_lifecycle`` validates a LifecycleConfiguration document as S3 does (its error codes
and messages) into the stored rules that ``raftmeta.chores.lifecycle_rules`` evaluates;
``render_lifecycle`` gives them back in the form they were sent (a rule's legacy
``<Prefix>`` stays legacy, each ``<Filter>`` keeps its element). Transitions are
validated and stored, never acted on: every object stays STANDARD."""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from quart import Response

from frontend import s3xml
from frontend.checksums import requested_checksums
from frontend.context import Context, empty_response, meta_call, read_body, xml_response
from frontend.errors import S3Error

MAX_BODY = 64 * 1024
MAX_RULES = 1000
MAX_ID = 255
MAX_NEWER = 100  # NewerNoncurrentVersions: S3 keeps at most 100 noncurrent versions
STORAGE_CLASSES = ("GLACIER", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "DEEP_ARCHIVE", "GLACIER_IR")
MIN_IA_DAYS = 30  # STANDARD_IA and ONEZONE_IA take objects at least 30 days old
FILTERS = ("Prefix", "Tag", "ObjectSizeGreaterThan", "ObjectSizeLessThan", "And")
_INT = re.compile(r"-?[0-9]{1,10}")
_CR = {"\r": "&#13;"}


async def put_lifecycle(ctx: Context, request: Any, bucket: str) -> Response:
    body = await read_body(request, MAX_BODY)
    check_integrity(request.headers, body)
    rules = parse_lifecycle(body)
    await meta_call(ctx.meta.write({"op": "set_bucket_config", "bucket": bucket, "name": "lifecycle", "value": rules}))
    return empty_response()


async def get_lifecycle(ctx: Context, bucket: str) -> Response:
    reply = await meta_call(ctx.meta.read({"q": "bucket_config", "bucket": bucket, "name": "lifecycle"}))
    if not reply.get("value"):
        raise S3Error("NoSuchLifecycleConfiguration", BucketName=bucket)
    return xml_response(render_lifecycle(reply["value"]))


async def delete_lifecycle(ctx: Context, bucket: str) -> Response:
    await meta_call(ctx.meta.write({"op": "set_bucket_config", "bucket": bucket, "name": "lifecycle", "value": None}))
    return empty_response(204)


def expiration_header(reply: dict[str, Any]) -> dict[str, str]:
    """``x-amz-expiration: expiry-date="<HTTP date>", rule-id="<id>"`` for an object a
    lifecycle Expiration rule matches (the state machine's ``expiration`` in a reply of
    ``object`` or ``put_object``); {} otherwise."""
    found = reply.get("expiration")
    if not found:
        return {}
    when, rule_id = found
    date = datetime.fromtimestamp(when, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    return {"x-amz-expiration": f'expiry-date="{date}", rule-id="{rule_id}"'}


def check_integrity(headers: Any, body: bytes) -> None:
    """S3 requires Content-MD5 or an additional checksum on this request. XML bodies are
    read whole (``read_body``), past the upload layer that checks digests, so the ones
    sent in headers are checked here (a trailer needs aws-chunked, which is not XML)."""
    requested = requested_checksums(headers)
    md5 = headers.get("content-md5")
    if md5 is None and requested is None:
        raise S3Error("InvalidRequest", "Missing required header for this request: Content-MD5")
    if md5 is not None:
        try:
            digest = base64.b64decode(md5, validate=True)
        except ValueError:  # binascii.Error is one
            digest = b""
        if len(digest) != 16:
            raise S3Error("InvalidDigest")
        if hashlib.md5(body).digest() != digest:
            raise S3Error("BadDigest")
    if requested is not None and requested.location == "header":
        computed = requested.new()
        computed.update(body)
        requested.verify(computed)


def _fields(element: ET.Element, names: tuple[str, ...], repeated: tuple[str, ...] = ()) -> dict[str, list[ET.Element]]:
    """An element's children by local name: an unknown one, or a second one of a name that
    is not ``repeated``, is MalformedXML."""
    out: dict[str, list[ET.Element]] = {}
    for child in element:
        name = s3xml.local(child.tag)
        if (name not in names and name not in repeated) or (name in out and name not in repeated):
            raise S3Error("MalformedXML")
        out.setdefault(name, []).append(child)
    return out


def _text(fields: dict[str, list[ET.Element]], name: str, strip: bool = True) -> str | None:
    if name not in fields:
        return None
    text = fields[name][0].text or ""
    return text.strip() if strip else text


def _int(text: str | None, field: str, action: str, minimum: int = 1) -> int:
    if text is None or not _INT.fullmatch(text) or int(text) > 2**31 - 1:
        raise S3Error("MalformedXML")
    value = int(text)
    if value < minimum:
        message = (f"'{field}' for {action} action must be a positive integer" if minimum
                   else f"'{field}' in {action} action must be nonnegative")
        raise S3Error("InvalidArgument", message, ArgumentName=field, ArgumentValue=text)
    return value


def _date(text: str | None) -> float:
    try:
        at = datetime.fromisoformat(text or "")
    except ValueError:
        raise S3Error("MalformedXML") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    when = at.timestamp()
    if when % 86400:
        raise S3Error("InvalidArgument", "'Date' must be at midnight GMT", ArgumentName="Date", ArgumentValue=text)
    return when


def _size(text: str | None, field: str) -> int:
    if text is None or not re.fullmatch(r"-?[0-9]{1,18}", text):
        raise S3Error("MalformedXML")
    if text.startswith("-"):
        raise S3Error("InvalidRequest", f"'{field}' should be a nonnegative number of bytes.")
    return int(text)


def _tag(element: ET.Element, tags: dict[str, str]) -> None:
    fields = _fields(element, ("Key", "Value"))
    key, value = _text(fields, "Key", strip=False), _text(fields, "Value", strip=False)
    if key is None or value is None:
        raise S3Error("MalformedXML")
    if not 1 <= len(key) <= 128:
        raise S3Error("InvalidRequest", "A Tag's Key must be a length between 1 and 128.")
    if len(value) > 256:
        raise S3Error("InvalidRequest", "A Tag's Value must be a length between 0 and 256.")
    if key in tags:
        raise S3Error("InvalidRequest", "Duplicate Tag Keys are not allowed.")
    tags[key] = value


def _filter(fields: dict[str, list[ET.Element]]) -> tuple[dict[str, Any], str]:
    """(the stored filter, the form to render it in): "legacy" (a Prefix in the Rule),
    "" (an empty Filter) or the name of the Filter's one element ("And+Prefix" for an And
    with a Prefix)."""
    flt: dict[str, Any] = {"prefix": "", "tags": {}, "gt": None, "lt": None}
    if ("Prefix" in fields) == ("Filter" in fields):
        raise S3Error("MalformedXML")
    if "Prefix" in fields:
        flt["prefix"] = _text(fields, "Prefix", strip=False)
        return flt, "legacy"
    members = _fields(fields["Filter"][0], FILTERS)
    if len(members) > 1:
        raise S3Error("MalformedXML")
    if not members:
        return flt, ""
    form, (element,) = next(iter(members.items()))
    source = members
    if form == "And":
        source = _fields(element, ("Prefix", "ObjectSizeGreaterThan", "ObjectSizeLessThan"), ("Tag",))
        if len(source) - ("Tag" in source) + len(source.get("Tag", [])) < 2:
            raise S3Error("MalformedXML")  # And joins two or more conditions
        form = "And+Prefix" if "Prefix" in source else "And"
    if "Prefix" in source:
        flt["prefix"] = _text(source, "Prefix", strip=False)
    for tag in source.get("Tag", []):
        _tag(tag, flt["tags"])
    for name, bound in (("ObjectSizeGreaterThan", "gt"), ("ObjectSizeLessThan", "lt")):
        if name in source:
            flt[bound] = _size(_text(source, name), name)
    if flt["gt"] is not None and flt["lt"] is not None and flt["gt"] >= flt["lt"]:
        raise S3Error("InvalidRequest", "'ObjectSizeLessThan' has to be a value greater than 'ObjectSizeGreaterThan'.")
    return flt, form


def _unfiltered(flt: dict[str, Any], action: str) -> None:
    """Actions that apply to no object's tags or size (a delete marker, an upload)."""
    if flt["tags"]:
        raise S3Error("InvalidRequest", f"{action} cannot be specified with Tags.")
    if flt["gt"] is not None or flt["lt"] is not None:
        raise S3Error("InvalidRequest", f"{action} cannot be specified with Object Size.")


def _newer(text: str | None, legacy: bool, action: str) -> int | None:
    if text is None:
        return None
    if legacy:
        raise S3Error("InvalidRequest", "NewerNoncurrentVersions element can only be used in Lifecycle V2.")
    newer = _int(text, "NewerNoncurrentVersions", action)
    if newer > MAX_NEWER:
        raise S3Error("InvalidArgument", f"'NewerNoncurrentVersions' for {action} action must not exceed {MAX_NEWER}",
                      ArgumentName="NewerNoncurrentVersions", ArgumentValue=text)
    return newer


def _storage_class(text: str | None, seen: set[str], action: str) -> str:
    if text in ("STANDARD", "REDUCED_REDUNDANCY"):
        raise S3Error("InvalidArgument", f"Invalid target Storage class for {action} action",
                      ArgumentName="StorageClass", ArgumentValue=text)
    if text not in STORAGE_CLASSES:
        raise S3Error("MalformedXML")
    if text in seen:
        raise S3Error("InvalidRequest", f"'StorageClass' must be different for '{action}' actions in same 'Rule'")
    seen.add(text)
    return text


def _transitions(elements: list[ET.Element], noncurrent: bool, legacy: bool) -> list[dict[str, Any]]:
    action, days_name = ("NoncurrentVersionTransition", "NoncurrentDays") if noncurrent else ("Transition", "Days")
    names = (days_name, "NewerNoncurrentVersions" if noncurrent else "Date", "StorageClass")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for element in elements:
        fields = _fields(element, names)
        item: dict[str, Any] = {"storage_class": _storage_class(_text(fields, "StorageClass"), seen, action)}
        if noncurrent:
            item["newer"] = _newer(_text(fields, "NewerNoncurrentVersions"), legacy, action)
        elif ("Days" in fields) == ("Date" in fields):
            raise S3Error("MalformedXML")
        if "Date" in fields:
            item["date"] = _date(_text(fields, "Date"))
        else:
            item["days"] = days = _int(_text(fields, days_name), days_name, action, minimum=0)
            if item["storage_class"] in ("STANDARD_IA", "ONEZONE_IA") and days < MIN_IA_DAYS:
                raise S3Error("InvalidArgument", f"'{days_name}' in {action} action for StorageClass "
                              f"'{item['storage_class']}' must be greater than or equal to {MIN_IA_DAYS}",
                              ArgumentName=days_name, ArgumentValue=str(days))
        out.append(item)
    return out


def _expiration(element: ET.Element, flt: dict[str, Any]) -> dict[str, Any]:
    fields = _fields(element, ("Days", "Date", "ExpiredObjectDeleteMarker"))
    if len(fields) != 1:
        raise S3Error("MalformedXML")  # one of them, and ExpiredObjectDeleteMarker never with Days or Date
    if "Days" in fields:
        return {"days": _int(_text(fields, "Days"), "Days", "Expiration")}
    if "Date" in fields:
        return {"date": _date(_text(fields, "Date"))}
    marker = _text(fields, "ExpiredObjectDeleteMarker")
    if marker not in ("true", "false"):
        raise S3Error("MalformedXML")
    _unfiltered(flt, "ExpiredObjectDeleteMarker")
    return {"marker": marker == "true"}


def _rule(element: ET.Element) -> dict[str, Any]:
    fields = _fields(element, ("ID", "Prefix", "Filter", "Status", "Expiration", "NoncurrentVersionExpiration",
                               "AbortIncompleteMultipartUpload"), ("Transition", "NoncurrentVersionTransition"))
    status = _text(fields, "Status")
    if status not in ("Enabled", "Disabled"):
        raise S3Error("MalformedXML")
    rule_id = _text(fields, "ID", strip=False) or ""
    if len(rule_id) > MAX_ID:
        raise S3Error("InvalidArgument", f"ID length should not exceed allowed limit of {MAX_ID}", ArgumentName="ID",
                      ArgumentValue=rule_id)
    flt, form = _filter(fields)
    rule: dict[str, Any] = {"id": rule_id, "status": status, "filter": flt, "form": form, "expiration": None,
                            "noncurrent": None, "abort_days": None}
    if "Expiration" in fields:
        rule["expiration"] = _expiration(fields["Expiration"][0], flt)
    if "NoncurrentVersionExpiration" in fields:
        action = "NoncurrentVersionExpiration"
        noncurrent = _fields(fields[action][0], ("NoncurrentDays", "NewerNoncurrentVersions"))
        rule["noncurrent"] = {"days": _int(_text(noncurrent, "NoncurrentDays"), "NoncurrentDays", action),
                              "newer": _newer(_text(noncurrent, "NewerNoncurrentVersions"), form == "legacy", action)}
    if "AbortIncompleteMultipartUpload" in fields:
        action = "AbortIncompleteMultipartUpload"
        abort = _fields(fields[action][0], ("DaysAfterInitiation",))
        rule["abort_days"] = _int(_text(abort, "DaysAfterInitiation"), "DaysAfterInitiation", action)
        _unfiltered(flt, action)
    rule["transitions"] = _transitions(fields.get("Transition", []), False, form == "legacy")
    rule["noncurrent_transitions"] = _transitions(fields.get("NoncurrentVersionTransition", []), True,
                                                  form == "legacy")
    if not any(rule[name] for name in ("expiration", "noncurrent", "abort_days", "transitions",
                                       "noncurrent_transitions")):
        raise S3Error("InvalidRequest", "At least one action needs to be specified in a rule")
    return rule


def parse_lifecycle(body: bytes) -> list[dict[str, Any]]:
    """The stored rules of a LifecycleConfiguration document, or the S3Error S3 answers."""
    root = s3xml.parse(body)
    if root is None or s3xml.local(root.tag) != "LifecycleConfiguration":
        raise S3Error("MalformedXML")
    elements = _fields(root, (), ("Rule",)).get("Rule", [])
    if not 1 <= len(elements) <= MAX_RULES:
        raise S3Error("MalformedXML")
    rules = [_rule(element) for element in elements]
    if len({rule["form"] == "legacy" for rule in rules}) > 1:
        raise S3Error("InvalidRequest", "Filter element can only be used in Lifecycle V2.")
    ids: set[str] = set()
    for rule in filter(lambda rule: rule["id"], rules):
        if rule["id"] in ids:
            raise S3Error("InvalidArgument", "Rule ID must be unique. Found same ID for more than one rule",
                          ArgumentName="ID", ArgumentValue=rule["id"])
        ids.add(rule["id"])
    for rule in rules:
        if not rule["id"]:  # as S3 names a rule sent without one: base64 of a UUID
            rule["id"] = base64.b64encode(str(uuid.uuid4()).encode()).decode()
    return rules


def _el(name: str, value: Any) -> str:
    return f"<{name}>{escape(str(value), _CR)}</{name}>"


def _when(item: dict[str, Any], days_name: str) -> str:
    if item.get("date") is not None:
        return _el("Date", time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(item["date"])))
    return _el(days_name, item["days"])


def _noncurrent(item: dict[str, Any]) -> str:
    newer = _el("NewerNoncurrentVersions", item["newer"]) if item.get("newer") is not None else ""
    return _el("NoncurrentDays", item["days"]) + newer


def _render_filter(flt: dict[str, Any], form: str) -> str:
    if form == "legacy":
        return _el("Prefix", flt["prefix"])
    parts = [_el("Prefix", flt["prefix"])] if form in ("Prefix", "And+Prefix") else []
    parts += [f"<Tag>{_el('Key', k)}{_el('Value', v)}</Tag>" for k, v in flt["tags"].items()]
    if flt["gt"] is not None:
        parts.append(_el("ObjectSizeGreaterThan", flt["gt"]))
    if flt["lt"] is not None:
        parts.append(_el("ObjectSizeLessThan", flt["lt"]))
    inner = "".join(parts)
    return f"<Filter><And>{inner}</And></Filter>" if form.startswith("And") else f"<Filter>{inner}</Filter>"


def render_lifecycle(rules: list[dict[str, Any]]) -> bytes:
    """The GetBucketLifecycleConfiguration document of stored rules."""
    out = [f'{s3xml.HEAD}<LifecycleConfiguration xmlns="{s3xml.NS}">']
    for rule in rules:
        out += ["<Rule>", _el("ID", rule["id"]), _render_filter(rule["filter"], rule.get("form", "")),
                _el("Status", rule["status"])]
        for item in rule.get("transitions") or []:
            out.append(f"<Transition>{_when(item, 'Days')}{_el('StorageClass', item['storage_class'])}</Transition>")
        expiration = rule.get("expiration")
        if expiration:
            inner = (_el("ExpiredObjectDeleteMarker", "true" if expiration["marker"] else "false")
                     if "marker" in expiration else _when(expiration, "Days"))
            out.append(f"<Expiration>{inner}</Expiration>")
        for item in rule.get("noncurrent_transitions") or []:
            out.append(f"<NoncurrentVersionTransition>{_noncurrent(item)}{_el('StorageClass', item['storage_class'])}"
                       "</NoncurrentVersionTransition>")
        if rule.get("noncurrent"):
            out.append(f"<NoncurrentVersionExpiration>{_noncurrent(rule['noncurrent'])}</NoncurrentVersionExpiration>")
        if rule.get("abort_days") is not None:
            out.append(f"<AbortIncompleteMultipartUpload>{_el('DaysAfterInitiation', rule['abort_days'])}"
                       "</AbortIncompleteMultipartUpload>")
        out.append("</Rule>")
    out.append("</LifecycleConfiguration>")
    return "".join(out).encode()
