"""Small S3 exactness points against a real cluster, with boto3: bucket tagging,
x-amz-tagging on PutObject and CreateMultipartUpload, ListBuckets paging, the
x-amz-expiration header of lifecycle-matched objects, x-amz-expected-bucket-owner,
Content-Encoding as sent, and a malformed Content-Length answered (not cut off)."""

from __future__ import annotations

import datetime
import email.utils
import re
import socket
import time

import pytest
from botocore.exceptions import ClientError

from core.acl import canonical_id
from tests.cluster.test_access import new_user

pytestmark = pytest.mark.cluster


def err(exc: pytest.ExceptionInfo) -> tuple[int, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


# ---------------------------------------------------------------- bucket tagging


def test_bucket_tagging_round_trip(s3, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_tagging(Bucket=bucket)
    assert err(exc) == (404, "NoSuchTagSet")
    tags = [{"Key": "zeta", "Value": "1"}, {"Key": "Alpha", "Value": ""}]
    assert s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags})["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == sorted(tags, key=lambda t: t["Key"])
    assert s3.delete_bucket_tagging(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_tagging(Bucket=bucket)
    assert err(exc) == (404, "NoSuchTagSet")


@pytest.mark.parametrize("tags", [
    [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}],
    [{"Key": "aws:reserved", "Value": "1"}],
    [{"Key": "k" * 129, "Value": "1"}],
    [{"Key": f"k{i}", "Value": "v"} for i in range(51)],
])
def test_bucket_tagging_refuses_bad_tag_sets(s3, bucket: str, tags: list[dict[str, str]]) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags})
    assert err(exc) == (400, "InvalidTag")


def test_bucket_tagging_is_the_owners(s3, cluster, bucket: str) -> None:
    _, other = new_user(cluster, "tagless")
    for call in (lambda: other.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}),
                 lambda: other.get_bucket_tagging(Bucket=bucket), lambda: other.delete_bucket_tagging(Bucket=bucket)):
        with pytest.raises(ClientError) as exc:
            call()
        assert err(exc) == (403, "AccessDenied")


# ---------------------------------------------------------------- object tags on writes


def test_x_amz_tagging_on_put_and_multipart(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="p", Body=b"x", Tagging="foo=bar&bar")
    assert s3.get_object_tagging(Bucket=bucket, Key="p")["TagSet"] == [
        {"Key": "bar", "Value": ""}, {"Key": "foo", "Value": "bar"}]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="m", Tagging="Hello=World&foo=bar")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="m", UploadId=upload_id, PartNumber=1, Body=b"abc")
    s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=upload_id,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="m")["TagSet"] == [
        {"Key": "Hello", "Value": "World"}, {"Key": "foo", "Value": "bar"}]
    assert s3.head_object(Bucket=bucket, Key="m")["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    with pytest.raises(ClientError) as exc:
        s3.create_multipart_upload(Bucket=bucket, Key="m2", Tagging="a=1&a=2")
    assert err(exc) == (400, "InvalidTag")


# ---------------------------------------------------------------- ListBuckets paging


def test_list_buckets_pages(s3) -> None:
    names = [f"page-{i}-{int(time.time())}" for i in range(3)]
    for name in names:
        s3.create_bucket(Bucket=name)
    prefix = names[0][:5]
    seen, token = [], None
    while True:
        page = s3.list_buckets(MaxBuckets=2, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
        assert len(page["Buckets"]) <= 2 and page["Prefix"] == prefix
        seen += [b["Name"] for b in page["Buckets"]]
        token = page.get("ContinuationToken")
        if not token:
            break
    assert [n for n in seen if n in names] == sorted(names)
    assert all(n.startswith(prefix) for n in seen)
    assert "ContinuationToken" not in s3.list_buckets()  # unpaged: every bucket at once
    for bad in ({"MaxBuckets": 10001}, {"ContinuationToken": "%%%"}):  # (boto3 refuses 0 itself)
        with pytest.raises(ClientError) as exc:
            s3.list_buckets(**bad)
        assert err(exc) == (400, "InvalidArgument"), bad


# ---------------------------------------------------------------- x-amz-expiration


EXPIRATION = re.compile(r'expiry-date="(.+)", rule-id="(.*)"')


def _expiry(headers: dict[str, str]) -> tuple[datetime.datetime, str] | None:
    found = EXPIRATION.fullmatch(headers.get("x-amz-expiration", ""))
    return (email.utils.parsedate_to_datetime(found.group(1)), found.group(2)) if found else None


def test_expiration_header_on_put_head_and_get(s3, bucket: str) -> None:
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "short", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 1}},
        {"ID": "long", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 30}},
        {"ID": "tagged", "Status": "Enabled", "Filter": {"Tag": {"Key": "t", "Value": "1"}},
         "Expiration": {"Days": 3}},
        {"ID": "off", "Status": "Disabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}},
    ]})
    put = s3.put_object(Bucket=bucket, Key="logs/a", Body=b"x")["ResponseMetadata"]["HTTPHeaders"]
    when, rule = _expiry(put)
    assert rule == "short"  # the earliest of the matching enabled rules
    created = s3.head_object(Bucket=bucket, Key="logs/a")["LastModified"]
    # one day after the write, rounded up to the next midnight UTC
    assert when.hour == when.minute == when.second == 0
    assert datetime.timedelta(days=1) <= when - created < datetime.timedelta(days=2)
    head = s3.head_object(Bucket=bucket, Key="logs/a")["ResponseMetadata"]["HTTPHeaders"]
    get = s3.get_object(Bucket=bucket, Key="logs/a")["ResponseMetadata"]["HTTPHeaders"]
    assert _expiry(head) == _expiry(get) == (when, "short")
    s3.put_object(Bucket=bucket, Key="other", Body=b"x")
    assert _expiry(s3.head_object(Bucket=bucket, Key="other")["ResponseMetadata"]["HTTPHeaders"])[1] == "long"
    s3.put_object_tagging(Bucket=bucket, Key="other", Tagging={"TagSet": [{"Key": "t", "Value": "1"}]})
    assert _expiry(s3.head_object(Bucket=bucket, Key="other")["ResponseMetadata"]["HTTPHeaders"])[1] == "tagged"
    s3.delete_bucket_lifecycle(Bucket=bucket)
    assert "x-amz-expiration" not in s3.head_object(Bucket=bucket, Key="other")["ResponseMetadata"]["HTTPHeaders"]


# ---------------------------------------------------------------- x-amz-expected-bucket-owner


def test_expected_bucket_owner(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", ExpectedBucketOwner=canonical_id("root"))
    s3.list_objects_v2(Bucket=bucket, ExpectedBucketOwner="root")
    for call in (lambda: s3.list_objects_v2(Bucket=bucket, ExpectedBucketOwner="123456789012"),
                 lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"y", ExpectedBucketOwner=canonical_id("x")),
                 lambda: s3.get_object(Bucket=bucket, Key="k", ExpectedBucketOwner="someone")):
        with pytest.raises(ClientError) as exc:
            call()
        assert err(exc) == (403, "AccessDenied")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


# ---------------------------------------------------------------- bytes on the wire


def test_content_encoding_is_kept_as_sent_without_aws_chunked(s3, bucket: str) -> None:
    for sent, kept in (("deflate, gzip", "deflate, gzip"), ("gzip, aws-chunked", "gzip"),
                       ("aws-chunked", None)):
        s3.put_object(Bucket=bucket, Key="e", Body=b"", ContentEncoding=sent)
        assert s3.head_object(Bucket=bucket, Key="e").get("ContentEncoding") == kept, sent


def test_an_empty_content_length_is_answered_400(s3, bucket: str) -> None:
    host, port = s3.meta.endpoint_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        # the body comes at once, before the answer: the server must read it, not reset
        sock.sendall(f"PUT /{bucket}/k HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n".encode() + b"b" * 50000)
        reply = b""
        while b"\r\n\r\n" not in reply:
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 400")
