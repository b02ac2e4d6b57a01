"""Object tagging: Get/Put/DeleteObjectTagging, and ``x-amz-tagging`` on writes."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from quart import Response

from frontend import s3xml
from frontend.context import (
    Context,
    empty_response,
    meta_call,
    object_query,
    read_body,
    version_headers,
    version_param,
    xml_response,
)
from frontend.errors import S3Error

MAX_TAGS = 10
MAX_TAGGING_BODY = 64 * 1024  # 10 tags of at most 128 + 256 characters, escaped


def check_tags(tags: list[list[str]], limit: int = MAX_TAGS, too_many: str = "Object tags cannot be greater than 10",
               reserved: bool = False) -> list[list[str]]:
    """A tag set as AWS checks one: at most ``limit``, unique keys of 1..128 characters,
    values of at most 256; ``reserved``: no key in the ``aws:`` prefix (buckets')."""
    if len(tags) > limit:
        raise S3Error("InvalidTag", too_many)
    keys = [k for k, _ in tags]
    if len(set(keys)) != len(keys):
        raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
    for k, v in tags:
        if not 1 <= len(k) <= 128:
            raise S3Error("InvalidTag", "The TagKey you have provided is invalid")
        if len(v) > 256:
            raise S3Error("InvalidTag", "The TagValue you have provided is invalid")
        if reserved and k.lower().startswith("aws:"):
            raise S3Error("InvalidTag", "System tags cannot be added/updated by requester")
    return tags


def header_tags(value: str | None) -> list[list[str]] | None:
    """Tags from an ``x-amz-tagging`` header (URL query form)."""
    if value is None:
        return None
    return check_tags([[k, v] for k, v in parse_qsl(value, keep_blank_values=True)])


def parse_tagging(body: bytes) -> list[list[str]]:
    """``<Tagging><TagSet><Tag><Key/><Value/></Tag>...</TagSet></Tagging>`` -> [[key, value]]
    (unchecked: objects' and buckets' limits differ)."""
    root = s3xml.parse(body)
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
    return tags


async def put_tagging(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    tags = parse_tagging(await read_body(request, MAX_TAGGING_BODY))
    reply = await meta_call(ctx.meta.write({"op": "set_tags", "bucket": bucket, "key": key,
                                            "vid": version_param(params), "tags": check_tags(tags)}))
    return empty_response(headers=version_headers(reply.get("vid")))


async def get_tagging(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    obj = (await meta_call(ctx.meta.read(object_query(request, bucket, key, version_param(params)))))["obj"]
    items = "".join(f"<Tag><Key>{escape(k)}</Key><Value>{escape(v)}</Value></Tag>"
                    for k, v in sorted(obj.get("meta", {}).get("tags", [])))  # in key order, as S3 lists them
    response = xml_response(f'{s3xml.HEAD}<Tagging xmlns="{s3xml.NS}"><TagSet>{items}</TagSet></Tagging>'.encode())
    response.headers.update(version_headers(obj.get("vid")))
    return response


async def delete_tagging(ctx: Context, bucket: str, key: str, params: dict[str, str]) -> Response:
    reply = await meta_call(ctx.meta.write({"op": "set_tags", "bucket": bucket, "key": key,
                                            "vid": version_param(params), "tags": None}))
    return empty_response(204, version_headers(reply.get("vid")))
