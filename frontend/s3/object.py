"""Objects: PutObject, GetObject, HeadObject (byte ranges, part numbers, conditional
reads, response-* overrides) and DeleteObject."""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

from quart import Response

from frontend import conditions, iam
from frontend.context import (
    Context,
    checksum_headers,
    empty_response,
    meta_call,
    object_query,
    read_object,
    stored_headers,
    user_metadata,
    version_headers,
    version_param,
)
from frontend.datapath import SMALL_BODY, PrefetchingBody
from frontend.errors import S3Error
from frontend.s3 import acl, attributes, lifecycle, multipart, object_lock, tagging
from frontend.s3.bucket import bucket_exists
from frontend.upload import UploadBody, commit_object

_DIGITS = re.compile(r"[0-9]*")


async def put_object(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    body = UploadBody(request, request.auth)
    cond = conditions.write_condition(request.headers, since=time.time())
    tags = tagging.header_tags(request.headers.get("x-amz-tagging"))
    user_meta = user_metadata(request)
    headers = stored_headers(request)
    headers.pop("content-encoding", None)  # as sent: aws-chunked is the transfer's, not the object's
    if body.content_encoding:
        headers["content-encoding"] = body.content_encoding
    lock = object_lock.lock_headers(request.headers)
    if lock:
        object_lock.require_integrity_header(request.headers)
    access = acl.write_fields(request)  # parsed before a byte is stored
    if lock or body.length is None or body.length > ctx.data.settings.inline_max:
        await iam.settle(ctx, request, bucket)  # no byte reaches a blob node before the caller is authorized
        await bucket_exists(ctx, bucket)  # fail fast before chunks are written (the commit checks anyway)
    stored, checksum = await body.store(ctx.data)  # a deferred caller's body: inline, held by this frontend
    etag, reply = await commit_object(
        ctx.meta, ctx.data, bucket, key, stored, cond=cond, commit_as=iam.take_commit_as(request),
        integrity=object_lock.has_integrity_header(request.headers),
        content_type=request.headers.get("content-type", "binary/octet-stream"),
        meta_fields={"user": user_meta, "headers": headers, "checksum": checksum, **({"tags": tags} if tags else {}),
                     **lock, **access})
    return checksum_headers(empty_response(headers={"ETag": f'"{etag}"', **version_headers(reply.get("vid")),
                                                    **lifecycle.expiration_header(reply)}), checksum)


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _position(digits: str) -> int:
    """A byte position of any length: past 19 digits it is past every object's end."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else 10**19


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """RFC 9110 single byte range -> (first, last) inclusive; None = whole object."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # not a range we serve: the whole representation, as RFC 9110 allows
    first_s, dash, last_s = (part.strip() for part in spec.partition("-"))
    if not dash or not _DIGITS.fullmatch(first_s + last_s) or not (first_s or last_s):
        return None  # syntactically invalid: ignored, as RFC 9110 says
    if not first_s:
        suffix = _position(last_s)
        if suffix == 0 or size == 0:
            raise S3Error("InvalidRange", ActualObjectSize=size, RangeRequested=header)
        return max(0, size - suffix), size - 1
    first = _position(first_s)
    last = _position(last_s) if last_s else None
    if last is not None and first > last:
        return None
    if first >= size:
        raise S3Error("InvalidRange", ActualObjectSize=size, RangeRequested=header)
    return first, size - 1 if last is None else min(last, size - 1)


_OVERRIDES = (("response-content-type", "Content-Type"), ("response-content-language", "Content-Language"),
              ("response-expires", "Expires"), ("response-cache-control", "Cache-Control"),
              ("response-content-disposition", "Content-Disposition"),
              ("response-content-encoding", "Content-Encoding"))
_HEADER_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


def response_overrides(request: Any, params: dict[str, str]) -> dict[str, str]:
    """The response-* query parameters of a GET: signed requests only, as S3 says (an
    anonymous one could make a public text file be served as HTML), and only values a
    header can carry."""
    out = {}
    for param, header in _OVERRIDES:
        if param in params:
            if request.principal.user is None:
                raise S3Error("InvalidRequest", "Request specific response headers cannot be used for anonymous "
                              "GET requests.")
            if not _HEADER_VALUE.fullmatch(params[param]) or not params[param].isascii():
                raise S3Error("InvalidArgument", f"{param} must be a valid header value", ArgumentName=param)
            out[header] = params[param]
    return out


def as_sent(value: str) -> str:
    """A stored header value (the wire's bytes as latin-1 text) in the form that makes
    the response carry those same bytes: Quart encodes header values as UTF-8, so UTF-8
    bytes are handed over decoded (other bytes cannot pass through it unchanged)."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def object_headers(obj: dict[str, Any]) -> dict[str, str]:
    headers = {
        "ETag": f'"{obj["etag"]}"',
        "Last-Modified": _http_date(obj["created"]),
        "Content-Type": as_sent(obj["content_type"]),
        "Accept-Ranges": "bytes",
        **version_headers(obj.get("vid")),
    }
    meta = obj.get("meta", {})
    headers.update(object_lock.response_headers(meta))
    for name, value in meta.get("headers", {}).items():
        headers[name] = as_sent(value)
    for name, value in meta.get("user", {}).items():
        headers[f"x-amz-meta-{name}"] = as_sent(value)
    if meta.get("tags"):
        headers["x-amz-tagging-count"] = str(len(meta["tags"]))
    return headers


async def get_object(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    reply = await read_object(ctx, request, object_query(request, bucket, key, version_param(params)))
    obj = reply["obj"]
    size = obj["size"]
    headers = {**object_headers(obj), **lifecycle.expiration_header(reply)}
    if conditions.check_read(request.headers, obj["etag"], obj["created"]):
        return empty_response(304, {k: v for k, v in headers.items() if k in ("ETag", "Last-Modified")})
    headers.update(response_overrides(request, params))
    if "partNumber" in params:
        number = multipart.part_number(params)
        first, last, count = multipart.part_range(obj, number)
        byte_range: tuple[int, int] | None = (first, last) if size else None
        headers["x-amz-mp-parts-count"] = str(count)
        if request.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            headers.update(attributes.part_checksum_headers(obj, number))  # the part's own
    else:
        byte_range = parse_range(request.headers.get("range"), size)
    status = 200
    first, last = 0, size - 1
    if byte_range is not None:
        first, last = byte_range
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    elif request.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
        # Whole-object checksums only describe whole-object responses.
        for algo, value in obj.get("meta", {}).get("checksum", {}).items():
            headers[f"x-amz-checksum-{algo}"] = value
            headers["x-amz-checksum-type"] = obj["meta"].get("checksum_type") or "FULL_OBJECT"
    length = last - first + 1 if size else 0
    if request.method == "HEAD" or length == 0:
        response = empty_response(status, headers)
    else:
        def on_bad(chunk_id: str, node_id: str) -> None:
            ctx.data.report_bad(bucket, key, obj["version"], chunk_id, node_id)

        chunks = obj["chunks"]
        if len(chunks) == 1 and size <= SMALL_BODY:
            # Small: read and verify it before answering (an unreadable object gets a 503,
            # not a cut connection) and send it at once, without a prefetching task.
            data = await ctx.data.read_chunk(chunks[0], on_bad)
            response = Response(bytes(memoryview(data)[first : last + 1]), status=status, headers=headers)
        else:
            response = Response(PrefetchingBody(ctx.data, chunks, first, last, on_bad), status=status,
                                headers=headers)
    response.headers["Content-Length"] = str(length)
    return response


async def delete_object(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    """DeleteObject: with ``versionId`` that version for good (object lock permitting:
    GOVERNANCE yields to x-amz-bypass-governance-retention from a principal allowed to),
    else the object, or a new delete marker in a versioned bucket."""
    vid = version_param(params)
    cond = conditions.delete_condition(request.headers)
    bypass = vid is not None and await object_lock.bypass_requested(ctx, request, bucket)
    reply = await meta_call(ctx.meta.write({"op": "delete_object", "bucket": bucket, "key": key, "vid": vid,
                                            "bypass": bypass, "ts": time.time(), **({"cond": cond} if cond else {})}))
    return empty_response(204, version_headers(reply.get("vid"), bool(reply.get("marker"))))
