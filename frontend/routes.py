"""The route table: every request Cairn answers, in one ordered list.

A route names the S3 operation (AWS's name, and the metrics label), says how it matches
(method, level, the sub-resource query key, a header where that decides the operation),
the access it needs, and its handler. The first route that matches a request is its
route; each level ends with a catch-all, so every request has exactly one. Requests
that S3 defines but Cairn does not implement have routes too (answering NotImplemented,
as do methods S3 does not define on a resource: MethodNotAllowed), so a new feature is
a new handler on an existing row.

Needs, checked by ``dispatch`` (an object's key is checked first):
- ``open``: nothing, not even a signature (health, CORS preflight);
- ``admin``: admin credentials, from loopback only while the root credentials are the
  documented defaults (the operator endpoints under ``/_cairn/``);
- ``signed``: whoever signed, or anonymous; ``user``: a signed user;
- ``policy``: the browser form's signed policy, checked by its handler;
- ``read``, ``write``, ``list``, ``full``, ``any``, ``read_acp``, ``write_acp``: that
  access to the request's bucket (``iam.authorize``); ``read``, ``obj_read_acp`` and
  ``obj_write_acp`` leave to the object's ACL what the bucket access does not settle
  (``request.object_check``, carried by the handler's read or command).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from quart import Response

from core.acl import canonical_id
from frontend import iam, operator, sse
from frontend.context import Context, meta_call
from frontend.errors import S3Error
from frontend.names import check_key
from frontend.s3 import (
    acl,
    attributes,
    bucket,
    bucket_tagging,
    copy_object,
    cors,
    delete_objects,
    lifecycle,
    multipart,
    object_lock,
    ownership,
    post_object,
    service,
    tagging,
    versioning,
    versions,
)
from frontend.s3 import object as s3object  # (not the builtin)

OPERATOR_PREFIX = "_cairn"

# levels
SERVICE, OPERATOR, BUCKET, OBJECT = "service", "operator", "bucket", "object"
ALL_LEVELS = (SERVICE, OPERATOR, BUCKET, OBJECT)
# needs
OPEN, ADMIN, SIGNED, USER, POLICY = "open", "admin", "signed", "user", "policy"
READ, WRITE, LIST, FULL, ANY = "read", "write", "list", "full", "any"
READ_ACP, WRITE_ACP, OBJ_READ_ACP, OBJ_WRITE_ACP = "read_acp", "write_acp", "obj_read_acp", "obj_write_acp"
BUCKET_ACCESS = (READ, WRITE, LIST, FULL, ANY, READ_ACP, WRITE_ACP, OBJ_READ_ACP, OBJ_WRITE_ACP)

Handler = Callable[[Context, Any, str, str | None, dict[str, str]], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    operation: str
    levels: tuple[str, ...]
    methods: tuple[str, ...]  # () = any method
    need: str
    handler: Handler
    query: str | None = None  # a query key (sub-resource) the request carries
    value: str | None = None  # ... with this value
    header: str | None = None  # a header the request carries (lower case)
    bare: bool = False  # no query parameters at all
    key: str | None = None  # this exact key (operator paths)

    def matches(self, level: str, method: str, key: str | None, params: dict[str, str], headers: Any) -> bool:
        return (level in self.levels and (not self.methods or method in self.methods)
                and (self.query is None or self.query in params)
                and (self.value is None or params.get(self.query or "") == self.value)
                and (self.header is None or self.header in headers)
                and (not self.bare or not params) and (self.key is None or key == self.key))


def level(bucket_name: str, key: str | None) -> str:
    if not bucket_name:
        return SERVICE
    if bucket_name == OPERATOR_PREFIX:
        return OPERATOR
    return BUCKET if key is None else OBJECT


def match(method: str, bucket_name: str, key: str | None, params: dict[str, str], headers: Any) -> Route:
    """The request's route: the first that matches (every level ends with a catch-all)."""
    where = level(bucket_name, key)
    return next(r for r in _BY_LEVEL[where] if r.matches(where, method, key, params, headers))


# ---------------------------------------------------------------------- handlers


def _refuse(code: str, message: str | None = None) -> Handler:
    async def refuse(ctx: Context, request: Any, b: str, k: str | None, p: dict[str, str]) -> Response:
        raise S3Error(code, message)
    return refuse


def _not_implemented(sub: str) -> Handler:
    return _refuse("NotImplemented", f"The {sub} sub-resource is not implemented yet.")


async def _operator(ctx: Context, request: Any, b: str, k: str | None, p: dict[str, str]) -> Response:
    return await operator.serve(ctx, request, k or "")


def _route(operation: str, level_: str, methods: str, need: str, handler: Handler, **match: Any) -> Route:
    return Route(operation, (level_,), tuple(methods.split()), need, handler, **match)


_MNA = _refuse("MethodNotAllowed")
# Sub-resources of an object that S3 defines and Cairn does not implement (yet).
OBJECT_UNSUPPORTED = ("uploads", "torrent", "restore", "select")
# Bucket sub-resources S3 defines and Cairn does not implement (yet): each method S3 has
# for it, with AWS's operation names (reads need list, changes the owner's full control).
BUCKET_UNSUPPORTED: tuple[tuple[str, str, str], ...] = tuple(
    (sub, method, name) for sub, names in (
        ("policy", ("GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy")),
        ("policyStatus", ("GetBucketPolicyStatus", None, None)),
        ("website", ("GetBucketWebsite", "PutBucketWebsite", "DeleteBucketWebsite")),
        ("replication", ("GetBucketReplication", "PutBucketReplication", "DeleteBucketReplication")),
        ("encryption", ("GetBucketEncryption", "PutBucketEncryption", "DeleteBucketEncryption")),
        ("notification", ("GetBucketNotificationConfiguration", "PutBucketNotificationConfiguration", None)),
        ("logging", ("GetBucketLogging", "PutBucketLogging", None)),
        ("accelerate", ("GetBucketAccelerateConfiguration", "PutBucketAccelerateConfiguration", None)),
        ("requestPayment", ("GetBucketRequestPayment", "PutBucketRequestPayment", None)),
        ("analytics", ("GetBucketAnalyticsConfiguration", "PutBucketAnalyticsConfiguration",
                       "DeleteBucketAnalyticsConfiguration")),
        ("metrics", ("GetBucketMetricsConfiguration", "PutBucketMetricsConfiguration",
                     "DeleteBucketMetricsConfiguration")),
        ("inventory", ("GetBucketInventoryConfiguration", "PutBucketInventoryConfiguration",
                       "DeleteBucketInventoryConfiguration")),
        ("intelligent-tiering", ("GetBucketIntelligentTieringConfiguration",
                                 "PutBucketIntelligentTieringConfiguration",
                                 "DeleteBucketIntelligentTieringConfiguration")),
        ("metadataTable", ("GetBucketMetadataTableConfiguration", "CreateBucketMetadataTableConfiguration",
                           "DeleteBucketMetadataTableConfiguration")),
    ) for method, name in zip(("GET", "PUT", "DELETE"), names, strict=True) if name is not None)

ROUTES: tuple[Route, ...] = (
    # ------------------------------------------------------------------ before any signature
    _route("Admin", OPERATOR, "", OPEN, _operator, key="health"),
    Route("Preflight", ALL_LEVELS, ("OPTIONS",), OPEN, lambda c, r, b, k, p: cors.preflight(c, r, b)),
    Route("Admin", (OPERATOR,), (), ADMIN, _operator),
    # ------------------------------------------------------------------ service
    _route("ListBuckets", SERVICE, "GET", USER, lambda c, r, b, k, p: service.list_buckets(c, r, p)),
    _route("MethodNotAllowed", SERVICE, "", SIGNED, _MNA),
    # ------------------------------------------------------------------ bucket
    _route("CreateBucket", BUCKET, "PUT", USER, lambda c, r, b, k, p: bucket.create_bucket(c, r, b), bare=True),
    _route("PostObject", BUCKET, "POST", POLICY, lambda c, r, b, k, p: post_object.presigned_post(c, r, b),
           bare=True),
    _route("PutBucketCors", BUCKET, "PUT", FULL, lambda c, r, b, k, p: cors.put_cors(c, r, b), query="cors"),
    _route("GetBucketCors", BUCKET, "GET", FULL, lambda c, r, b, k, p: cors.get_cors(c, b), query="cors"),
    _route("DeleteBucketCors", BUCKET, "DELETE", FULL, lambda c, r, b, k, p: cors.delete_cors(c, b), query="cors"),
    _route("MethodNotAllowed", BUCKET, "", FULL, _MNA, query="cors"),
    _route("GetBucketAcl", BUCKET, "GET", READ_ACP, lambda c, r, b, k, p: acl.get_bucket_acl(c, b), query="acl"),
    _route("PutBucketAcl", BUCKET, "PUT", WRITE_ACP, lambda c, r, b, k, p: acl.put_bucket_acl(c, r, b), query="acl"),
    _route("GetBucketOwnershipControls", BUCKET, "GET", FULL, lambda c, r, b, k, p: ownership.get_ownership(c, b),
           query="ownershipControls"),
    _route("PutBucketOwnershipControls", BUCKET, "PUT", FULL,
           lambda c, r, b, k, p: ownership.put_ownership(c, r, b), query="ownershipControls"),
    _route("DeleteBucketOwnershipControls", BUCKET, "DELETE", FULL,
           lambda c, r, b, k, p: ownership.delete_ownership(c, b), query="ownershipControls"),
    _route("MethodNotAllowed", BUCKET, "", FULL, _MNA, query="ownershipControls"),
    _route("GetPublicAccessBlock", BUCKET, "GET", FULL,
           lambda c, r, b, k, p: ownership.get_public_access_block(c, b), query="publicAccessBlock"),
    _route("PutPublicAccessBlock", BUCKET, "PUT", FULL,
           lambda c, r, b, k, p: ownership.put_public_access_block(c, r, b), query="publicAccessBlock"),
    _route("DeletePublicAccessBlock", BUCKET, "DELETE", FULL,
           lambda c, r, b, k, p: ownership.delete_public_access_block(c, b), query="publicAccessBlock"),
    _route("MethodNotAllowed", BUCKET, "", FULL, _MNA, query="publicAccessBlock"),
    # HEAD ignores sub-resources, but naming the ACL takes full control, as it always has
    _route("HeadBucket", BUCKET, "HEAD", FULL, lambda c, r, b, k, p: bucket.head_bucket(c, b), query="acl"),
    _route("HeadBucket", BUCKET, "HEAD", ANY, lambda c, r, b, k, p: bucket.head_bucket(c, b)),
    _route("DeleteBucket", BUCKET, "DELETE", FULL, lambda c, r, b, k, p: bucket.delete_bucket(c, b), bare=True),
    _route("GetBucketLocation", BUCKET, "GET", ANY, lambda c, r, b, k, p: bucket.get_location(c, b),
           query="location"),
    _route("GetBucketVersioning", BUCKET, "GET", ANY, lambda c, r, b, k, p: versioning.get_versioning(c, b),
           query="versioning"),
    _route("PutBucketVersioning", BUCKET, "PUT", FULL, lambda c, r, b, k, p: versioning.put_versioning(c, r, b),
           query="versioning"),
    _route("PutBucketLifecycleConfiguration", BUCKET, "PUT", FULL,
           lambda c, r, b, k, p: lifecycle.put_lifecycle(c, r, b), query="lifecycle"),
    _route("GetBucketLifecycleConfiguration", BUCKET, "GET", FULL,
           lambda c, r, b, k, p: lifecycle.get_lifecycle(c, b), query="lifecycle"),
    _route("DeleteBucketLifecycle", BUCKET, "DELETE", FULL,
           lambda c, r, b, k, p: lifecycle.delete_lifecycle(c, b), query="lifecycle"),
    _route("MethodNotAllowed", BUCKET, "", FULL, _MNA, query="lifecycle"),
    _route("PutObjectLockConfiguration", BUCKET, "PUT", FULL,
           lambda c, r, b, k, p: object_lock.put_lock_config(c, r, b), query="object-lock"),
    _route("GetObjectLockConfiguration", BUCKET, "GET", FULL,
           lambda c, r, b, k, p: object_lock.get_lock_config(c, b), query="object-lock"),
    _route("MethodNotAllowed", BUCKET, "", FULL, _MNA, query="object-lock"),
    _route("PutBucketTagging", BUCKET, "PUT", FULL,
           lambda c, r, b, k, p: bucket_tagging.put_bucket_tagging(c, r, b), query="tagging"),
    _route("GetBucketTagging", BUCKET, "GET", FULL,
           lambda c, r, b, k, p: bucket_tagging.get_bucket_tagging(c, b), query="tagging"),
    _route("DeleteBucketTagging", BUCKET, "DELETE", FULL,
           lambda c, r, b, k, p: bucket_tagging.delete_bucket_tagging(c, b), query="tagging"),
    _route("MethodNotAllowed", BUCKET, "", FULL, _MNA, query="tagging"),
    _route("ListMultipartUploads", BUCKET, "GET", LIST, lambda c, r, b, k, p: multipart.list_uploads(c, b, p),
           query="uploads"),
    *(_route(name, BUCKET, method, LIST if method == "GET" else FULL, _not_implemented(sub), query=sub)
      for sub, method, name in BUCKET_UNSUPPORTED),
    *(_route("MethodNotAllowed", BUCKET, "", FULL, _MNA, query=sub) for sub in dict.fromkeys(
        sub for sub, _, _ in BUCKET_UNSUPPORTED)),
    _route("ListObjectVersions", BUCKET, "GET", LIST,
           lambda c, r, b, k, p: versions.list_object_versions(c, b, p), query="versions"),
    _route("ListObjectsV2", BUCKET, "GET", LIST, lambda c, r, b, k, p: bucket.list_objects(c, b, p),
           query="list-type", value="2"),
    _route("ListObjects", BUCKET, "GET", LIST, lambda c, r, b, k, p: bucket.list_objects(c, b, p)),
    _route("DeleteObjects", BUCKET, "POST", WRITE, lambda c, r, b, k, p: delete_objects.delete_objects(c, r, b),
           query="delete"),
    _route("MethodNotAllowed", BUCKET, "DELETE", FULL, _MNA),
    _route("MethodNotAllowed", BUCKET, "", FULL, _MNA, query="acl"),
    _route("MethodNotAllowed", BUCKET, "", ANY, _MNA, query="location"),
    _route("MethodNotAllowed", BUCKET, "", ANY, _MNA, query="versioning"),
    _route("MethodNotAllowed", BUCKET, "", LIST, _MNA, query="versions"),
    _route("MethodNotAllowed", BUCKET, "POST", WRITE, _MNA),
    _route("MethodNotAllowed", BUCKET, "", LIST, _MNA),
    # ------------------------------------------------------------------ object
    _route("CreateMultipartUpload", OBJECT, "POST", WRITE, lambda c, r, b, k, p: multipart.create(c, r, b, k),
           query="uploads"),
    _route("UploadPartCopy", OBJECT, "PUT", WRITE, multipart.upload_part, query="uploadId",
           header="x-amz-copy-source"),
    _route("UploadPart", OBJECT, "PUT", WRITE, multipart.upload_part, query="uploadId"),
    _route("CompleteMultipartUpload", OBJECT, "POST", WRITE,
           lambda c, r, b, k, p: multipart.complete(c, r, b, k, p["uploadId"]), query="uploadId"),
    _route("AbortMultipartUpload", OBJECT, "DELETE", WRITE,
           lambda c, r, b, k, p: multipart.abort(c, b, k, p["uploadId"]), query="uploadId"),
    _route("ListParts", OBJECT, "GET", WRITE, lambda c, r, b, k, p: multipart.list_parts(c, b, k, p),
           query="uploadId"),
    _route("MethodNotAllowed", OBJECT, "", WRITE, _MNA, query="uploadId"),
    _route("PutObjectTagging", OBJECT, "PUT", WRITE, lambda c, r, b, k, p: tagging.put_tagging(c, r, b, k, p),
           query="tagging"),
    _route("GetObjectTagging", OBJECT, "GET", READ, lambda c, r, b, k, p: tagging.get_tagging(c, r, b, k, p),
           query="tagging"),
    _route("DeleteObjectTagging", OBJECT, "DELETE", WRITE,
           lambda c, r, b, k, p: tagging.delete_tagging(c, b, k, p), query="tagging"),
    _route("PutObjectRetention", OBJECT, "PUT", WRITE, object_lock.put_retention, query="retention"),
    _route("GetObjectRetention", OBJECT, "GET", READ, object_lock.get_retention, query="retention"),
    _route("MethodNotAllowed", OBJECT, "", WRITE, _MNA, query="retention"),
    _route("PutObjectLegalHold", OBJECT, "PUT", WRITE, object_lock.put_legal_hold, query="legal-hold"),
    _route("GetObjectLegalHold", OBJECT, "GET", READ, object_lock.get_legal_hold, query="legal-hold"),
    _route("MethodNotAllowed", OBJECT, "", WRITE, _MNA, query="legal-hold"),
    _route("GetObjectAcl", OBJECT, "GET", OBJ_READ_ACP, acl.get_object_acl, query="acl"),
    _route("PutObjectAcl", OBJECT, "PUT", OBJ_WRITE_ACP, acl.put_object_acl, query="acl"),
    _route("MethodNotAllowed", OBJECT, "", OBJ_READ_ACP, _MNA, query="acl"),
    _route("MethodNotAllowed", OBJECT, "HEAD", READ, _MNA, query="tagging"),
    _route("MethodNotAllowed", OBJECT, "", WRITE, _MNA, query="tagging"),
    _route("GetObjectAttributes", OBJECT, "GET", READ, attributes.get_object_attributes, query="attributes"),
    _route("MethodNotAllowed", OBJECT, "", READ, _MNA, query="attributes"),
    *(_route("NotImplemented", OBJECT, methods, need, _not_implemented(sub), query=sub)
      for sub in OBJECT_UNSUPPORTED for methods, need in (("GET HEAD", READ), ("PUT DELETE", WRITE))),
    _route("CopyObject", OBJECT, "PUT", WRITE, lambda c, r, b, k, p: copy_object.copy_object(c, r, b, k),
           header="x-amz-copy-source"),
    _route("PutObject", OBJECT, "PUT", WRITE, s3object.put_object),
    _route("GetObject", OBJECT, "GET", READ, s3object.get_object),
    _route("HeadObject", OBJECT, "HEAD", READ, s3object.get_object),
    _route("DeleteObject", OBJECT, "DELETE", WRITE, s3object.delete_object),
    _route("MethodNotAllowed", OBJECT, "", WRITE, _MNA),
)
_BY_LEVEL = {where: tuple(r for r in ROUTES if where in r.levels) for where in ALL_LEVELS}


# ---------------------------------------------------------------------- dispatch


def _loopback(client: Any) -> bool:
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except (TypeError, ValueError, IndexError):
        return False


async def dispatch(ctx: Context, request: Any, route: Route, bucket_name: str, key: str | None,
                   params: dict[str, str]) -> Response:
    """Check what ``route`` needs of an authenticated request (``request.principal``),
    then run its handler."""
    principal = request.principal
    if route.need == ADMIN:
        if not principal.admin:
            raise S3Error("AccessDenied")
        if ctx.default_root and not _loopback(request.scope.get("client")):
            raise S3Error("AccessDenied", "Operator endpoints answer only loopback clients while the root "
                          "credentials are the documented defaults: set CAIRN_ROOT_ACCESS_KEY and CAIRN_ROOT_SECRET_KEY.")
    elif route.need == USER and principal.user is None:
        raise S3Error("AccessDenied")
    if key is not None and level(bucket_name, key) == OBJECT:
        check_key(key)  # before any access is read
    sse.check(route.operation, request.headers)  # refused, never ignored
    request.object_check = None  # what the object's own ACL must allow (``iam.authorize``)
    request.commit_as = None  # a deferred principal's authorization, checked by its commit
    if route.need in BUCKET_ACCESS:
        if principal.deferred and route.need == WRITE:
            request.commit_as = iam.commit_as(principal, bucket_name, route.need)
        else:
            request.object_check = await iam.authorize(ctx, principal, bucket_name, route.need)
    expected = request.headers.get("x-amz-expected-bucket-owner")
    if expected is not None and bucket_name and route.need != ADMIN:
        await _expected_owner(ctx, bucket_name, expected)
    try:
        return await route.handler(ctx, request, bucket_name, key, params)
    except S3Error as exc:
        await iam.settle(ctx, request, bucket_name)  # auth errors come first, as they would have
        if principal.deferred and exc.code == "InvalidAccessKeyId":  # its commit found the key gone
            raise iam.gone(principal.access_key) from None
        raise


async def _expected_owner(ctx: Context, bucket_name: str, expected: str) -> None:
    """x-amz-expected-bucket-owner: a bucket owned by someone else is 403 AccessDenied
    (AWS names the owner by account id; here its canonical id or its user name)."""
    reply = await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket_name}))
    owner = str(reply.get("owner") or "")
    if expected.strip() not in (owner, canonical_id(owner)):
        raise S3Error("AccessDenied")
