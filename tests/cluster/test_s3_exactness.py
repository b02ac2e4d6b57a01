"""Small S3 exactness points against a real cluster, with boto3: bucket tagging,
x-amz-tagging on PutObject and CreateMultipartUpload, ListBuckets paging, the
x-amz-expiration header of lifecycle-matched objects, x-amz-expected-bucket-owner,
Content-Encoding as sent, a malformed Content-Length answered (not cut off),
``Expect: 100-continue`` answered by the app, CORS wildcards, a browser form's tagging."""

from __future__ import annotations

import datetime
import email.utils
import io
import re
import socket
import time

import pytest
import urllib3
from botocore.exceptions import ClientError

from core.acl import canonical_id
from tests.cluster.test_access import _post, new_user

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


# ---------------------------------------------------------------- Expect: 100-continue


def _head(sock: socket.socket) -> bytes:
    """One response head (status line and headers), read byte by byte: nothing after it."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        data = sock.recv(1)
        if not data:
            break
        head += data
    return head


def _expect_request(path: str, length: int) -> bytes:
    return f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n".encode()


def test_expect_100_continue_is_answered_by_the_app(s3, bucket: str) -> None:
    host, port = s3.meta.endpoint_url.removeprefix("http://").split(":")
    body = b"b" * 123
    # a bucket the anonymous client may not write: the 403 comes first, no 100 before it
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(_expect_request(f"/{bucket}/k", len(body)))
        head = _head(sock)
        assert head.startswith(b"HTTP/1.1 403 "), head
        # the client may never send its body: the connection ends after the answer, and says so
        assert b"\r\nconnection: close\r\n" in head.lower()
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
        rest = b""
        while (data := sock.recv(4096)) != b"":
            rest += data
        assert len(rest) == length and b"AccessDenied" in rest
    assert err(pytest.raises(ClientError, s3.head_object, Bucket=bucket, Key="k")) == (404, "404")

    s3.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(_expect_request(f"/{bucket}/k", len(body)))
        started = time.monotonic()
        assert _head(sock).startswith(b"HTTP/1.1 100 Continue\r\n")
        assert time.monotonic() - started < 0.5  # sent as the app reads, not after a client's wait
        sock.sendall(body)
        head = _head(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in head.lower(), head
        # the connection is kept: a second upload on it works the same
        sock.sendall(_expect_request(f"/{bucket}/k2", 3))
        assert _head(sock).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"abc")
        assert _head(sock).startswith(b"HTTP/1.1 200 ")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == body
    assert s3.get_object(Bucket=bucket, Key="k2")["Body"].read() == b"abc"


def test_expect_100_continue_early_answer_then_the_body_anyway(s3, bucket: str) -> None:
    """A client that sends its body after an early answer (curl does after a second) is
    read and dropped until the close, not reset, and the server serves the next one."""
    host, port = s3.meta.endpoint_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(_expect_request(f"/{bucket}-missing/k", 300_000))
        head = _head(sock)
        assert head.startswith((b"HTTP/1.1 403 ", b"HTTP/1.1 404 ")) and b"connection: close" in head.lower(), head
        sock.sendall(b"z" * 300_000)
        while sock.recv(65536) != b"":  # the rest of the answer, then the end (a reset would raise)
            pass
    s3.put_object(Bucket=bucket, Key="after", Body=b"x")


def test_boto3_uploads_with_expect_are_not_slowed(s3, bucket: str) -> None:
    """botocore sends ``Expect: 100-continue`` with file bodies and waits up to a second
    for the 100 before sending the body anyway: the 100 must come at once."""
    for size in (1, 2 * 1024 * 1024):
        started = time.monotonic()
        s3.put_object(Bucket=bucket, Key=f"f{size}", Body=io.BytesIO(b"q" * size))
        assert time.monotonic() - started < 0.9, size
        assert s3.head_object(Bucket=bucket, Key=f"f{size}")["ContentLength"] == size
    with pytest.raises(ClientError) as exc:  # an early answer, then the same client goes on
        s3.put_object(Bucket=bucket + "-nope", Key="x", Body=io.BytesIO(b"q"))
    assert err(exc) == (404, "NoSuchBucket")
    s3.put_object(Bucket=bucket, Key="again", Body=io.BytesIO(b"q"))


# ---------------------------------------------------------------- CORS wildcards


def _http(method: str, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
    return urllib3.request(method, url, headers=headers, retries=False, timeout=10)


def test_cors_wildcards_in_preflight_and_actual_requests(s3, bucket: str) -> None:
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    s3.put_object(Bucket=bucket, Key="o", Body=b"x", ACL="public-read")
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["http://*.example.com"], "AllowedMethods": ["GET", "PUT"],
         "AllowedHeaders": ["x-amz-*", "Content-Type"], "MaxAgeSeconds": 60},
        {"AllowedOrigins": ["start*end", "http://[::1]:8?"], "AllowedMethods": ["GET"]},
        {"AllowedOrigins": ["*"], "AllowedMethods": ["HEAD"]},
    ]})
    url = f"{s3.meta.endpoint_url}/{bucket}/o"

    def preflight(origin: str, method: str, headers: str = "") -> tuple[int, str | None, str | None]:
        sent = {"Origin": origin, "Access-Control-Request-Method": method,
                **({"Access-Control-Request-Headers": headers} if headers else {})}
        r = _http("OPTIONS", url, sent)
        return r.status, r.headers.get("Access-Control-Allow-Origin"), r.headers.get("Access-Control-Allow-Headers")

    assert preflight("http://www.example.com", "PUT", "X-Amz-Meta-A, content-type") == (
        200, "http://www.example.com", "x-amz-meta-a, content-type")
    assert preflight("http://a.b.example.com", "GET") == (200, "http://a.b.example.com", None)
    assert preflight("http://example.com", "GET")[0] == 403  # the * is between "http://" and ".example.com"
    assert preflight("https://www.example.com", "GET")[0] == 403
    assert preflight("http://www.example.com", "PUT", "x-other")[0] == 403  # no AllowedHeader matches
    assert preflight("startend", "GET")[:2] == (200, "startend")
    assert preflight("start-middle-end", "GET")[:2] == (200, "start-middle-end")
    assert preflight("0startend", "GET")[0] == 403
    assert preflight("http://[::1]:8?", "GET")[0] == 200  # ? and [ ] are themselves, no wildcards
    assert preflight("http://1:80", "GET")[0] == 403
    assert preflight("anything", "HEAD")[:2] == (200, "*")
    assert preflight("anything", "GET")[0] == 403

    r = _http("GET", url, {"Origin": "http://www.example.com"})
    assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "http://www.example.com"
    assert r.headers["Access-Control-Allow-Methods"] == "GET, PUT"
    r = _http("GET", url, {"Origin": "start12end"})
    assert r.headers["Access-Control-Allow-Origin"] == "start12end"
    r = _http("GET", url, {"Origin": "http://example.org"})
    assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
    r = _http("HEAD", url, {"Origin": "elsewhere"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("rule", [
    {"AllowedOrigins": ["http://*.*.example.com"], "AllowedMethods": ["GET"]},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["x-*-*"]},
])
def test_cors_refuses_two_wildcards(s3, bucket: str, rule: dict) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})
    assert err(exc) == (400, "InvalidRequest")
    assert "can not have more than one wildcard" in exc.value.response["Error"]["Message"]


# ---------------------------------------------------------------- browser forms' tagging


TAGGING = "<Tagging><TagSet><Tag><Key>0</Key><Value>0</Value></Tag><Tag><Key>b</Key><Value></Value></Tag></TagSet></Tagging>"


def test_post_form_tagging(s3, bucket: str) -> None:
    url = f"{s3.meta.endpoint_url}/{bucket}"
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    # anonymous (no policy)
    status, body = _post(url, {"key": "anon", "tagging": TAGGING}, "f", b"bar")
    assert status == 204, body
    assert s3.get_object_tagging(Bucket=bucket, Key="anon")["TagSet"] == [
        {"Key": "0", "Value": "0"}, {"Key": "b", "Value": ""}]
    # signed, the policy covering the field
    post = s3.generate_presigned_post(bucket, "signed", Fields={"tagging": TAGGING},
                                      Conditions=[["starts-with", "$tagging", ""]])
    status, body = _post(post["url"], post["fields"], "f", b"baz")
    assert status == 204, body
    assert s3.get_object_tagging(Bucket=bucket, Key="signed")["TagSet"] == [
        {"Key": "0", "Value": "0"}, {"Key": "b", "Value": ""}]
    assert s3.head_object(Bucket=bucket, Key="signed")["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    # no tagging field: no tags
    assert _post(url, {"key": "plain"}, "f", b"x")[0] == 204
    assert s3.get_object_tagging(Bucket=bucket, Key="plain")["TagSet"] == []
    # the object tag limits hold, and a refused form stores nothing
    eleven = "".join(f"<Tag><Key>k{i}</Key><Value>v</Value></Tag>" for i in range(11))
    for bad, code in ((f"<Tagging><TagSet>{eleven}</TagSet></Tagging>", b"InvalidTag"),
                      ("<Tagging><TagSet><Tag><Key>a</Key></Tag><Tag><Key>a</Key></Tag></TagSet></Tagging>",
                       b"InvalidTag"),
                      ("<Tagging><TagSet><Tag>", b"MalformedXML")):
        status, body = _post(url, {"key": "refused", "tagging": bad}, "f", b"x")
        assert status == 400 and code in body, body
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="refused")
