"""Object tagging (Get/Put/DeleteObjectTagging, x-amz-tagging on PUT) and DeleteObjects."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from quart import Response

from frontend import s3xml
from frontend.context import Context, empty_response, meta_call, read_body, xml_response
from frontend.errors import S3Error

MAX_TAGS = 10
MAX_DELETE_KEYS = 1000
MAX_TAGGING_BODY = 64 * 1024  # 10 tags of at most 128 + 256 characters, escaped
# 1,000 keys of 1,024 bytes, each escaped (an '&' takes five bytes), with a version id each
MAX_DELETE_BODY = 8 * 1024 * 1024


def check_tags(tags: list[list[str]]) -> list[list[str]]:
    if len(tags) > MAX_TAGS:
        raise S3Error("InvalidTag", "Object tags cannot be greater than 10")
    keys = [k for k, _ in tags]
    if len(set(keys)) != len(keys):
        raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
    for k, v in tags:
        if not 1 <= len(k) <= 128 or len(v) > 256:
            raise S3Error("InvalidTag", "The TagKey you have provided is invalid" if not 1 <= len(k) <= 128
                          else "The TagValue you have provided is invalid")
    return tags


def header_tags(value: str | None) -> list[list[str]] | None:
    """Tags from an ``x-amz-tagging`` header (URL query form)."""
    if value is None:
        return None
    return check_tags([[k, v] for k, v in parse_qsl(value, keep_blank_values=True)])


async def put_tagging(ctx: Context, request: Any, bucket: str, key: str) -> Response:
    root = s3xml.parse(await read_body(request, MAX_TAGGING_BODY))
    if root is None or s3xml.local(root.tag) != "Tagging":
        raise S3Error("MalformedXML")
    tags: list[list[str]] = []
    for tag_set in root:
        if s3xml.local(tag_set.tag) != "TagSet":
            raise S3Error("MalformedXML")
        for tag in tag_set:
            fields = {s3xml.local(c.tag): c.text or "" for c in tag}
            if s3xml.local(tag.tag) != "Tag" or "Key" not in fields:
                raise S3Error("MalformedXML")
            tags.append([fields["Key"], fields.get("Value", "")])
    await meta_call(ctx.meta.write({"op": "set_tags", "bucket": bucket, "key": key, "tags": check_tags(tags)}))
    return empty_response()


async def get_tagging(ctx: Context, bucket: str, key: str) -> Response:
    obj = (await meta_call(ctx.meta.read({"q": "object", "bucket": bucket, "key": key})))["obj"]
    items = "".join(f"<Tag><Key>{escape(k)}</Key><Value>{escape(v)}</Value></Tag>"
                    for k, v in obj.get("meta", {}).get("tags", []))
    return xml_response(f'{s3xml.HEAD}<Tagging xmlns="{s3xml.NS}"><TagSet>{items}</TagSet></Tagging>'.encode())


async def delete_tagging(ctx: Context, bucket: str, key: str) -> Response:
    await meta_call(ctx.meta.write({"op": "set_tags", "bucket": bucket, "key": key, "tags": None}))
    return empty_response(204)


async def delete_objects(ctx: Context, request: Any, bucket: str) -> Response:
    """DeleteObjects: every key in one Raft entry, so the batch applies at once."""
    root = s3xml.parse(await read_body(request, MAX_DELETE_BODY))
    if root is None or s3xml.local(root.tag) != "Delete":
        raise S3Error("MalformedXML")
    quiet = False
    keys: list[str] = []
    for child in root:
        name = s3xml.local(child.tag)
        if name == "Quiet":
            quiet = (child.text or "").strip().lower() == "true"
        elif name == "Object":
            fields = {s3xml.local(c.tag): c.text or "" for c in child}
            if "Key" not in fields:
                raise S3Error("MalformedXML")
            keys.append(fields["Key"])
        else:
            raise S3Error("MalformedXML")
    if not keys or len(keys) > MAX_DELETE_KEYS:
        raise S3Error("MalformedXML")
    valid = [k for k in keys if 0 < len(k.encode("utf-8", "surrogatepass")) <= 1024]
    reply = await meta_call(ctx.meta.write({"op": "delete_objects", "bucket": bucket, "keys": valid, "ts": time.time()}))
    out = [f'{s3xml.HEAD}<DeleteResult xmlns="{s3xml.NS}">']
    if not quiet:
        out += [f"<Deleted><Key>{escape(k)}</Key></Deleted>" for k in reply["deleted"]]
    out += [f"<Error><Key>{escape(k)}</Key><Code>KeyTooLongError</Code><Message>Your key is too long</Message></Error>"
            for k in keys if k not in valid]
    out.append("</DeleteResult>")
    return xml_response("".join(out).encode())
