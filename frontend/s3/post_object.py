"""Presigned POST: a browser form upload (multipart/form-data) authorized by a signed
policy, as boto3's ``generate_presigned_post`` makes it.

The form is read as it streams: fields first (checked against the policy before a
byte of the file is stored), then the ``file`` field, which goes straight into chunks.
Fields after the file are ignored, as S3 does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import trio
from quart import Response

from frontend import iam, s3xml, sse
from frontend.budget import OWNER
from frontend.checksums import requested_checksums
from frontend.context import Context, empty_response, xml_response
from frontend.datapath import Stored
from frontend.errors import S3Error
from frontend.names import check_key
from frontend.s3 import acl, tagging
from frontend.sigv4 import derive_signing_key
from frontend.upload import commit_object

MAX_FIELD = 64 * 1024
MAX_FIELDS = 100
FIELDS_BYTES = 64 * 1024  # all fields before the file (S3 allows 20 KB)
_EXPIRATION = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
_IGNORED = ("x-amz-signature", "file", "policy", "awsaccesskeyid", "signature")


class FormReader:
    """A streaming multipart/form-data reader over an async byte iterator."""

    def __init__(self, body: AsyncIterator[bytes], boundary: bytes) -> None:
        self._body = body.__aiter__()
        self._delimiter = b"\r\n--" + boundary
        self._buf = bytearray(b"\r\n")  # so the first boundary looks like every other one
        self._done = False

    async def _more(self) -> bool:
        try:
            self._buf += await self._body.__anext__()
            return True
        except StopAsyncIteration:
            return False

    async def next_part(self) -> tuple[str, str | None] | None:
        """Advance past a delimiter and the part's headers: (field name, filename)."""
        while True:
            at = self._buf.find(self._delimiter)
            if at >= 0 and len(self._buf) >= at + len(self._delimiter) + 2:
                break
            if len(self._buf) > MAX_FIELD + len(self._delimiter) or not await self._more():
                raise S3Error("MalformedPOSTRequest")
        del self._buf[: at + len(self._delimiter)]
        if self._buf.startswith(b"--"):
            return None  # the closing delimiter
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > MAX_FIELD or not await self._more():
                raise S3Error("MalformedPOSTRequest")
        headers = bytes(self._buf[2:end]).decode("utf-8", "replace")
        del self._buf[: end + 4]
        name = filename = None
        for line in headers.split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                for item in value.split(";"):
                    k, _, v = item.strip().partition("=")
                    if k == "name":
                        name = v.strip('"')
                    elif k == "filename":
                        filename = v.strip('"')
        if name is None:
            raise S3Error("MalformedPOSTRequest")
        return name, filename

    async def field(self) -> str:
        while (at := self._buf.find(self._delimiter)) < 0:
            if len(self._buf) > MAX_FIELD or not await self._more():
                raise S3Error("MalformedPOSTRequest")
        return bytes(self._buf[:at]).decode("utf-8", "replace")

    async def file(self) -> AsyncIterator[bytes]:
        """The file's bytes, as they arrive, up to the next delimiter."""
        keep = len(self._delimiter)
        while True:
            at = self._buf.find(self._delimiter)
            if at >= 0:
                if at:
                    yield bytes(self._buf[:at])
                del self._buf[:at]
                return
            if len(self._buf) > keep:
                cut = len(self._buf) - keep
                yield bytes(self._buf[:cut])
                del self._buf[:cut]
            if not await self._more():
                raise S3Error("IncompleteBody")


def _check_policy(policy: dict[str, Any], fields: dict[str, str], bucket: str, size: int | None) -> tuple[int, int]:
    """Enforce the policy's conditions; returns the content-length range (min, max)."""
    def fail(why: str) -> S3Error:  # a condition the form does not meet
        return S3Error("AccessDenied", f"Invalid according to Policy: {why}")

    def bad(why: str) -> S3Error:  # a policy that does not parse
        return S3Error("InvalidPolicyDocument", f"Invalid Policy: {why}")

    if not isinstance(policy, dict) or not isinstance(policy.get("conditions"), list):
        raise bad("Policy missing conditions.")
    if not isinstance(policy.get("expiration"), str) or not _EXPIRATION.fullmatch(policy["expiration"]):
        raise bad("Invalid 'expiration' value: must be an ISO 8601 date and time in UTC.")
    expires = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00")).timestamp()
    if expires < time.time():
        raise fail("Policy expired.")
    covered = {"bucket"}
    length = (0, 5 * 1024**3)
    values = {**fields, "bucket": bucket}
    for cond in policy.get("conditions", []):
        if isinstance(cond, dict):
            if len(cond) != 1:
                raise bad("Invalid Simple-Condition: Simple-Conditions must have exactly one property specified.")
            for name, value in cond.items():
                covered.add(name.lower())
                if values.get(name.lower()) != value:
                    raise fail(f"Policy Condition failed: [\"eq\", \"${name}\", \"{value}\"]")
        elif isinstance(cond, list) and len(cond) == 3:
            op = str(cond[0]).lower()
            if op == "content-length-range":
                try:
                    length = (int(cond[1]), int(cond[2]))
                except (TypeError, ValueError):
                    raise bad("Invalid content-length-range.") from None
                continue
            name = str(cond[1]).lstrip("$").lower()
            covered.add(name)
            actual = values.get(name, "")
            if op == "eq" and actual != cond[2] or op == "starts-with" and not actual.startswith(cond[2]):
                raise fail(f"Policy Condition failed: {json.dumps(cond)}")
            if op not in ("eq", "starts-with"):
                raise bad(f"Invalid condition operator: {cond[0]}")
        else:
            raise bad(f"Invalid condition: {json.dumps(cond)}")
    for name in fields:
        if name not in covered and name not in _IGNORED and not name.startswith("x-ignore-"):
            raise fail(f"Extra input fields: {name}")
    return length


async def _read_fields(reader: FormReader, deadline_s: float) -> tuple[dict[str, str], str | None]:
    """The form's fields up to the file. Nobody is authenticated yet: they must arrive
    within ``deadline_s`` and come to at most FIELDS_BYTES, or the request ends."""
    fields: dict[str, str] = {}
    size = 0
    with trio.move_on_after(deadline_s) as deadline:
        while (part := await reader.next_part()) is not None:
            name, filename = part
            if name.lower() == "file":
                return fields, filename
            if len(fields) >= MAX_FIELDS:
                raise S3Error("MalformedPOSTRequest")
            fields[name.lower()] = await reader.field()
            size += len(name) + len(fields[name.lower()])
            if size > FIELDS_BYTES:
                raise S3Error("MaxPostPreDataLengthExceeded")
        raise S3Error("InvalidArgument", "POST requires exactly one file upload per request.", ArgumentName="file")
    assert deadline.cancelled_caught
    raise S3Error("RequestTimeout")


async def presigned_post(ctx: Context, request: Any, bucket: str) -> Response:
    content_type = request.headers.get("content-type", "")
    if "boundary=" not in content_type:
        raise S3Error("MalformedPOSTRequest")
    boundary = content_type.split("boundary=", 1)[1].split(";")[0].strip().strip('"').encode()
    reader = FormReader(request.body, boundary)
    fields, filename = await _read_fields(reader, ctx.limits.form)
    key = fields.get("key", "").replace("${filename}", filename or "")
    check_key(key)
    principal = await _verify(ctx, fields)
    OWNER.set(principal.user or "")
    sse.check("PostObject", fields)
    low, high = 0, 5 * 1024**3
    if principal.user is not None:  # an anonymous form (a public-write bucket's) has no policy to keep
        try:
            policy = json.loads(base64.b64decode(fields["policy"]))
            low, high = _check_policy(policy, {**fields, "key": key}, bucket, None)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):  # not the JSON a policy is
            raise S3Error("InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from None
    await iam.authorize(ctx, principal, bucket, "write")
    # a ``tagging`` field is a Tagging document (anonymous forms too), checked before the file is stored
    tags = tagging.check_tags(tagging.parse_tagging(fields["tagging"].encode())) if "tagging" in fields else []
    requested = requested_checksums({k: v for k, v in fields.items() if k.startswith("x-amz-checksum-")})
    checksum = requested.new() if requested is not None else None  # a form field x-amz-checksum-<algorithm>
    access = {"acl_spec": acl.canned_spec(fields["acl"]) if "acl" in fields else None, "writer": principal.user}
    stored = Stored()
    try:
        await ctx.data.store(reader.file(), stored, checksum.update if checksum is not None else None)
        if not low <= stored.size <= high:
            raise S3Error("EntityTooLarge" if stored.size > high else "EntityTooSmall",
                          ProposedSize=stored.size, MinSizeAllowed=low, MaxSizeAllowed=high)
        if requested is not None and checksum is not None:
            requested.verify(checksum)  # BadDigest
    except BaseException:
        await ctx.data.discard(stored.chunks)
        raise
    user = {k[len("x-amz-meta-"):]: v for k, v in fields.items() if k.startswith("x-amz-meta-")}
    kept = {checksum.algorithm: checksum.b64digest()} if checksum is not None else {}
    etag, reply = await commit_object(ctx.meta, ctx.data, bucket, key, stored,
                                    content_type=fields.get("content-type", "binary/octet-stream"),
                                    meta_fields={"user": user, "headers": {}, "checksum": kept, **access,
                                                 **({"tags": tags} if tags else {})})
    vid = reply.get("vid")
    location = f"{request.scheme}://{request.host}/{bucket}/{quote(key)}"
    redirect = fields.get("success_action_redirect")
    if redirect:
        sep = "&" if "?" in redirect else "?"
        target = f"{redirect}{sep}bucket={quote(bucket)}&key={quote(key)}&etag=%22{etag}%22"
        return empty_response(303, {"Location": target, "ETag": f'"{etag}"',
                                    **({"x-amz-version-id": vid} if vid else {})})
    status = fields.get("success_action_status", "204")
    if status == "201":
        body = (f'{s3xml.HEAD}<PostResponse><Location>{escape(location)}</Location><Bucket>{escape(bucket)}</Bucket>'
                f'<Key>{escape(key)}</Key><ETag>"{etag}"</ETag></PostResponse>')
        response = xml_response(body.encode(), 201)
    else:
        response = empty_response(200 if status == "200" else 204)
    response.headers["ETag"] = f'"{etag}"'
    response.headers["Location"] = location
    if vid:
        response.headers["x-amz-version-id"] = vid
    return response


async def _verify_v2(ctx: Context, fields: dict[str, str]) -> iam.Principal:
    """A form signed the SigV2 way: ``signature`` is base64(HMAC-SHA1(secret, policy))."""
    access_key = fields["awsaccesskeyid"]
    for name in ("policy", "signature"):
        if name not in fields:
            raise S3Error("InvalidArgument", f"Bucket POST must contain a field named '{name}'.",
                          ArgumentName=name)
    secret, principal = await iam.lookup_key(ctx, access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key)
    expected = base64.b64encode(hmac.new(secret.encode(), fields["policy"].encode(), hashlib.sha1).digest())
    if not hmac.compare_digest(expected, fields["signature"].encode("utf-8", "replace")):
        raise S3Error("SignatureDoesNotMatch")
    return principal


async def _verify(ctx: Context, fields: dict[str, str]) -> iam.Principal:
    """The policy's signature (SigV4, or SigV2 with ``AWSAccessKeyId``); returns who
    signed it. A form with neither a policy nor a signature is anonymous."""
    if "awsaccesskeyid" in fields:
        return await _verify_v2(ctx, fields)
    if not any(f in fields for f in ("policy", "x-amz-signature", "x-amz-credential", "signature")):
        return iam.ANONYMOUS
    if fields.get("x-amz-algorithm") != "AWS4-HMAC-SHA256" or "policy" not in fields:
        raise S3Error("InvalidRequest" if "policy" in fields else "AccessDenied",
                      "Only AWS4-HMAC-SHA256 and AWS signed policies are supported.")
    try:
        access_key, date, region, service, terminal = fields["x-amz-credential"].split("/")
        signature = fields["x-amz-signature"]
        base64.b64decode(fields["policy"], validate=True)
    except (KeyError, ValueError, binascii.Error):
        raise S3Error("InvalidArgument", "The POST form's credential, signature or policy is malformed.") from None
    secret, principal = await iam.lookup_key(ctx, access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key)
    key = derive_signing_key(secret, date, region, service)
    expected = hmac.new(key, fields["policy"].encode(), hashlib.sha256).hexdigest()
    if terminal != "aws4_request" or not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise S3Error("SignatureDoesNotMatch")
    if region != ctx.region:
        raise S3Error("AuthorizationQueryParametersError", f"Error parsing the X-Amz-Credential parameter; the "
                      f"region '{region}' is wrong; expecting '{ctx.region}'", Region=ctx.region)
    return principal
