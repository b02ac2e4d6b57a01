"""The route table (frontend.routes): which S3 operation a request is and what access it
needs, for every route, including the requests answered NotImplemented or
MethodNotAllowed."""

from __future__ import annotations

import pytest

from frontend import routes
from frontend.routes import (
    ADMIN,
    ANY,
    FULL,
    LIST,
    OBJ_READ_ACP,
    OBJ_WRITE_ACP,
    OPEN,
    POLICY,
    READ,
    READ_ACP,
    SIGNED,
    USER,
    WRITE,
    WRITE_ACP,
)

COPY = {"x-amz-copy-source": "/src/key"}
NI, MNA = "NotImplemented", "MethodNotAllowed"

# (method, bucket, key, params, headers) -> (operation, need)
CASES: list[tuple[str, str, str | None, dict[str, str], dict[str, str], str, str]] = [
    # operator endpoints and preflight: before any signature
    ("GET", "_cairn", "health", {}, {}, "Admin", OPEN),
    ("HEAD", "_cairn", "health", {}, {}, "Admin", OPEN),
    ("OPTIONS", "_cairn", "health", {}, {}, "Admin", OPEN),
    ("OPTIONS", "", None, {}, {}, "Preflight", OPEN),
    ("OPTIONS", "b", None, {"cors": ""}, {}, "Preflight", OPEN),
    ("OPTIONS", "b", "k", {}, {}, "Preflight", OPEN),
    ("OPTIONS", "_cairn", "status", {}, {}, "Preflight", OPEN),
    ("GET", "_cairn", "status", {}, {}, "Admin", ADMIN),
    ("POST", "_cairn", "users", {}, {}, "Admin", ADMIN),
    ("GET", "_cairn", None, {}, {}, "Admin", ADMIN),
    # service
    ("GET", "", None, {}, {}, "ListBuckets", USER),
    ("GET", "", "x", {"acl": ""}, {}, "ListBuckets", USER),
    ("PUT", "", None, {}, {}, MNA, SIGNED),
    ("DELETE", "", None, {}, {}, MNA, SIGNED),
    # buckets
    ("PUT", "b", None, {}, {}, "CreateBucket", USER),
    ("POST", "b", None, {}, {}, "PostObject", POLICY),
    ("HEAD", "b", None, {}, {}, "HeadBucket", ANY),
    ("HEAD", "b", None, {"location": ""}, {}, "HeadBucket", ANY),
    ("HEAD", "b", None, {"acl": ""}, {}, "HeadBucket", FULL),
    ("DELETE", "b", None, {}, {}, "DeleteBucket", FULL),
    ("GET", "b", None, {}, {}, "ListObjects", LIST),
    ("GET", "b", None, {"prefix": "a", "delete": ""}, {}, "ListObjects", LIST),
    ("GET", "b", None, {"list-type": "2"}, {}, "ListObjectsV2", LIST),
    ("GET", "b", None, {"list-type": "1"}, {}, "ListObjects", LIST),
    ("GET", "b", None, {"location": ""}, {}, "GetBucketLocation", ANY),
    ("GET", "b", None, {"versioning": ""}, {}, "GetBucketVersioning", ANY),
    ("GET", "b", None, {"versions": "", "prefix": "a/"}, {}, "ListObjectVersions", LIST),
    ("PUT", "b", None, {"versions": ""}, {}, MNA, LIST),
    ("POST", "b", None, {"delete": "", "versions": ""}, {}, "DeleteObjects", WRITE),
    ("GET", "b", None, {"location": "", "versioning": ""}, {}, "GetBucketLocation", ANY),
    ("GET", "b", None, {"uploads": ""}, {}, "ListMultipartUploads", LIST),
    ("POST", "b", None, {"delete": ""}, {}, "DeleteObjects", WRITE),
    # DeleteObjects always needs write (it needed only "any" with ?location or ?versioning added)
    ("POST", "b", None, {"delete": "", "location": ""}, {}, "DeleteObjects", WRITE),
    ("POST", "b", None, {"delete": "", "versioning": ""}, {}, "DeleteObjects", WRITE),
    # bucket sub-resources
    ("PUT", "b", None, {"cors": ""}, {}, "PutBucketCors", FULL),
    ("GET", "b", None, {"cors": ""}, {}, "GetBucketCors", FULL),
    ("DELETE", "b", None, {"cors": ""}, {}, "DeleteBucketCors", FULL),
    ("GET", "b", None, {"cors": "", "acl": ""}, {}, "GetBucketCors", FULL),
    ("POST", "b", None, {"cors": ""}, {}, MNA, FULL),
    ("HEAD", "b", None, {"cors": ""}, {}, MNA, FULL),
    ("GET", "b", None, {"acl": ""}, {}, "GetBucketAcl", READ_ACP),
    ("PUT", "b", None, {"acl": ""}, {}, "PutBucketAcl", WRITE_ACP),
    ("GET", "b", None, {"acl": "", "location": ""}, {}, "GetBucketAcl", READ_ACP),
    # bucket sub-resources S3 has and Cairn does not (yet)
    ("GET", "b", None, {"policy": ""}, {}, "GetBucketPolicy", LIST),
    ("GET", "b", None, {"tagging": ""}, {}, "GetBucketTagging", FULL),
    ("PUT", "b", None, {"tagging": ""}, {}, "PutBucketTagging", FULL),
    ("DELETE", "b", None, {"tagging": ""}, {}, "DeleteBucketTagging", FULL),
    ("POST", "b", None, {"tagging": ""}, {}, MNA, FULL),
    ("GET", "b", None, {"website": ""}, {}, "GetBucketWebsite", LIST),
    ("GET", "b", None, {"replication": ""}, {}, "GetBucketReplication", LIST),
    ("GET", "b", None, {"encryption": ""}, {}, "GetBucketEncryption", LIST),
    ("GET", "b", None, {"notification": ""}, {}, "GetBucketNotificationConfiguration", LIST),
    ("GET", "b", None, {"logging": ""}, {}, "GetBucketLogging", LIST),
    ("GET", "b", None, {"ownershipControls": ""}, {}, "GetBucketOwnershipControls", FULL),
    ("PUT", "b", None, {"ownershipControls": ""}, {}, "PutBucketOwnershipControls", FULL),
    ("DELETE", "b", None, {"ownershipControls": ""}, {}, "DeleteBucketOwnershipControls", FULL),
    ("POST", "b", None, {"ownershipControls": ""}, {}, MNA, FULL),
    ("GET", "b", None, {"publicAccessBlock": ""}, {}, "GetPublicAccessBlock", FULL),
    ("PUT", "b", None, {"publicAccessBlock": ""}, {}, "PutPublicAccessBlock", FULL),
    ("DELETE", "b", None, {"publicAccessBlock": ""}, {}, "DeletePublicAccessBlock", FULL),
    ("POST", "b", None, {"publicAccessBlock": ""}, {}, MNA, FULL),
    ("GET", "b", None, {"policy": "", "list-type": "2"}, {}, "GetBucketPolicy", LIST),
    # versioning, lifecycle, object lock: configuring a bucket takes full control
    ("PUT", "b", None, {"lifecycle": ""}, {}, "PutBucketLifecycleConfiguration", FULL),
    ("GET", "b", None, {"lifecycle": ""}, {}, "GetBucketLifecycleConfiguration", FULL),
    ("DELETE", "b", None, {"lifecycle": ""}, {}, "DeleteBucketLifecycle", FULL),
    ("POST", "b", None, {"lifecycle": ""}, {}, MNA, FULL),
    ("PUT", "b", None, {"object-lock": ""}, {}, "PutObjectLockConfiguration", FULL),
    ("GET", "b", None, {"object-lock": ""}, {}, "GetObjectLockConfiguration", FULL),
    ("DELETE", "b", None, {"object-lock": ""}, {}, MNA, FULL),
    ("PUT", "b", "k", {"retention": "", "versionId": "v"}, {}, "PutObjectRetention", WRITE),
    ("GET", "b", "k", {"retention": ""}, {}, "GetObjectRetention", READ),
    ("DELETE", "b", "k", {"retention": ""}, {}, MNA, WRITE),
    ("PUT", "b", "k", {"legal-hold": ""}, {}, "PutObjectLegalHold", WRITE),
    ("GET", "b", "k", {"legal-hold": ""}, {}, "GetObjectLegalHold", READ),
    ("POST", "b", "k", {"legal-hold": ""}, {}, MNA, WRITE),
    # methods a bucket does not answer
    ("DELETE", "b", None, {"location": ""}, {}, MNA, FULL),
    ("DELETE", "b", None, {"prefix": ""}, {}, MNA, FULL),
    ("POST", "b", None, {"acl": ""}, {}, MNA, FULL),
    ("PATCH", "b", None, {"acl": ""}, {}, MNA, FULL),
    ("PUT", "b", None, {"location": ""}, {}, MNA, ANY),
    ("PUT", "b", None, {"versioning": ""}, {}, "PutBucketVersioning", FULL),
    ("POST", "b", None, {"versioning": ""}, {}, MNA, ANY),
    ("POST", "b", None, {"uploads": ""}, {}, MNA, WRITE),
    ("PUT", "b", None, {"policy": ""}, {}, "PutBucketPolicy", FULL),
    ("DELETE", "b", None, {"encryption": ""}, {}, "DeleteBucketEncryption", FULL),
    ("POST", "b", None, {"policy": ""}, {}, MNA, FULL),
    ("DELETE", "b", None, {"logging": ""}, {}, MNA, FULL),
    ("GET", "b", None, {"policyStatus": ""}, {}, "GetBucketPolicyStatus", LIST),
    *[(method, "b", None, {sub: ""}, {}, name, LIST if method == "GET" else FULL)
      for sub, method, name in routes.BUCKET_UNSUPPORTED],
    *[("PATCH", "b", None, {sub: ""}, {}, MNA, FULL) for sub in dict.fromkeys(s for s, _, _ in routes.BUCKET_UNSUPPORTED)],
    ("PATCH", "b", None, {}, {}, MNA, LIST),
    # objects
    ("PUT", "b", "k", {}, {}, "PutObject", WRITE),
    ("PUT", "b", "k", {}, COPY, "CopyObject", WRITE),
    ("GET", "b", "k", {}, {}, "GetObject", READ),
    ("GET", "b", "k", {"partNumber": "1", "response-content-type": "x"}, {}, "GetObject", READ),
    ("GET", "b", "k", {}, COPY, "GetObject", READ),
    ("HEAD", "b", "k", {}, {}, "HeadObject", READ),
    ("DELETE", "b", "k", {}, {}, "DeleteObject", WRITE),
    ("POST", "b", "k", {}, {}, MNA, WRITE),
    ("PATCH", "b", "k", {}, {}, MNA, WRITE),
    # multipart
    ("POST", "b", "k", {"uploads": ""}, {}, "CreateMultipartUpload", WRITE),
    ("POST", "b", "k", {"uploads": "", "uploadId": "u"}, {}, "CreateMultipartUpload", WRITE),
    ("PUT", "b", "k", {"uploadId": "u", "partNumber": "1"}, {}, "UploadPart", WRITE),
    ("PUT", "b", "k", {"uploadId": "u", "partNumber": "1"}, COPY, "UploadPartCopy", WRITE),
    ("POST", "b", "k", {"uploadId": "u"}, {}, "CompleteMultipartUpload", WRITE),
    ("DELETE", "b", "k", {"uploadId": "u"}, {}, "AbortMultipartUpload", WRITE),
    ("GET", "b", "k", {"uploadId": "u"}, {}, "ListParts", WRITE),
    ("HEAD", "b", "k", {"uploadId": "u"}, {}, MNA, WRITE),
    ("PUT", "b", "k", {"uploadId": "u", "tagging": ""}, {}, "UploadPart", WRITE),
    # object tagging
    ("PUT", "b", "k", {"tagging": ""}, {}, "PutObjectTagging", WRITE),
    ("GET", "b", "k", {"tagging": ""}, {}, "GetObjectTagging", READ),
    ("DELETE", "b", "k", {"tagging": ""}, {}, "DeleteObjectTagging", WRITE),
    ("HEAD", "b", "k", {"tagging": ""}, {}, MNA, READ),
    ("POST", "b", "k", {"tagging": ""}, {}, MNA, WRITE),
    ("PUT", "b", "k", {"tagging": "", "acl": ""}, COPY, "PutObjectTagging", WRITE),
    # object attributes
    ("GET", "b", "k", {"attributes": ""}, {}, "GetObjectAttributes", READ),
    ("GET", "b", "k", {"attributes": "", "versionId": "v"}, {}, "GetObjectAttributes", READ),
    ("HEAD", "b", "k", {"attributes": ""}, {}, MNA, READ),
    ("PUT", "b", "k", {"attributes": ""}, {}, MNA, READ),
    # object sub-resources S3 has and Cairn does not (yet): NotImplemented; other methods MethodNotAllowed
    *[(method, "b", "k", {sub: ""}, {}, NI, READ if method in ("GET", "HEAD") else WRITE)
      for sub in routes.OBJECT_UNSUPPORTED for method in ("GET", "HEAD", "PUT", "DELETE")],
    # object ACLs
    ("GET", "b", "k", {"acl": ""}, {}, "GetObjectAcl", OBJ_READ_ACP),
    ("PUT", "b", "k", {"acl": ""}, {}, "PutObjectAcl", OBJ_WRITE_ACP),
    ("PUT", "b", "k", {"acl": ""}, COPY, "PutObjectAcl", OBJ_WRITE_ACP),
    ("DELETE", "b", "k", {"acl": ""}, {}, MNA, OBJ_READ_ACP),
    ("POST", "b", "k", {"select": "", "select-type": "2"}, {}, MNA, WRITE),
    ("POST", "b", "k", {"restore": ""}, {}, MNA, WRITE),
    ("POST", "b", "k", {"acl": ""}, {}, MNA, OBJ_READ_ACP),
]


@pytest.mark.parametrize(("method", "bucket", "key", "params", "headers", "operation", "need"), CASES,
                         ids=[f"{c[0]} /{c[1]}/{c[2] or ''}?{'&'.join(c[3])}{' +copy' if c[4] else ''}" for c in CASES])
def test_operation_and_need(method: str, bucket: str, key: str | None, params: dict[str, str],
                            headers: dict[str, str], operation: str, need: str) -> None:
    route = routes.match(method, bucket, key, params, headers)
    assert (route.operation, route.need) == (operation, need)


def test_every_route_is_in_the_table() -> None:
    hit = {id(routes.match(m, b, k, p, h)) for m, b, k, p, h, _, _ in CASES}
    missed = [r for r in routes.ROUTES if id(r) not in hit]
    assert not missed, missed


def test_not_implemented_names_the_sub_resource() -> None:
    route = routes.match("GET", "b", "k", {"torrent": ""}, {})
    assert route.query == "torrent"
    route = routes.match("GET", "b", None, {"policy": ""}, {})
    assert route.query == "policy" and route.operation == "GetBucketPolicy"
