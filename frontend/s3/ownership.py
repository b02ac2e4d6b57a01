"""Bucket ownership controls (Get/Put/DeleteBucketOwnershipControls) and the public
access block (Get/Put/DeletePublicAccessBlock). Both are enforced in the state machine
(``raftmeta.sm.acls``) and by the frontends' bucket check (IgnorePublicAcls)."""

from __future__ import annotations

from typing import Any

from quart import Response

from core import acl
from frontend import s3xml
from frontend.context import Context, empty_response, meta_call, read_body, xml_response
from frontend.errors import S3Error

PAB_FIELDS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


async def _config(ctx: Context, bucket: str, name: str) -> Any:
    return (await meta_call(ctx.meta.read({"q": "bucket_config", "bucket": bucket, "name": name})))["value"]


async def _document(request: Any, root_name: str) -> Any:
    root = s3xml.parse(await read_body(request, s3xml.MAX_XML_BODY))
    if root is None or s3xml.local(root.tag) != root_name:
        raise S3Error("MalformedXML")
    return root


async def get_ownership(ctx: Context, bucket: str) -> Response:
    value = await _config(ctx, bucket, "ownership")
    if value is None:
        raise S3Error("OwnershipControlsNotFoundError", "The bucket ownership controls were not found",
                      BucketName=bucket)
    return xml_response((f'{s3xml.HEAD}<OwnershipControls xmlns="{s3xml.NS}"><Rule><ObjectOwnership>{value}'
                         "</ObjectOwnership></Rule></OwnershipControls>").encode())


async def put_ownership(ctx: Context, request: Any, bucket: str) -> Response:
    root = await _document(request, "OwnershipControls")
    rules = [r for r in root if s3xml.local(r.tag) == "Rule"]
    if len(rules) != 1 or len(root) != 1:
        raise S3Error("MalformedXML")
    values = [(c.text or "").strip() for c in rules[0] if s3xml.local(c.tag) == "ObjectOwnership"]
    if len(values) != 1 or values[0] not in acl.OWNERSHIPS:
        raise S3Error("MalformedXML")
    await meta_call(ctx.meta.write({"op": "set_ownership", "bucket": bucket, "ownership": values[0]}))
    return empty_response()


async def delete_ownership(ctx: Context, bucket: str) -> Response:
    await meta_call(ctx.meta.write({"op": "set_ownership", "bucket": bucket, "ownership": None}))
    return empty_response(204)


async def get_public_access_block(ctx: Context, bucket: str) -> Response:
    value = await _config(ctx, bucket, "public_access_block")
    if value is None:
        raise S3Error("NoSuchPublicAccessBlockConfiguration", "The public access block configuration was not found",
                      BucketName=bucket)
    fields = "".join(f"<{f}>{'true' if value.get(f) else 'false'}</{f}>" for f in PAB_FIELDS)
    return xml_response(f'{s3xml.HEAD}<PublicAccessBlockConfiguration xmlns="{s3xml.NS}">{fields}'
                        "</PublicAccessBlockConfiguration>".encode())


async def put_public_access_block(ctx: Context, request: Any, bucket: str) -> Response:
    root = await _document(request, "PublicAccessBlockConfiguration")
    value: dict[str, bool] = {}
    for child in root:
        name, text = s3xml.local(child.tag), (child.text or "").strip().lower()
        if name not in PAB_FIELDS or text not in ("true", "false") or name in value:
            raise S3Error("MalformedXML")
        value[name] = text == "true"
    await meta_call(ctx.meta.write({"op": "set_bucket_config", "bucket": bucket, "name": "public_access_block",
                                    "value": {f: value.get(f, False) for f in PAB_FIELDS}}))
    return empty_response()


async def delete_public_access_block(ctx: Context, bucket: str) -> Response:
    await meta_call(ctx.meta.write({"op": "set_bucket_config", "bucket": bucket, "name": "public_access_block",
                                    "value": None}))
    return empty_response(204)
