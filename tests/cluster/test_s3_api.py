"""The S3 API through boto3 with default settings (aws-chunked uploads with CRC32
trailers, SigV4), against a real multi-process cluster."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.cluster.conftest import CHUNK

pytestmark = pytest.mark.cluster


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def test_bucket_lifecycle(s3, s3b):
    s3.create_bucket(Bucket="life-cycle")
    assert "life-cycle" in [b["Name"] for b in s3b.list_buckets()["Buckets"]]
    s3b.head_bucket(Bucket="life-cycle")
    # us-east-1 (the cluster's region): re-creating your own bucket is a 200 that resets its ACL
    s3.put_bucket_acl(Bucket="life-cycle", ACL="public-read")
    s3.create_bucket(Bucket="life-cycle")
    grants = s3.get_bucket_acl(Bucket="life-cycle")["Grants"]
    assert not any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants), grants
    s3.put_object(Bucket="life-cycle", Key="k", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3b.delete_bucket(Bucket="life-cycle")
    assert code(e) == "BucketNotEmpty"
    s3.delete_object(Bucket="life-cycle", Key="k")
    s3b.delete_bucket(Bucket="life-cycle")
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket="life-cycle")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket="life-cycle")
    assert code(e) == "NoSuchBucket"
    s3.create_bucket(Bucket="where-am-i")
    assert s3.get_bucket_location(Bucket="where-am-i")["LocationConstraint"] is None


@pytest.mark.parametrize("name", ["ab", "Upper", "under_score", "-dash", "dots..dots", "192.168.1.1", "x" * 64])
def test_invalid_bucket_names(s3, name):
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=name)
    assert code(e) == "InvalidBucketName"


@pytest.mark.parametrize("size", [0, 1, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_round_trip_sizes(s3, s3b, bucket, size):
    data = os.urandom(size)
    put = s3.put_object(Bucket=bucket, Key=f"obj-{size}", Body=data)
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3b.get_object(Bucket=bucket, Key=f"obj-{size}", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got["ContentLength"] == size
    assert got["ETag"] == put["ETag"]
    head = s3.head_object(Bucket=bucket, Key=f"obj-{size}")
    assert head["ContentLength"] == size


# (A key with a character XML 1.0 cannot carry, such as NUL, is refused: test_security.)
WEIRD_KEYS = ["a/../b", "../../etc/passwd", "%00", "cr\rinside", "ünï cödé/日本語", "with space", "plus+sign",
              "double//slash", "trailing/", "q?uestion#hash&amp=1", "tab\tkey", "~tilde*star'quote\"", "/leading"]


def test_weird_keys_stored_exactly(s3, s3b, bucket):
    for i, key in enumerate(WEIRD_KEYS):
        s3.put_object(Bucket=bucket, Key=key, Body=f"value {i}".encode())
    for i, key in enumerate(WEIRD_KEYS):
        assert s3b.get_object(Bucket=bucket, Key=key)["Body"].read() == f"value {i}".encode()
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(listed) == sorted(WEIRD_KEYS)
    assert listed == sorted(WEIRD_KEYS, key=lambda k: k.encode())


def test_key_too_long(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="é" * 513, Body=b"x")  # 1026 bytes of UTF-8
    assert code(e) == "KeyTooLongError"
    s3.put_object(Bucket=bucket, Key="k" * 1024, Body=b"x")


def test_listing_pagination_and_delimiters(s3b, s3, bucket):
    keys = [f"{d}/{s}/{i:03d}" for d in ("a", "b", "c") for s in ("x", "y") for i in range(200)] + ["top1", "top2"]
    _put_many(s3, bucket, keys)
    pages = s3b.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 333})
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == sorted(keys)
    pages = s3b.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 250})
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == sorted(keys)
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "c/"]
    assert [o["Key"] for o in top["Contents"]] == ["top1", "top2"]
    sub = s3.list_objects_v2(Bucket=bucket, Delimiter="/", Prefix="b/")
    assert [p["Prefix"] for p in sub["CommonPrefixes"]] == ["b/x/", "b/y/"]
    assert "Contents" not in sub
    # one entry per page, across common prefixes, both API versions
    for paginator, size in (("list_objects_v2", 1), ("list_objects", 1)):
        pages = s3.get_paginator(paginator).paginate(Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": size})
        seen = []
        for p in pages:
            seen += [c["Prefix"] for c in p.get("CommonPrefixes", [])] + [o["Key"] for o in p.get("Contents", [])]
        assert seen == ["a/", "b/", "c/", "top1", "top2"]
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="c/y/150", Prefix="c/")
    assert [o["Key"] for o in after["Contents"]] == [f"c/y/{i:03d}" for i in range(151, 200)]
    assert s3.list_objects_v2(Bucket=bucket, MaxKeys=0)["KeyCount"] == 0


def _put_many(s3, bucket: str, keys: list[str]) -> None:
    def worker(part: list[str]) -> None:
        client = boto3.client("s3", endpoint_url=s3.meta.endpoint_url, region_name="us-east-1",
                              aws_access_key_id=s3._request_signer._credentials.access_key,
                              aws_secret_access_key=s3._request_signer._credentials.secret_key)
        for k in part:
            client.put_object(Bucket=bucket, Key=k, Body=b"")

    threads = [threading.Thread(target=worker, args=(keys[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_ranges(s3, bucket):
    data = os.urandom(2 * CHUNK + 100)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    for rng, want in (("bytes=0-0", data[:1]), ("bytes=10-", data[10:]), ("bytes=-7", data[-7:]),
                      (f"bytes={CHUNK - 3}-{CHUNK + 3}", data[CHUNK - 3 : CHUNK + 4]),
                      ("bytes=5-99999999", data[5:])):
        got = s3.get_object(Bucket=bucket, Key="r", Range=rng)
        assert got["Body"].read() == want, rng
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={len(data)}-")
    assert code(e) == "InvalidRange"


def test_metadata_and_headers(s3, bucket):
    s3.put_object(Bucket=bucket, Key="m", Body=b"hello", ContentType="text/plain", CacheControl="max-age=60",
                  ContentDisposition="attachment", Metadata={"color": "blue", "Mixed-Case": "V"})
    head = s3.head_object(Bucket=bucket, Key="m")
    assert head["ContentType"] == "text/plain"
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == "attachment"
    assert head["Metadata"] == {"color": "blue", "mixed-case": "V"}
    got = s3.get_object(Bucket=bucket, Key="m", ResponseContentType="application/x-test")
    assert got["ContentType"] == "application/x-test"


def test_missing_things(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="nope")
    assert code(e) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="no-such-bucket-here", Key="nope")
    assert code(e) == "NoSuchBucket"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="no-such-bucket-here", Key="k", Body=b"x")
    assert code(e) == "NoSuchBucket"
    s3.delete_object(Bucket=bucket, Key="never-existed")  # 204, as S3 does


def test_content_md5(s3, bucket):
    s3.put_object(Bucket=bucket, Key="md5", Body=b"original")
    good = base64.b64encode(hashlib.md5(b"new body").digest()).decode()
    bad = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="md5", Body=b"new body", ContentMD5=bad)
    assert code(e) == "BadDigest"
    assert s3.get_object(Bucket=bucket, Key="md5")["Body"].read() == b"original"
    s3.put_object(Bucket=bucket, Key="md5", Body=b"new body", ContentMD5=good)
    assert s3.get_object(Bucket=bucket, Key="md5")["Body"].read() == b"new body"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="md5", Body=b"x", ContentMD5="not base64!")
    assert code(e) == "InvalidDigest"


def test_checksum_variants(cluster, bucket):
    data = os.urandom(CHUNK + 17)
    for algo in ("CRC32", "CRC32C", "SHA1", "SHA256"):
        s3 = cluster.s3(0)
        put = s3.put_object(Bucket=bucket, Key=algo, Body=data, ChecksumAlgorithm=algo)
        got = s3.get_object(Bucket=bucket, Key=algo, ChecksumMode="ENABLED")
        assert got["Body"].read() == data
        assert got[f"Checksum{algo}"] == put[f"Checksum{algo}"]
    # a client that signs the payload (no aws-chunked, x-amz-content-sha256 = hex digest)
    plain = cluster.s3(0, request_checksum_calculation="when_required", s3={"payload_signing_enabled": True})
    plain.put_object(Bucket=bucket, Key="signed", Body=data)
    assert plain.get_object(Bucket=bucket, Key="signed")["Body"].read() == data


def test_wrong_checksum_rejected(cluster, bucket):
    s3 = cluster.s3(0)
    s3.put_object(Bucket=bucket, Key="c", Body=b"before")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="c", Body=b"after", ChecksumCRC32="AAAAAA==")
    assert code(e) == "BadDigest"
    assert s3.get_object(Bucket=bucket, Key="c")["Body"].read() == b"before"


def test_auth_errors(cluster, bucket):
    def client(access: str, secret: str):
        return boto3.client("s3", endpoint_url=cluster.endpoints[0], aws_access_key_id=access,
                            aws_secret_access_key=secret, region_name="us-east-1",
                            config=Config(retries={"max_attempts": 1}))

    with pytest.raises(ClientError) as e:
        client("cairnroot", "wrong-secret").list_buckets()
    assert code(e) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as e:
        client("nobody", "whatever").list_buckets()
    assert code(e) == "InvalidAccessKeyId"
    anonymous = boto3.client("s3", endpoint_url=cluster.endpoints[0], region_name="us-east-1",
                             config=Config(signature_version=__import__("botocore").UNSIGNED))
    with pytest.raises(ClientError) as e:
        anonymous.get_object(Bucket=bucket, Key="x")
    assert code(e) == "AccessDenied"


def _raw_put(endpoint: str, bucket: str, key: str, declared: int, sent: bytes) -> bytes:
    """A PUT that declares ``declared`` bytes, sends ``sent`` and closes its side."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from chaos.cluster import ACCESS_KEY, SECRET_KEY

    url = f"{endpoint}/{bucket}/{key}"
    req = AWSRequest("PUT", url, headers={"Content-Length": str(declared), "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    host = urlsplit(endpoint)
    head = f"PUT /{bucket}/{key} HTTP/1.1\r\nHost: {host.netloc}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in req.headers.items() if k.lower() != "host") + "\r\n"
    with socket.create_connection((host.hostname, host.port)) as sock:
        sock.sendall(head.encode() + sent)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except OSError:
            pass
    return reply


def test_truncated_body_changes_nothing(cluster, s3, bucket):
    s3.put_object(Bucket=bucket, Key="t", Body=b"intact")
    reply = _raw_put(cluster.endpoints[0], bucket, "t", 3 * CHUNK, os.urandom(CHUNK + 10))
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert s3.get_object(Bucket=bucket, Key="t")["Body"].read() == b"intact"
    reply = _raw_put(cluster.endpoints[0], bucket, "new", 100, b"short")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="new")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_read_after_write_across_frontends(s3, s3b, bucket):
    for i in range(40):
        writer, reader = (s3, s3b) if i % 2 else (s3b, s3)
        body = f"version {i}".encode() * (i + 1)
        writer.put_object(Bucket=bucket, Key="raw", Body=body)
        assert reader.get_object(Bucket=bucket, Key="raw")["Body"].read() == body
        assert any(o["Key"] == "raw" for o in reader.list_objects_v2(Bucket=bucket)["Contents"])
    s3.delete_object(Bucket=bucket, Key="raw")
    with pytest.raises(ClientError):
        s3b.head_object(Bucket=bucket, Key="raw")
    assert "Contents" not in s3b.list_objects_v2(Bucket=bucket)


def test_get_during_overwrite_is_never_mixed(cluster, bucket):
    versions = [bytes([v]) * (2 * CHUNK + 123) for v in range(6)]
    s3 = cluster.s3(0)
    s3.put_object(Bucket=bucket, Key="flip", Body=versions[0])
    stop = time.monotonic() + 6
    seen: list[bytes] = []
    errors: list[Exception] = []

    def reader() -> None:
        client = cluster.s3(1)
        while time.monotonic() < stop:
            try:
                seen.append(client.get_object(Bucket=bucket, Key="flip")["Body"].read())
            except Exception as exc:  # recorded and asserted below
                errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    i = 0
    while time.monotonic() < stop:
        i += 1
        s3.put_object(Bucket=bucket, Key="flip", Body=versions[i % len(versions)])
    t.join()
    assert not errors
    assert seen and all(body in versions for body in seen)


def test_overwritten_chunks_are_collected(cluster, s3, bucket):
    s3.put_object(Bucket=bucket, Key="gc", Body=os.urandom(2 * CHUNK))
    before = set(cluster.chunk_files())
    s3.put_object(Bucket=bucket, Key="gc", Body=os.urandom(2 * CHUNK))
    s3.delete_object(Bucket=bucket, Key="gc")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = set(cluster.chunk_files())
        if not (now - before) and len(before - now) >= 2:
            break
        time.sleep(0.5)
    leftover = set(cluster.chunk_files())
    assert len(before - leftover) >= 2, "the first version's chunks were not collected"
    assert not (leftover - before), "the second version's chunks were not collected"


def test_health_endpoint(cluster):
    health = cluster.health(0)
    assert health["status"] == "ok" and health["raftmeta"] is True and health["blobnodes_writable"] == 3


def test_presigned_urls(cluster, bucket):
    import urllib.error
    import urllib.request

    s3 = cluster.s3(0, signature_version="s3v4")  # boto3 presigns with SigV2 unless told

    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre signed"}, ExpiresIn=60)
    req = urllib.request.Request(put_url, data=b"via presigned PUT", method="PUT")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre signed"}, ExpiresIn=60)
    with urllib.request.urlopen(get_url, timeout=10) as r:
        assert r.read() == b"via presigned PUT"
    tampered = get_url.replace("pre%20signed", "pre%20signeD")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(tampered, timeout=10)
    assert e.value.code == 403 and b"SignatureDoesNotMatch" in e.value.read()
