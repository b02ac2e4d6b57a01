"""Conditional requests and writes, DeleteObjects, object tagging: as AWS documents them."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.cluster


def status(exc: pytest.ExceptionInfo) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def test_conditional_reads(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"v1")["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"v1"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0123"')
    assert status(e) == 412 and code(e) == "PreconditionFailed"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert status(e) == 304
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="c", IfModifiedSince=modified)
    assert status(e) == 304
    assert s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=modified.replace(year=2000))["Body"].read() == b"v1"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=modified.replace(year=2000))
    assert status(e) == 412
    # If-Match wins over If-Unmodified-Since when both are given (RFC 9110)
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag,
                         IfUnmodifiedSince=modified.replace(year=2000))["Body"].read() == b"v1"


def test_conditional_writes(s3, bucket):
    first = s3.put_object(Bucket=bucket, Key="w", Body=b"one", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="w", Body=b"two", IfNoneMatch="*")
    assert code(e) == "PreconditionFailed"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="w", Body=b"two", IfMatch='"ffffffffffffffffffffffffffffffff"')
    assert code(e) == "PreconditionFailed"
    second = s3.put_object(Bucket=bucket, Key="w", Body=b"two", IfMatch=first)["ETag"]
    assert s3.get_object(Bucket=bucket, Key="w")["Body"].read() == b"two" and second != first
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="never-there", Body=b"x", IfMatch=first)
    assert code(e) == "NoSuchKey"


def test_racing_create_only_writers_one_wins(cluster, bucket):
    results: list[str] = []

    def writer(i: int) -> None:
        client = cluster.s3(i % 2, retries={"max_attempts": 1})
        try:
            client.put_object(Bucket=bucket, Key="race", Body=f"writer {i}".encode(), IfNoneMatch="*")
            results.append(f"won {i}")
        except ClientError as exc:
            results.append(exc.response["Error"]["Code"])

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1 and results.count("PreconditionFailed") == 7
    body = cluster.s3(0).get_object(Bucket=bucket, Key="race")["Body"].read()
    assert body == f"writer {winners[0].split()[1]}".encode()


def test_delete_objects(s3, bucket):
    for i in range(30):
        s3.put_object(Bucket=bucket, Key=f"d/{i}", Body=b"x")
    keys = [{"Key": f"d/{i}"} for i in range(20)] + [{"Key": "never-existed"}]
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    assert sorted(d["Key"] for d in out["Deleted"]) == sorted(k["Key"] for k in keys)
    assert "Errors" not in out
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"d/{i}"} for i in range(20, 30)], "Quiet": True})
    assert "Deleted" not in quiet
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="d/")


def test_object_tagging(s3, bucket):
    s3.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="project=cairn&tier=gold")
    assert s3.head_object(Bucket=bucket, Key="t")["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    tags = s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("project", "cairn"), ("tier", "gold")]
    s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": [{"Key": "only", "Value": "one <&>"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [{"Key": "only", "Value": "one <&>"}]
    with pytest.raises(ClientError) as e:
        s3.put_object_tagging(Bucket=bucket, Key="t",
                              Tagging={"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(11)]})
    assert code(e) == "InvalidTag"
    s3.delete_object_tagging(Bucket=bucket, Key="t")
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == []
    assert s3.get_object(Bucket=bucket, Key="t")["Body"].read() == b"x"  # the data is untouched
    with pytest.raises(ClientError) as e:
        s3.get_object_tagging(Bucket=bucket, Key="missing")
    assert code(e) == "NoSuchKey"


def test_malformed_xml_changes_nothing(cluster, s3, bucket):
    import urllib.error
    import urllib.request

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from chaos.cluster import ACCESS_KEY, SECRET_KEY

    s3.put_object(Bucket=bucket, Key="keep", Body=b"kept")
    for query, body in (("delete", b"<Delete><Object><Key>keep</Key></Object>"),  # not well-formed
                        ("delete", b"<NotDelete/>"),
                        ("delete", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "keep">]><Delete/>')):
        url = f"{cluster.endpoints[0]}/{bucket}?{query}"
        req = AWSRequest("POST", url, data=body, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
        S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
        http = urllib.request.Request(url, data=body, method="POST", headers=dict(req.headers.items()))
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(http, timeout=10)
        assert e.value.code == 400 and b"<Code>MalformedXML</Code>" in e.value.read()
    time.sleep(0.1)
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"kept"


def test_copy_object_shares_chunks_and_survives_source_delete(cluster, s3, bucket):
    import os

    from tests.cluster.conftest import CHUNK

    data = os.urandom(3 * CHUNK + 11)
    before_put = set(cluster.chunk_files())
    s3.put_object(Bucket=bucket, Key="orig", Body=data, ContentType="text/x-orig", Metadata={"a": "1"})
    chunks_before = set(cluster.chunk_files())
    orig_chunks = chunks_before - before_put
    assert len(orig_chunks) == 4
    out = s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "orig"})
    after_copy = set(cluster.chunk_files())  # (other tests' chunks may be collected meanwhile)
    assert orig_chunks <= after_copy and not after_copy - chunks_before  # not a byte copied
    head = s3.head_object(Bucket=bucket, Key="copy")
    assert head["ContentType"] == "text/x-orig" and head["Metadata"] == {"a": "1"}
    assert out["CopyObjectResult"]["ETag"] == head["ETag"]
    s3.copy_object(Bucket=bucket, Key="replaced", CopySource=f"{bucket}/orig", MetadataDirective="REPLACE",
                   ContentType="text/x-new", Metadata={"b": "2"})
    head = s3.head_object(Bucket=bucket, Key="replaced")
    assert head["ContentType"] == "text/x-new" and head["Metadata"] == {"b": "2"}
    # the source goes away; both copies keep every byte, and no chunk is orphaned or lost
    s3.delete_object(Bucket=bucket, Key="orig")
    time.sleep(2.5)  # longer than the test cluster's GC grace
    assert s3.get_object(Bucket=bucket, Key="copy")["Body"].read() == data
    s3.delete_object(Bucket=bucket, Key="copy")
    time.sleep(2.5)
    assert s3.get_object(Bucket=bucket, Key="replaced")["Body"].read() == data
    s3.delete_object(Bucket=bucket, Key="replaced")
    assert cluster.wait_no_orphans() == set()
    deadline = time.monotonic() + 20
    while orig_chunks & set(cluster.chunk_files()) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not orig_chunks & set(cluster.chunk_files()), "chunks referenced by nothing were not collected"


def test_copy_object_errors(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="src", Body=b"source")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="src", CopySource=f"{bucket}/src")
    assert code(e) == "InvalidRequest"
    s3.copy_object(Bucket=bucket, Key="src", CopySource=f"{bucket}/src", MetadataDirective="REPLACE",
                   Metadata={"now": "with-meta"})
    assert s3.head_object(Bucket=bucket, Key="src")["Metadata"] == {"now": "with-meta"}
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", CopySourceIfMatch='"nope"')
    assert code(e) == "PreconditionFailed"
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", CopySourceIfMatch=etag)
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/missing")
    assert code(e) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", IfNoneMatch="*")
    assert code(e) == "PreconditionFailed"


def test_bucket_cors_and_preflight(cluster, s3, bucket):
    import urllib.error
    import urllib.request

    with pytest.raises(ClientError) as e:
        s3.get_bucket_cors(Bucket=bucket)
    assert code(e) == "NoSuchCORSConfiguration"
    rules = [{"AllowedOrigins": ["https://app.example.com"], "AllowedMethods": ["GET", "PUT"],
              "AllowedHeaders": ["content-type", "x-amz-*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600}]
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    got = s3.get_bucket_cors(Bucket=bucket)["CORSRules"][0]
    assert got["AllowedOrigins"] == ["https://app.example.com"] and got["MaxAgeSeconds"] == 600
    s3.put_object(Bucket=bucket, Key="cors.txt", Body=b"x")

    def preflight(origin: str, method: str, headers: str = "") -> tuple[int, Any]:
        req = urllib.request.Request(f"{cluster.endpoints[1]}/{bucket}/cors.txt", method="OPTIONS", headers={
            "Origin": origin, "Access-Control-Request-Method": method,
            **({"Access-Control-Request-Headers": headers} if headers else {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers

    status, headers = preflight("https://app.example.com", "PUT", "Content-Type, X-Amz-Date")
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "PUT" in headers["Access-Control-Allow-Methods"] and headers["Access-Control-Max-Age"] == "600"
    assert preflight("https://evil.example.com", "GET")[0] == 403
    assert preflight("https://app.example.com", "DELETE")[0] == 403
    assert preflight("https://app.example.com", "GET", "x-other")[0] == 403
    # an actual cross-origin GET carries the headers
    url = cluster.s3(0, signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "cors.txt"})
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Origin": "https://app.example.com"})) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert r.headers["Access-Control-Expose-Headers"] == "ETag"
    s3.delete_bucket_cors(Bucket=bucket)
    assert preflight("https://app.example.com", "GET")[0] == 403


def test_oversized_headers_and_odd_encodings(cluster, s3, bucket):
    import http.client
    import socket
    from urllib.parse import urlsplit

    s3.put_object(Bucket=bucket, Key="stays", Body=b"same")
    ep = urlsplit(cluster.endpoints[0])
    with socket.create_connection((ep.hostname, ep.port), timeout=10) as sock:
        sock.sendall(f"PUT /{bucket}/stays HTTP/1.1\r\nHost: {ep.netloc}\r\nX-Big: {'a' * 200_000}\r\n"
                     "Content-Length: 3\r\n\r\nnew".encode())
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 4"), reply[:100]
    conn = http.client.HTTPConnection(ep.hostname, ep.port, timeout=10)
    conn.request("GET", f"/{bucket}/%FF%FE")
    reply = conn.getresponse()
    assert reply.status == 400 and b"<Code>InvalidURI</Code>" in reply.read()
    conn.close()
    assert s3.get_object(Bucket=bucket, Key="stays")["Body"].read() == b"same"
    assert cluster.health(0)["status"] == "ok"


def test_metrics_endpoint(cluster, s3, bucket):
    s3.put_object(Bucket=bucket, Key="m", Body=b"12345")
    s3.get_object(Bucket=bucket, Key="m")["Body"].read()
    with pytest.raises(ClientError):
        s3.get_object(Bucket=bucket, Key="missing-for-metrics")
    status, body = cluster.admin("GET", "metrics")
    text = body["raw"] if isinstance(body, dict) and "raw" in body else str(body)
    assert status == 200, text[:300]
    assert 'cairn_s3_requests_total{operation="PutObject",status="200"}' in text
    assert 'cairn_s3_requests_total{operation="GetObject",status="404"}' in text
    assert "cairn_raft_is_leader" in text and "cairn_blobnode_disk_used_bytes" in text
    assert "cairn_gc_queued_chunks" in text and "cairn_under_replicated_chunks" in text
    assert "cairn_repair_backlog_bytes" in text and "cairn_repair_eta_seconds" in text
    leaders = [line for line in text.splitlines() if line.startswith("cairn_raft_is_leader") and line.endswith(" 1.0")]
    assert len(leaders) == 1


def test_metrics_count_each_request_under_its_aws_operation(cluster, s3, bucket):
    """The labels come from the route table: a copy is CopyObject (it was once counted as
    PutObject), a V2 listing ListObjectsV2, a tagging read GetObjectTagging."""
    s3.put_object(Bucket=bucket, Key="src-for-metrics", Body=b"x")
    s3.copy_object(Bucket=bucket, Key="dst-for-metrics", CopySource={"Bucket": bucket, "Key": "src-for-metrics"})
    s3.list_objects_v2(Bucket=bucket)
    s3.get_object_tagging(Bucket=bucket, Key="dst-for-metrics")
    status, body = cluster.admin("GET", "metrics")
    text = body["raw"] if isinstance(body, dict) and "raw" in body else str(body)
    assert status == 200, text[:300]
    for operation in ("CopyObject", "ListObjectsV2", "GetObjectTagging"):
        assert f'cairn_s3_requests_total{{operation="{operation}",status="200"}}' in text, operation


def test_list_object_versions_lists_every_object_as_its_null_version(s3, bucket):
    """ListObjectVersions on a bucket that never had versioning: every object once, as
    version ``null``, latest; pages chained by NextKeyMarker/NextVersionIdMarker, so a
    cleanup that walks versions (as s3-tests and backup tools do) ends with an empty bucket."""
    keys = [f"v/{i:02d}" for i in range(7)] + ["top", "w/x"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    pages = list(s3.get_paginator("list_object_versions").paginate(Bucket=bucket, PaginationConfig={"PageSize": 3}))
    versions = [v for page in pages for v in page.get("Versions", [])]
    assert len(pages) == 3 and [v["Key"] for v in versions] == sorted(keys)
    assert all(v["VersionId"] == "null" and v["IsLatest"] and v["Size"] == len(v["Key"]) for v in versions)
    assert pages[0]["IsTruncated"] and pages[0]["NextKeyMarker"] == sorted(keys)[2]
    assert pages[0]["NextVersionIdMarker"] == "null" and not pages[-1]["IsTruncated"]
    assert not any(page.get("DeleteMarkers") for page in pages)
    grouped = s3.list_object_versions(Bucket=bucket, Delimiter="/", Prefix="")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["v/", "w/"]
    assert [v["Key"] for v in grouped["Versions"]] == ["top"]
    with pytest.raises(ClientError) as err:
        s3.list_object_versions(Bucket=bucket, VersionIdMarker="null")
    assert err.value.response["Error"]["Code"] == "InvalidArgument"
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", [])]
        if objects:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
