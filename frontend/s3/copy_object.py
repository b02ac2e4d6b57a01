"""CopyObject: a metadata-only copy. The new object shares the source's chunks (the
state machine counts the references), so a copy of any size takes one Raft commit and
no byte moves — not through the client, not even through the frontend."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, unquote

from quart import Response

from frontend import conditions, iam, s3xml
from frontend.context import (
    Context,
    meta_call,
    object_query,
    stored_headers,
    user_metadata,
    version_headers,
    version_param,
    xml_response,
)
from frontend.errors import S3Error
from frontend.names import check_bucket_name, check_key
from frontend.s3 import acl, object_lock, tagging

_SOURCE_CONDITIONS = {
    "x-amz-copy-source-if-match": "if-match",
    "x-amz-copy-source-if-none-match": "if-none-match",
    "x-amz-copy-source-if-modified-since": "if-modified-since",
    "x-amz-copy-source-if-unmodified-since": "if-unmodified-since",
}


def parse_copy_source(header: str) -> tuple[str, str, str | None]:
    """'/bucket/some%20key?versionId=x' -> ('bucket', 'some key', 'x')."""
    path, _, query = header.partition("?")
    source = unquote(path).lstrip("/")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                      ArgumentName="x-amz-copy-source")
    check_bucket_name(bucket)
    check_key(key)
    vid = None
    if query:
        params = dict(parse_qsl(query, keep_blank_values=True))
        if "versionId" in params:
            vid = version_param(params)
    return bucket, key, vid


def _directive(request: Any, name: str) -> str:
    value = request.headers.get(name, "COPY").upper()
    if value not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", f"Unknown {name}", ArgumentName=name, ArgumentValue=value)
    return value


async def copy_object(ctx: Context, request: Any, bucket: str, key: str) -> Response:
    src_bucket, src_key, src_vid = parse_copy_source(request.headers["x-amz-copy-source"])
    metadata = _directive(request, "x-amz-metadata-directive")
    tags_directive = _directive(request, "x-amz-tagging-directive")
    lock = object_lock.lock_headers(request.headers)
    if (src_bucket, src_key) == (bucket, key) and src_vid is None and metadata == "COPY" \
            and tags_directive == "COPY" and not lock:
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to "
                      "itself without changing the object's metadata, storage class, website redirect location or "
                      "encryption attributes.")
    check = await iam.authorize(ctx, request.principal, src_bucket, "read")  # the source's own ACL too
    try:
        src = (await meta_call(ctx.meta.read(object_query(request, src_bucket, src_key, src_vid, check or {}))))["obj"]
    except S3Error as exc:
        if exc.code == "MethodNotAllowed":  # the version named is a delete marker
            raise S3Error("InvalidRequest", "The source of a copy request may not specifically refer to a delete "
                          "marker by version id.") from None
        raise
    source_conditions = {plain: request.headers[h] for h, plain in _SOURCE_CONDITIONS.items() if h in request.headers}
    if conditions.check_read(source_conditions, src["etag"], src["created"]):
        raise S3Error("PreconditionFailed", Condition="x-amz-copy-source-if-none-match")
    source_tags = src["meta"].get("tags")
    tags = tagging.header_tags(request.headers.get("x-amz-tagging")) if tags_directive == "REPLACE" else source_tags
    meta: dict[str, Any] | None = None
    content_type = None
    if metadata == "REPLACE":
        meta = {"user": user_metadata(request), "headers": stored_headers(request)}
        content_type = request.headers.get("content-type", "binary/octet-stream")
    elif tags != source_tags:
        meta = {"user": src["meta"].get("user", {}), "headers": src["meta"].get("headers", {})}
    if meta is not None and tags:
        meta["tags"] = tags
    reply = await meta_call(ctx.meta.write({
        "op": "copy_object", "src_bucket": src_bucket, "src_key": src_key, "src_vid": src_vid, "bucket": bucket,
        "key": key, "source_etag": src["etag"], "meta": meta, "content_type": content_type, "ts": time.time(),
        "cond": conditions.write_condition(request.headers), "lock": lock, **acl.write_fields(request),
    }))
    body = (f'{s3xml.HEAD}<CopyObjectResult xmlns="{s3xml.NS}"><LastModified>{s3xml.iso8601(reply["created"])}'
            f'</LastModified><ETag>"{reply["etag"]}"</ETag></CopyObjectResult>')
    response = xml_response(body.encode())
    response.headers.update(version_headers(reply.get("vid")))
    if reply.get("src_versioned"):
        response.headers["x-amz-copy-source-version-id"] = reply["src_vid"]
    return response
