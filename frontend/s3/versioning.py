"""Bucket versioning: Put/GetBucketVersioning. The state machine owns the rules (never
back to unversioned; Suspended refused while object lock is on)."""

from __future__ import annotations

from typing import Any

from quart import Response

from frontend import s3xml
from frontend.context import Context, empty_response, meta_call, read_body, xml_response
from frontend.errors import S3Error


async def put_versioning(ctx: Context, request: Any, bucket: str) -> Response:
    root = s3xml.parse(await read_body(request, s3xml.MAX_XML_BODY))
    if root is None or s3xml.local(root.tag) != "VersioningConfiguration":
        raise S3Error("MalformedXML")
    fields: dict[str, str] = {}
    for child in root:
        name = s3xml.local(child.tag)
        if name not in ("Status", "MfaDelete") or name in fields:
            raise S3Error("MalformedXML")
        fields[name] = (child.text or "").strip()
    if fields.get("MfaDelete") not in (None, "Disabled"):
        if fields["MfaDelete"] != "Enabled":
            raise S3Error("MalformedXML")
        raise S3Error("NotImplemented", "MFA delete is not supported.")
    status = fields.get("Status")
    if status is None:  # an empty document changes nothing, as S3 answers it
        await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket}))
        return empty_response()
    if status not in ("Enabled", "Suspended"):
        raise S3Error("IllegalVersioningConfigurationException",
                      "The Versioning element must be specified and its Status be Enabled or Suspended.")
    await meta_call(ctx.meta.write({"op": "set_versioning", "bucket": bucket, "status": status}))
    return empty_response()


async def get_versioning(ctx: Context, bucket: str) -> Response:
    status = (await meta_call(ctx.meta.read({"q": "bucket_config", "bucket": bucket, "name": "versioning"})))["value"]
    inner = f"<Status>{status}</Status>" if status else ""
    return xml_response(f'{s3xml.HEAD}<VersioningConfiguration xmlns="{s3xml.NS}">{inner}'
                        "</VersioningConfiguration>".encode())
