"""DeleteObjects (``POST /bucket?delete``): every key in one Raft entry, so the batch
applies at once."""

from __future__ import annotations

import time
from typing import Any
from xml.sax.saxutils import escape

from quart import Response

from frontend import s3xml
from frontend.context import Context, meta_call, read_body, xml_response
from frontend.errors import S3Error

MAX_DELETE_KEYS = 1000
# 1,000 keys of 1,024 bytes, each escaped (an '&' takes five bytes), with a version id each
MAX_DELETE_BODY = 8 * 1024 * 1024


async def delete_objects(ctx: Context, request: Any, bucket: str) -> Response:
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
