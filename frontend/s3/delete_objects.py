"""DeleteObjects (``POST /bucket?delete``): every key (and version) in one Raft entry,
so the batch applies at once; a version object lock keeps is that entry's error."""

from __future__ import annotations

import time
from typing import Any
from xml.sax.saxutils import escape

from quart import Response

from frontend import conditions, s3xml
from frontend.context import Context, meta_call, read_body, xml_response
from frontend.errors import ERRORS, S3Error
from frontend.s3 import object_lock

MAX_DELETE_KEYS = 1000
# 1,000 keys of 1,024 bytes, each escaped (an '&' takes five bytes), with a version id each
MAX_DELETE_BODY = 8 * 1024 * 1024


def _entry(key: str, vid: str | None) -> str:
    return f"<Key>{escape(key)}</Key>" + (f"<VersionId>{escape(vid)}</VersionId>" if vid is not None else "")


async def delete_objects(ctx: Context, request: Any, bucket: str) -> Response:
    """Each <Object> (Key, optional VersionId; ETag, LastModifiedTime and Size its
    conditions, as DeleteObject's headers) is deleted as DeleteObject would; each gets
    its own Deleted (with DeleteMarker and DeleteMarkerVersionId) or Error."""
    root = s3xml.parse(await read_body(request, MAX_DELETE_BODY))
    if root is None or s3xml.local(root.tag) != "Delete":
        raise S3Error("MalformedXML")
    quiet = False
    entries: list[tuple[str, str | None, dict[str, Any]]] = []
    for child in root:
        name = s3xml.local(child.tag)
        if name == "Quiet":
            quiet = (child.text or "").strip().lower() == "true"
        elif name == "Object":
            fields = {s3xml.local(c.tag): c.text or "" for c in child}
            if "Key" not in fields:
                raise S3Error("MalformedXML")
            cond = conditions.entry_condition(fields.get("ETag"), fields.get("LastModifiedTime"), fields.get("Size"))
            entries.append((fields["Key"], fields.get("VersionId"), cond))
        else:
            raise S3Error("MalformedXML")
    if not entries or len(entries) > MAX_DELETE_KEYS:
        raise S3Error("MalformedXML")
    valid = [[k, v, *([c] if c else [])] for k, v, c in entries if 0 < len(k.encode("utf-8", "surrogatepass")) <= 1024]
    bypass = any(v is not None for _, v, _ in entries) and await object_lock.bypass_requested(ctx, request, bucket)
    reply = await meta_call(ctx.meta.write({"op": "delete_objects", "bucket": bucket, "entries": valid,
                                            "bypass": bypass, "ts": time.time()}))
    out = [f'{s3xml.HEAD}<DeleteResult xmlns="{s3xml.NS}">']
    if not quiet:
        for done in reply["deleted"]:
            marker = ""
            if done.get("marker"):
                marker = "<DeleteMarker>true</DeleteMarker>"  # a marker made, or one removed by its id
                if done.get("vid"):
                    marker += f"<DeleteMarkerVersionId>{escape(done['vid'])}</DeleteMarkerVersionId>"
            out.append(f"<Deleted>{_entry(done['key'], done.get('req_vid'))}{marker}</Deleted>")
    for error in reply.get("errors", []):
        message = error.get("msg") or ERRORS.get(error["code"], (0, error["code"]))[1]
        out.append(f"<Error>{_entry(error['key'], error.get('vid'))}<Code>{error['code']}</Code>"
                   f"<Message>{escape(message)}</Message></Error>")
    valid_keys = {k for k, *_ in valid}
    out += [f"<Error>{_entry(k, v)}<Code>KeyTooLongError</Code><Message>Your key is too long</Message></Error>"
            for k, v, _ in entries if k not in valid_keys]
    out.append("</DeleteResult>")
    return xml_response("".join(out).encode())
