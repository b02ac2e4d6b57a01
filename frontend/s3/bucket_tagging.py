"""Bucket tagging: Put/Get/DeleteBucketTagging. The tag set is a ``bucket_config``
document (``tagging``: [[key, value]...]), like CORS; a bucket without one answers
NoSuchTagSet."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from quart import Response

from frontend import s3xml
from frontend.context import Context, empty_response, meta_call, read_body, xml_response
from frontend.errors import S3Error
from frontend.s3.tagging import check_tags, parse_tagging

MAX_BUCKET_TAGS = 50  # AWS: "up to 50 tags" on a bucket
MAX_BODY = 64 * 1024


def parse_tag_set(body: bytes) -> list[list[str]]:
    """``<Tagging><TagSet><Tag><Key/><Value/></Tag>...</TagSet></Tagging>``, checked as
    AWS checks a bucket's: at most 50, unique keys of 1..128 characters, values of at
    most 256, no key in the reserved ``aws:`` prefix."""
    return check_tags(parse_tagging(body), MAX_BUCKET_TAGS, "Bucket tag count cannot be greater than 50",
                      reserved=True)


async def put_bucket_tagging(ctx: Context, request: Any, bucket: str) -> Response:
    tags = parse_tag_set(await read_body(request, MAX_BODY))
    await meta_call(ctx.meta.write({"op": "set_bucket_config", "bucket": bucket, "name": "tagging",
                                    "value": tags or None}))
    return empty_response(204)


async def get_bucket_tagging(ctx: Context, bucket: str) -> Response:
    reply = await meta_call(ctx.meta.read({"q": "bucket_config", "bucket": bucket, "name": "tagging"}))
    if not reply["value"]:
        raise S3Error("NoSuchTagSet", BucketName=bucket)
    items = "".join(f"<Tag><Key>{escape(k)}</Key><Value>{escape(v)}</Value></Tag>" for k, v in sorted(reply["value"]))
    return xml_response(f'{s3xml.HEAD}<Tagging xmlns="{s3xml.NS}"><TagSet>{items}</TagSet></Tagging>'.encode())


async def delete_bucket_tagging(ctx: Context, bucket: str) -> Response:
    await meta_call(ctx.meta.write({"op": "set_bucket_config", "bucket": bucket, "name": "tagging", "value": None}))
    return empty_response(204)
