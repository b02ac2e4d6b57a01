"""ACLs: the x-amz-acl and x-amz-grant-* headers of writes, Get/PutBucketAcl and
Get/PutObjectAcl with S3's AccessControlPolicy documents. The state machine resolves
grantees (canonical ids, e-mail addresses) and enforces the ownership rule and public
access block (``raftmeta.sm.acls``); here requests are parsed and answers rendered."""

from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import escape

from quart import Response

from core import acl
from frontend import s3xml
from frontend.context import Context, empty_response, meta_call, read_body, version_headers, version_param, xml_response
from frontend.errors import S3Error

_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_HEADER_GRANTEE = re.compile(r'\s*(id|emailAddress|uri)\s*=\s*"?([^",]*)"?\s*(?:,|$)', re.IGNORECASE)


def canned_spec(value: str) -> dict[str, Any]:
    if value not in acl.CANNED:
        raise S3Error("InvalidArgument", f"Unsupported canned ACL: {value}", ArgumentName="x-amz-acl",
                      ArgumentValue=value)
    return {"canned": value}


def _header_grantee(text: str) -> list[list[str]]:
    out: list[list[str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _HEADER_GRANTEE.match(text, pos)
        if not match or match.end() == pos:
            raise S3Error("InvalidArgument", "Invalid grant header value", ArgumentValue=text)
        kind, value = match.group(1).lower(), match.group(2).strip()
        if kind == "uri":
            group = acl.group_of(value)
            if group is None:
                raise S3Error("InvalidArgument", "Invalid group uri", ArgumentName="uri", ArgumentValue=value)
            out.append(["group", group])
        else:
            out.append(["id" if kind == "id" else "email", value])
        pos = match.end()
    return out


def request_acl(request: Any) -> dict[str, Any] | None:
    """The ACL a write asks for: x-amz-acl, or x-amz-grant-* headers (not both, as S3
    says); None when it names none (the default, private)."""
    canned = request.headers.get("x-amz-acl")
    grants = []
    for header, permission in acl.GRANT_HEADERS.items():
        value = request.headers.get(header)
        if value is not None:
            grants += [[kind, who, permission] for kind, who in _header_grantee(value)]
    if canned is not None and grants:
        raise S3Error("InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed")
    if canned is not None:
        return canned_spec(canned.strip())
    return {"grants": grants} if grants else None


def write_fields(request: Any) -> dict[str, Any]:
    """What a new version's metadata carries for ``acls.settle_object``: its ACL as asked
    for and its writer."""
    return {"acl_spec": request_acl(request), "writer": request.principal.user}


# ---------------------------------------------------------------------- documents


def _grantee(kind: str, who: str) -> str:
    if kind == "group":
        return f'<Grantee xmlns:xsi="{_XSI}" xsi:type="Group"><URI>{acl.GROUPS[who]}</URI></Grantee>'
    return (f'<Grantee xmlns:xsi="{_XSI}" xsi:type="CanonicalUser"><ID>{acl.canonical_id(who)}</ID>'
            f"<DisplayName>{escape(who)}</DisplayName></Grantee>")


def render(owner: str, grants: list[list[Any]]) -> bytes:
    """An AccessControlPolicy document: group grants first, then users' (each in the
    order they were given)."""
    ordered = [g for g in grants if g[0] == "group"] + [g for g in grants if g[0] != "group"]
    body = "".join(f"<Grant>{_grantee(kind, who)}<Permission>{perm}</Permission></Grant>"
                   for kind, who, perm in ordered)
    return (f'{s3xml.HEAD}<AccessControlPolicy xmlns="{s3xml.NS}"><Owner><ID>{acl.canonical_id(owner)}</ID>'
            f"<DisplayName>{escape(owner)}</DisplayName></Owner><AccessControlList>{body}</AccessControlList>"
            "</AccessControlPolicy>").encode()


def _child(element: Any, name: str) -> Any:
    return next((c for c in element if s3xml.local(c.tag) == name), None)


def _text(element: Any, name: str) -> str | None:
    child = _child(element, name)
    return None if child is None else (child.text or "").strip()


def parse_policy(root: Any) -> dict[str, Any]:
    """An AccessControlPolicy document -> grants to resolve (MalformedACLError as S3)."""
    malformed = S3Error("MalformedACLError", "The XML you provided was not well-formed or did not validate "
                        "against our published schema")
    if s3xml.local(root.tag) != "AccessControlPolicy":
        raise malformed
    owner = _child(root, "Owner")
    listing = _child(root, "AccessControlList")
    if listing is None:
        raise malformed
    grants: list[list[str]] = []
    for grant in listing:
        if s3xml.local(grant.tag) != "Grant":
            raise malformed
        grantee, permission = _child(grant, "Grantee"), _text(grant, "Permission")
        if grantee is None or permission not in acl.PERMISSIONS:
            raise malformed
        kind = next((v for k, v in grantee.attrib.items() if s3xml.local(k) == "type"), "")
        if kind == "CanonicalUser" and _text(grantee, "ID"):
            grants.append(["id", _text(grantee, "ID") or "", permission])
        elif kind == "AmazonCustomerByEmail" and _text(grantee, "EmailAddress"):
            grants.append(["email", _text(grantee, "EmailAddress") or "", permission])
        elif kind == "Group" and _text(grantee, "URI"):
            group = acl.group_of(_text(grantee, "URI") or "")
            if group is None:
                raise S3Error("InvalidArgument", "Invalid group uri", ArgumentName="Group/URI",
                              ArgumentValue=_text(grantee, "URI"))
            grants.append(["group", group, permission])
        else:
            raise malformed
    return {"grants": grants, "owner_id": _text(owner, "ID") if owner is not None else None}


async def _put_spec(request: Any) -> dict[str, Any]:
    """PutBucketAcl / PutObjectAcl: headers or a document, exactly one of them."""
    root = s3xml.parse(await read_body(request, s3xml.MAX_XML_BODY))
    from_headers = request_acl(request)
    if root is not None and from_headers is not None:
        raise S3Error("UnexpectedContent", "This request does not support content")
    if root is not None:
        return parse_policy(root)
    if from_headers is None:
        raise S3Error("MissingSecurityHeader", "Your request was missing a required header", MissingHeaderName="x-amz-acl")
    return from_headers


# ---------------------------------------------------------------------- handlers


async def get_bucket_acl(ctx: Context, bucket: str) -> Response:
    info = await meta_call(ctx.meta.read({"q": "bucket_acl", "bucket": bucket}))
    return xml_response(render(info["owner"], info["grants"]))


async def put_bucket_acl(ctx: Context, request: Any, bucket: str) -> Response:
    spec = await _put_spec(request)
    await meta_call(ctx.meta.write({"op": "set_bucket_acl", "bucket": bucket, "spec": spec}))
    return empty_response()


async def get_object_acl(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    reply = await meta_call(ctx.meta.read({"q": "object_acl", "bucket": bucket, "key": key,
                                           "vid": version_param(params), "check": request.object_check}))
    response = xml_response(render(reply["owner"], reply["grants"]))
    response.headers.update(version_headers(reply["vid"] if reply.get("versioned") else None))
    return response


async def put_object_acl(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    spec = await _put_spec(request)
    reply = await meta_call(ctx.meta.write({
        "op": "set_object_acl", "bucket": bucket, "key": key, "vid": version_param(params), "spec": spec,
        "user": request.principal.user, "granted": request.object_check is None}))
    return empty_response(headers=version_headers(reply.get("vid") if params.get("versionId") else None))
