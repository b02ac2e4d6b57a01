"""Buckets: CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation, and the object
listings ListObjects and ListObjectsV2."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from quart import Response

from frontend import s3xml
from frontend.context import (
    Context,
    decimal,
    empty_response,
    encoding_type,
    meta_call,
    meta_call_many,
    read_body,
    xml_response,
)
from frontend.errors import S3Error
from frontend.names import check_bucket_name
from frontend.s3.acl import request_acl


async def create_bucket(ctx: Context, request: Any, bucket: str) -> Response:
    check_bucket_name(bucket)
    root = s3xml.parse(await read_body(request, s3xml.MAX_XML_BODY))
    if root is not None:
        if s3xml.local(root.tag) != "CreateBucketConfiguration":
            raise S3Error("MalformedXML")
        for child in root:
            if s3xml.local(child.tag) == "LocationConstraint" and (child.text or "") not in ("", ctx.region):
                raise S3Error("InvalidLocationConstraint",
                              f"The {child.text} location constraint is not this cluster's region ({ctx.region}).")
    spec = request_acl(request)
    ownership = request.headers.get("x-amz-object-ownership")
    lock = request.headers.get("x-amz-bucket-object-lock-enabled", "").strip().lower()
    if lock not in ("", "true", "false"):
        raise S3Error("InvalidArgument", "x-amz-bucket-object-lock-enabled must be true or false",
                      ArgumentName="x-amz-bucket-object-lock-enabled", ArgumentValue=lock)
    await meta_call(ctx.meta.write({
        "op": "create_bucket", "bucket": bucket, "owner": request.principal.user, "acl_spec": spec, "ts": time.time(),
        **({"ownership": ownership} if ownership is not None else {}),
        **({"object_lock": True} if lock == "true" else {}),
        # S3 in us-east-1 answers 200 to re-creating a bucket you own (and resets its ACL);
        # every other region says BucketAlreadyOwnedByYou
        **({"legacy_recreate": True} if ctx.region == "us-east-1" else {}),
    }))
    return empty_response(headers={"Location": f"/{bucket}"})


async def delete_bucket(ctx: Context, bucket: str) -> Response:
    await meta_call(ctx.meta.write({"op": "delete_bucket", "bucket": bucket, "ts": time.time()}))
    return empty_response(204)


async def head_bucket(ctx: Context, bucket: str) -> Response:
    await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket}))
    return empty_response(headers={"x-amz-bucket-region": ctx.region})


async def get_location(ctx: Context, bucket: str) -> Response:
    await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket}))
    return xml_response(s3xml.location(ctx.region))


async def bucket_exists(ctx: Context, bucket: str) -> None:
    """Fail fast, before any byte is stored: a cheap local read first; only a "no" is
    confirmed linearizably (the bucket may have been created a moment ago elsewhere)."""
    try:
        await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket}, linear=False))
    except S3Error as exc:
        if exc.code != "NoSuchBucket":
            raise
        await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket}))


# ---------------------------------------------------------------------- listings


def max_keys(params: dict[str, str]) -> int:
    value = decimal(params.get("max-keys", "1000"))
    if value is None:
        raise S3Error("InvalidArgument", "Provided max-keys not an integer or within integer range", ArgumentName="max-keys")
    return min(value, 1000)


def _token(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode("utf-8", "surrogatepass")).decode()


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect", ArgumentName="continuation-token") from None


async def list_objects(ctx: Context, bucket: str, params: dict[str, str]) -> Response:
    """ListObjects, or ListObjectsV2 with ``list-type=2``."""
    v2 = params.get("list-type") == "2"
    encoding = encoding_type(params)
    p: dict[str, Any] = {
        "bucket": bucket, "prefix": params.get("prefix", ""), "delimiter": params.get("delimiter", ""),
        "max_keys": max_keys(params), "encoding_type": encoding, "owner": "",
    }
    if v2:
        p["start_after"] = params.get("start-after", "")
        p["token"] = params.get("continuation-token")
        p["fetch_owner"] = params.get("fetch-owner") == "true"
        after = _untoken(p["token"]) if p["token"] is not None else p["start_after"]
    else:
        p["marker"] = params.get("marker", "")
        after = p["marker"]
    # The bucket's owner and the page, behind one Raft barrier.
    bucket_info, page = await meta_call_many(ctx, [{"q": "bucket", "bucket": bucket}, {
        "q": "list", "bucket": bucket, "prefix": p["prefix"], "delimiter": p["delimiter"],
        "after": after, "max_keys": p["max_keys"], "rows": True,
    }])
    p["owner"] = bucket_info["owner"]
    if page["truncated"]:
        p["next_token"] = _token(page["last"])
    return xml_response(s3xml.list_objects(page, p, v2))
