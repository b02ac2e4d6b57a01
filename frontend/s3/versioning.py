"""Bucket versioning: Cairn keeps one version of each key, so GetBucketVersioning says
versioning was never enabled. (PutBucketVersioning would live here.)"""

from __future__ import annotations

from quart import Response

from frontend import s3xml
from frontend.context import Context, meta_call, xml_response


async def get_versioning(ctx: Context, bucket: str) -> Response:
    await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket}))
    return xml_response(f'{s3xml.HEAD}<VersioningConfiguration xmlns="{s3xml.NS}"/>'.encode())
