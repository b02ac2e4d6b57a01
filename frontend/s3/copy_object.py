"""CopyObject: a metadata-only copy. The new object shares the source's chunks (the
state machine counts the references), so a copy of any size takes one Raft commit and
no byte moves — not through the client, not even through the frontend."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote

from quart import Response

from frontend import conditions, iam, s3xml
from frontend.context import Context, meta_call, stored_headers, user_metadata, xml_response
from frontend.errors import S3Error
from frontend.names import check_bucket_name, check_key
from frontend.s3 import tagging

_SOURCE_CONDITIONS = {
    "x-amz-copy-source-if-match": "if-match",
    "x-amz-copy-source-if-none-match": "if-none-match",
    "x-amz-copy-source-if-modified-since": "if-modified-since",
    "x-amz-copy-source-if-unmodified-since": "if-unmodified-since",
}


def parse_copy_source(header: str) -> tuple[str, str]:
    """'/bucket/some%20key?versionId=x' -> ('bucket', 'some key')."""
    source = unquote(header.split("?", 1)[0]).lstrip("/")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                      ArgumentName="x-amz-copy-source")
    check_bucket_name(bucket)
    check_key(key)
    return bucket, key


def _directive(request: Any, name: str) -> str:
    value = request.headers.get(name, "COPY").upper()
    if value not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", f"Unknown {name}", ArgumentName=name, ArgumentValue=value)
    return value


async def copy_object(ctx: Context, request: Any, bucket: str, key: str) -> Response:
    src_bucket, src_key = parse_copy_source(request.headers["x-amz-copy-source"])
    metadata = _directive(request, "x-amz-metadata-directive")
    tags_directive = _directive(request, "x-amz-tagging-directive")
    if (src_bucket, src_key) == (bucket, key) and metadata == "COPY" and tags_directive == "COPY":
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to "
                      "itself without changing the object's metadata, storage class, website redirect location or "
                      "encryption attributes.")
    await iam.authorize(ctx, request.principal, src_bucket, "read")
    src = (await meta_call(ctx.meta.read({"q": "object", "bucket": src_bucket, "key": src_key})))["obj"]
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
        "op": "copy_object", "src_bucket": src_bucket, "src_key": src_key, "bucket": bucket, "key": key,
        "source_etag": src["etag"], "meta": meta, "content_type": content_type, "ts": time.time(),
        "cond": conditions.write_condition(request.headers),
    }))
    body = (f'{s3xml.HEAD}<CopyObjectResult xmlns="{s3xml.NS}"><LastModified>{s3xml.iso8601(reply["created"])}'
            f'</LastModified><ETag>"{reply["etag"]}"</ETag></CopyObjectResult>')
    return xml_response(body.encode())
