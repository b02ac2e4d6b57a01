"""The lean ASGI path (``frontend.lean``) answers exactly as Quart does: the same
requests sent raw to a frontend with the lean path (the default) and to one with
``--no-lean-path`` get the same status, headers (in order, but Date and the request id)
and body (but the request id)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import zlib
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from chaos.cluster import ACCESS_KEY, SECRET_KEY, Cluster
from tests.cluster.conftest import CHUNK
from tests.unit.chunked_helpers import UNSIGNED_TRAILER, crc32_b64, encode

CREDS = Credentials(ACCESS_KEY, SECRET_KEY)
VOLATILE = {"date", "x-amz-request-id"}
BUCKET = "lean-vs-quart"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    """One cluster, two frontends: the first with the lean path, the second without."""
    c = Cluster(tmp_path_factory.mktemp("lean"), chunk_size=CHUNK, frontends=2)
    c.procs["frontend2"].args.append("--no-lean-path")
    with c:
        s3 = c.s3(0)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="small", Body=b"0123456789" * 100)
        s3.put_object(Bucket=BUCKET, Key="big", Body=bytes(range(256)) * (3 * CHUNK // 256 + 7))
        yield c


def call(endpoint: str, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
         sign: bool = True, payload: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = dict(headers or {})
    url = endpoint + path
    if sign:
        headers["X-Amz-Content-SHA256"] = payload or hashlib.sha256(body).hexdigest()
        request = AWSRequest(method=method, url=url, headers=headers, data=body)
        SigV4Auth(CREDS, "s3", "us-east-1").add_auth(request)
        headers = dict(request.headers.items())
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def same(pair: Cluster, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
         **kw: object) -> tuple[int, list[tuple[str, str]], bytes]:
    """The request against both frontends: asserts equal answers, returns the lean one."""
    answers = []
    for endpoint in pair.endpoints:
        status, got, data = call(endpoint, method, path, headers, body, **kw)  # type: ignore[arg-type]
        got = [(k.lower(), v) for k, v in got if k.lower() not in VOLATILE]
        answers.append((status, got, re.sub(rb"<RequestId>[0-9A-F]*</RequestId>", b"", data)))
    assert answers[0] == answers[1]
    return answers[0]


@pytest.mark.parametrize("headers", [
    {}, {"Range": "bytes=10-99"}, {"Range": "bytes=-5"}, {"Range": "bytes=5000-"}, {"If-None-Match": "*"},
    {"If-Match": '"nope"'}, {"If-Modified-Since": "Sat, 01 Jan 2300 00:00:00 GMT"},
    {"x-amz-checksum-mode": "ENABLED"}, {"Origin": "https://example.com"},
])
def test_get_and_head(pair: Cluster, headers: dict[str, str]) -> None:
    for method in ("GET", "HEAD"):
        for key in ("small", "big"):
            same(pair, method, f"/{BUCKET}/{key}", headers)


def test_big_get_streams_whole_object(pair: Cluster) -> None:
    status, headers, body = same(pair, "GET", f"/{BUCKET}/big", {"Range": f"bytes=100-{2 * CHUNK + 5}"})
    assert status == 206 and len(body) == 2 * CHUNK + 5 - 100 + 1


def test_errors(pair: Cluster) -> None:
    assert same(pair, "GET", f"/{BUCKET}/missing")[0] == 404
    assert same(pair, "HEAD", f"/{BUCKET}/missing")[0] == 404
    assert same(pair, "GET", "/no-such-bucket-here/k")[0] == 404
    assert same(pair, "GET", f"/{BUCKET}/small", sign=False)[0] == 403  # AccessDenied, anonymous
    assert same(pair, "GET", f"/{BUCKET}/small", {"Authorization": "AWS4-HMAC-SHA256 nonsense"}, sign=False)[0] == 400
    assert same(pair, "GET", f"/{BUCKET}/small", {"Range": "bytes=99999-"})[0] == 416  # InvalidRange
    assert same(pair, "GET", f"/{BUCKET}/small?response-content-type=%ff")[0] == 400
    assert same(pair, "PUT", f"/{BUCKET}/bad-md5", {"Content-MD5": "AAAA"}, b"x")[0] == 400  # InvalidDigest


def test_puts(pair: Cluster) -> None:
    data = b"payload " * 512  # 4 KiB
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert same(pair, "PUT", f"/{BUCKET}/p1", {"Content-MD5": md5}, data)[0] == 200
    assert same(pair, "PUT", f"/{BUCKET}/p2", {"x-amz-checksum-crc32": crc32_b64(data),
                                               "x-amz-meta-colour": "blue", "Content-Type": "text/plain"}, data)[0] == 200
    wrong = base64.b64encode((zlib.crc32(data) ^ 1).to_bytes(4, "big")).decode()
    assert same(pair, "PUT", f"/{BUCKET}/p3", {"x-amz-checksum-crc32": wrong}, data)[0] == 400
    pair.s3(0).put_object(Bucket=BUCKET, Key="p4", Body=data)
    assert same(pair, "PUT", f"/{BUCKET}/p4", {"If-None-Match": "*"}, data)[0] == 412
    big = bytes(range(256)) * (CHUNK // 128 + 3)  # over two chunks
    assert same(pair, "PUT", f"/{BUCKET}/p5", {}, big)[0] == 200
    assert same(pair, "GET", f"/{BUCKET}/p5")[2] == big


def test_aws_chunked_put(pair: Cluster) -> None:
    chunks = [b"a" * 3000, b"b" * 1096]
    data = b"".join(chunks)
    body = encode(chunks, UNSIGNED_TRAILER, auth=None, trailers=[("x-amz-checksum-crc32", crc32_b64(data))])
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
               "x-amz-trailer": "x-amz-checksum-crc32"}
    assert same(pair, "PUT", f"/{BUCKET}/chunked", headers, body, payload=UNSIGNED_TRAILER)[0] == 200
    assert same(pair, "GET", f"/{BUCKET}/chunked")[2] == data
    short = {**headers, "x-amz-decoded-content-length": str(len(data) + 1)}
    assert same(pair, "PUT", f"/{BUCKET}/chunked2", short, body, payload=UNSIGNED_TRAILER)[0] == 400


def test_upload_part(pair: Cluster) -> None:
    s3 = pair.s3(0)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="mp")["UploadId"]
    part = b"p" * 4096
    status, headers, _ = same(pair, "PUT", f"/{BUCKET}/mp?partNumber=1&uploadId={quote(upload)}", {}, part)
    assert status == 200 and ("etag", f'"{hashlib.md5(part).hexdigest()}"') in headers
    assert same(pair, "PUT", f"/{BUCKET}/mp?partNumber=1&uploadId=nonexistent", {}, part)[0] == 404
    assert same(pair, "PUT", f"/{BUCKET}/mp?partNumber=0&uploadId={quote(upload)}", {}, part)[0] == 400
    s3.abort_multipart_upload(Bucket=BUCKET, Key="mp", UploadId=upload)


def test_presigned_get(pair: Cluster) -> None:
    answers = []
    for i in range(2):
        url = pair.s3(i).generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "small"})
        parts = urlsplit(url)
        status, headers, body = call(pair.endpoints[i], "GET", f"{parts.path}?{parts.query}", sign=False)
        answers.append((status, [(k, v) for k, v in headers if k.lower() not in VOLATILE], body))
    assert answers[0] == answers[1] and answers[0][0] == 200


def test_cold_routes_fall_through(pair: Cluster) -> None:
    """Routes the lean path does not serve (and paths it cannot parse) answer alike too."""
    same(pair, "GET", f"/{BUCKET}?list-type=2")
    same(pair, "GET", f"/{BUCKET}/small?tagging")
    same(pair, "DELETE", f"/{BUCKET}/p1")
    same(pair, "GET", f"/{BUCKET}/%ff%fe")
    same(pair, "GET", f"/{BUCKET}/small?x=%ff")
