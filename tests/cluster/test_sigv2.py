"""AWS Signature Version 2 against a real cluster: boto3 with signature_version 's3'
for the calls the V4 client makes, and V2 presigned URLs fetched with http.client."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from chaos.cluster import ACCESS_KEY, SECRET_KEY
from tests.cluster.test_access import admin

pytestmark = pytest.mark.cluster


def v2_client(cluster, access: str = ACCESS_KEY, secret: str = SECRET_KEY, index: int = 0):
    return boto3.client("s3", endpoint_url=cluster.endpoints[index], aws_access_key_id=access,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(signature_version="s3", retries={"max_attempts": 1}))


def fetch(url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None):
    """(status, body); http.client sends only the headers given (urllib would add a Content-Type)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        connection.request(method, f"{parts.path}?{parts.query}", body=data, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def test_v2_client_bucket_and_object_calls(cluster):
    s3 = v2_client(cluster)
    bucket = "sigv2-calls"
    s3.create_bucket(Bucket=bucket)
    s3.head_bucket(Bucket=bucket)
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] in (None, "us-east-1")

    body = b"hello sigv2"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket=bucket, Key="dir/a b+c.txt", Body=body, ContentMD5=md5, ContentType="text/plain",
                  Metadata={"who": "v2"})
    got = s3.get_object(Bucket=bucket, Key="dir/a b+c.txt", ResponseContentType="application/x-test")
    assert got["Body"].read() == body and got["ContentType"] == "application/x-test"
    assert s3.head_object(Bucket=bucket, Key="dir/a b+c.txt")["Metadata"] == {"who": "v2"}
    assert s3.get_object(Bucket=bucket, Key="dir/a b+c.txt", Range="bytes=0-4")["Body"].read() == b"hello"
    with pytest.raises(ClientError) as bad_md5:
        s3.put_object(Bucket=bucket, Key="x", Body=b"other", ContentMD5=md5)
    assert code(bad_md5) == "BadDigest"
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "dir/a b+c.txt"})
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == ["copy", "dir/a b+c.txt"]
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="dir/", Delimiter="/")
    assert [o["Key"] for o in listing["Contents"]] == ["dir/a b+c.txt"]

    # sub-resources: ?acl, ?versioning, ?versions, ?tagging, ?cors, ?delete (Content-MD5 or checksum)
    assert s3.get_bucket_acl(Bucket=bucket)["Grants"]
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    v1 = s3.put_object(Bucket=bucket, Key="ver", Body=b"1")["VersionId"]
    s3.put_object(Bucket=bucket, Key="ver", Body=b"2")
    assert s3.get_object(Bucket=bucket, Key="ver", VersionId=v1)["Body"].read() == b"1"
    assert len(s3.list_object_versions(Bucket=bucket, Prefix="ver")["Versions"]) == 2
    s3.put_object_tagging(Bucket=bucket, Key="copy", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="copy")["TagSet"] == [{"Key": "k", "Value": "v"}]
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{"AllowedMethods": ["GET"],
                                                                          "AllowedOrigins": ["*"]}]})
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"][0]["AllowedMethods"] == ["GET"]
    s3.delete_bucket_cors(Bucket=bucket)
    deleted = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "copy"}, {"Key": "dir/a b+c.txt"}]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["copy", "dir/a b+c.txt"]
    s3.delete_object(Bucket=bucket, Key="ver", VersionId=v1)


def test_v2_client_multipart(cluster):
    s3 = v2_client(cluster)
    bucket = "sigv2-multipart"
    s3.create_bucket(Bucket=bucket)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload]
    part = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=b"p" * 1000)
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="big", UploadId=upload)["Parts"]] == [1]
    s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == b"p" * 1000
    other = s3.create_multipart_upload(Bucket=bucket, Key="gone")["UploadId"]
    s3.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=other)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_v2_presigned_get_put_and_failures(cluster):
    s3 = v2_client(cluster)
    bucket = "sigv2-presigned"
    s3.create_bucket(Bucket=bucket)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)
    assert set(parse_qs(urlsplit(put_url).query)) == {"AWSAccessKeyId", "Signature", "Expires"}
    assert fetch(put_url, "PUT", b"presigned body")[0] == 200
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)
    assert fetch(get_url) == (200, b"presigned body")
    # another object, another verb: the signature covers the path and the verb
    assert fetch(get_url.replace("/k?", "/other?"))[0] == 403
    assert fetch(get_url, "DELETE")[0] == 403

    expired = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=-5)
    status, body = fetch(expired)
    assert status == 403 and b"<Code>AccessDenied</Code>" in body and b"Request has expired" in body

    wrong = v2_client(cluster, secret="not-the-secret")
    wrong_url = wrong.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)
    status, body = fetch(wrong_url)
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body
    with pytest.raises(ClientError) as denied:
        wrong.get_object(Bucket=bucket, Key="k")
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert code(denied) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as unknown:
        v2_client(cluster, access="NOSUCHKEY").list_buckets()
    assert code(unknown) == "InvalidAccessKeyId"


def test_v2_with_a_users_key(cluster):
    admin(cluster, "user", "add", "v2user")
    key = json.loads(admin(cluster, "key", "add", "v2user").stdout)
    s3 = v2_client(cluster, key["access_key"], key["secret_key"], index=1)
    s3.create_bucket(Bucket="sigv2-user")
    s3.put_object(Bucket="sigv2-user", Key="k", Body=b"mine")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "sigv2-user", "Key": "k"}, ExpiresIn=60)
    assert fetch(url) == (200, b"mine")
    with pytest.raises(ClientError) as denied:
        v2_client(cluster, key["access_key"], "wrong", index=1).get_object(Bucket="sigv2-user", Key="k")
    assert code(denied) == "SignatureDoesNotMatch"


def test_default_client_presigned_url(cluster, s3):
    # a client without signature_version presigns with whatever botocore picks (V2 query
    # parameters in some versions, V4 in others): either is served
    s3.create_bucket(Bucket="sigv2-default")
    s3.put_object(Bucket="sigv2-default", Key="k", Body=b"default")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "sigv2-default", "Key": "k"}, ExpiresIn=60)
    assert fetch(url) == (200, b"default")
