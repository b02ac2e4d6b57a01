"""Canned bucket ACLs: chosen at CreateBucket (x-amz-acl) or with PutBucketAcl, read
with GetBucketAcl as an AccessControlPolicy document, as S3 renders them."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from quart import Response

from frontend import s3xml
from frontend.context import Context, empty_response, meta_call, read_body, xml_response
from frontend.errors import S3Error

CANNED = ("private", "public-read", "authenticated-read")
_GROUPS = {"http://acs.amazonaws.com/groups/global/AllUsers": "public-read",
           "http://acs.amazonaws.com/groups/global/AuthenticatedUsers": "authenticated-read"}
_XSI = "http://www.w3.org/2001/XMLSchema-instance"


def canned_acl(request: Any) -> str:
    value = request.headers.get("x-amz-acl", "private")
    if value not in CANNED:
        raise S3Error("InvalidArgument", f"Unsupported canned ACL: {value} (supported: {', '.join(CANNED)})",
                      ArgumentName="x-amz-acl", ArgumentValue=value)
    return value


def _grant_user(user: str, permission: str) -> str:
    return (f'<Grant><Grantee xmlns:xsi="{_XSI}" xsi:type="CanonicalUser"><ID>{escape(user)}</ID>'
            f"<DisplayName>{escape(user)}</DisplayName></Grantee><Permission>{permission}</Permission></Grant>")


def _grant_group(uri: str) -> str:
    return (f'<Grant><Grantee xmlns:xsi="{_XSI}" xsi:type="Group"><URI>{uri}</URI></Grantee>'
            "<Permission>READ</Permission></Grant>")


async def get_bucket_acl(ctx: Context, bucket: str) -> Response:
    info = await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket}))
    grants_reply = await meta_call(ctx.meta.read({"q": "bucket_grants", "bucket": bucket}))
    owner = info["owner"]
    grants = [_grant_user(owner, "FULL_CONTROL")]
    names = {"read": "READ", "list": "READ", "write": "WRITE", "full": "FULL_CONTROL"}
    grants += [_grant_user(user, names[perm]) for user, perm in grants_reply["grants"]]
    grants += [_grant_group(uri) for uri, canned in _GROUPS.items() if canned == info["acl"]]
    body = (f'{s3xml.HEAD}<AccessControlPolicy xmlns="{s3xml.NS}"><Owner><ID>{escape(owner)}</ID>'
            f'<DisplayName>{escape(owner)}</DisplayName></Owner><AccessControlList>{"".join(grants)}'
            "</AccessControlList></AccessControlPolicy>")
    return xml_response(body.encode())


async def put_bucket_acl(ctx: Context, request: Any, bucket: str) -> Response:
    root = s3xml.parse(await read_body(request, s3xml.MAX_XML_BODY))
    if root is None:
        canned = canned_acl(request)
    else:  # an AccessControlPolicy: accepted when it says what a canned ACL says
        if s3xml.local(root.tag) != "AccessControlPolicy":
            raise S3Error("MalformedXML")
        canned = "private"
        for element in root.iter():
            if s3xml.local(element.tag) == "URI" and (element.text or "").strip() in _GROUPS:
                canned = _GROUPS[(element.text or "").strip()]
    await meta_call(ctx.meta.write({"op": "set_bucket_acl", "bucket": bucket, "acl": canned}))
    return empty_response()
