"""S3 versioning against a real cluster, driven with boto3 and the aws CLI: state
transitions, version ids on writes and reads, delete markers, ListObjectVersions
(paging, prefixes, url encoding), suspended buckets and null versions, DeleteObjects
by version, tagging by version, conditional writes over markers, DeleteBucket."""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError
from botocore.handlers import set_list_objects_encoding_type_url

from tests.cluster.test_cli_tools import aws

pytestmark = pytest.mark.cluster

KIB, MIB = 1024, 1024 * 1024


# ---------------------------------------------------------------- helpers


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def status(exc: pytest.ExceptionInfo) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def headers(exc: pytest.ExceptionInfo) -> dict[str, str]:
    return exc.value.response["ResponseMetadata"]["HTTPHeaders"]


def enable(s3, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def versions(s3, bucket: str, **kwargs) -> tuple[list[dict], list[dict]]:
    """Every version and every delete marker (paginated), in listing order."""
    out_v: list[dict] = []
    out_m: list[dict] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, **kwargs):
        out_v += page.get("Versions", [])
        out_m += page.get("DeleteMarkers", [])
    return out_v, out_m


def ids(entries: list[dict]) -> list[str]:
    return [e["VersionId"] for e in entries]


def body(s3, bucket: str, key: str, **kwargs) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()




# ---------------------------------------------------------------- bucket state


def test_versioning_state_transitions_and_errors(s3, bucket):
    got = s3.get_bucket_versioning(Bucket=bucket)
    assert "Status" not in got and "MFADelete" not in got  # never versioned: no Status at all
    with pytest.raises(ClientError) as e:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Bogus"})
    assert status(e) == 400
    assert code(e) in ("MalformedXML", "IllegalVersioningConfigurationException")
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)  # the error changed nothing
    enable(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    for bad in ("enabled", "Disabled", ""):
        with pytest.raises(ClientError) as e:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": bad})
        assert status(e) == 400, bad
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled", bad
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    enable(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    with pytest.raises(ClientError) as e:
        s3.get_bucket_versioning(Bucket=bucket + "-missing")
    assert status(e) == 404 and code(e) == "NoSuchBucket"
    with pytest.raises(ClientError) as e:
        s3.put_bucket_versioning(Bucket=bucket + "-missing", VersioningConfiguration={"Status": "Enabled"})
    assert status(e) == 404 and code(e) == "NoSuchBucket"


def test_suspending_an_object_lock_bucket_is_invalid_bucket_state(s3, bucket):
    name = bucket + "-lock"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    with pytest.raises(ClientError) as e:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
    assert status(e) == 409 and code(e) == "InvalidBucketState"
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})  # a no-op is fine
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"


# ---------------------------------------------------------------- version ids on writes and reads


def test_put_get_head_by_version_id_exact_bytes(s3, s3b, bucket):
    enable(s3, bucket)
    bodies = [os.urandom(3 * KIB + 7), os.urandom(2 * MIB + 12345), os.urandom(5 * KIB)]  # the middle spans chunks
    puts = [s3.put_object(Bucket=bucket, Key="obj", Body=b) for b in bodies]
    vids = [p["VersionId"] for p in puts]
    assert all(vids) and "null" not in vids and len(set(vids)) == 3
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["VersionId"] == vids[-1] and got["Body"].read() == bodies[-1]
    assert s3.head_object(Bucket=bucket, Key="obj")["VersionId"] == vids[-1]
    for client in (s3, s3b):
        for vid, data, put in zip(vids, bodies, puts, strict=True):
            got = client.get_object(Bucket=bucket, Key="obj", VersionId=vid)
            assert got["VersionId"] == vid
            assert got["ContentLength"] == len(data)
            assert got["ETag"] == put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
            assert got["Body"].read() == data
            head = client.head_object(Bucket=bucket, Key="obj", VersionId=vid)
            assert head["VersionId"] == vid and head["ContentLength"] == len(data) and head["ETag"] == put["ETag"]
    # a range of an old version across a chunk boundary
    got = s3.get_object(Bucket=bucket, Key="obj", VersionId=vids[1], Range=f"bytes={MIB - 10}-{MIB + 9}")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206 and got["VersionId"] == vids[1]
    assert got["Body"].read() == bodies[1][MIB - 10: MIB + 10]
    # a well-formed version id that is not one of this key's
    other = s3.put_object(Bucket=bucket, Key="other", Body=b"x")["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="obj", VersionId=other)
    assert status(e) == 404 and code(e) == "NoSuchVersion"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="obj", VersionId=other)
    assert status(e) == 404
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="obj", VersionId="not-a-version-id")
    assert status(e) == 400 and code(e) == "InvalidArgument"
    with pytest.raises(ClientError) as e:  # no null version in a bucket versioned from the start
        s3.get_object(Bucket=bucket, Key="obj", VersionId="null")
    assert status(e) == 404 and code(e) == "NoSuchVersion"
    assert ids(versions(s3, bucket, Prefix="obj")[0]) == vids[::-1]  # the errors changed nothing
    # deleting the latest by id makes the one before it the latest again
    assert s3.delete_object(Bucket=bucket, Key="obj", VersionId=vids[-1])["VersionId"] == vids[-1]
    got = s3b.get_object(Bucket=bucket, Key="obj")
    assert got["VersionId"] == vids[1] and got["Body"].read() == bodies[1]
    vs, _ = versions(s3, bucket, Prefix="obj")
    assert [(v["VersionId"], v["IsLatest"]) for v in vs] == [(vids[1], True), (vids[0], False)]


def test_delete_marker_lifecycle(s3, s3b, bucket):
    enable(s3, bucket)
    data = os.urandom(4 * KIB)
    v1 = s3.put_object(Bucket=bucket, Key="doc", Body=data)["VersionId"]
    deleted = s3.delete_object(Bucket=bucket, Key="doc")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    assert marker and marker not in (v1, "null")

    for client in (s3, s3b):
        with pytest.raises(ClientError) as e:
            client.get_object(Bucket=bucket, Key="doc")
        assert status(e) == 404 and code(e) == "NoSuchKey"
        assert headers(e).get("x-amz-delete-marker") == "true"
        assert headers(e).get("x-amz-version-id") == marker
        with pytest.raises(ClientError) as e:
            client.head_object(Bucket=bucket, Key="doc")
        assert status(e) == 404
        assert headers(e).get("x-amz-delete-marker") == "true"

    # the marker itself, by id: 405 Method Not Allowed (Last-Modified: test below)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert status(e) == 405 and code(e) == "MethodNotAllowed"
    assert headers(e).get("x-amz-delete-marker") == "true"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert status(e) == 405
    assert headers(e).get("x-amz-delete-marker") == "true"

    assert "doc" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    vs, ms = versions(s3, bucket)
    assert [(v["VersionId"], v["IsLatest"]) for v in vs] == [(v1, False)]
    assert [(m["Key"], m["VersionId"], m["IsLatest"]) for m in ms] == [("doc", marker, True)]
    assert body(s3, bucket, "doc", VersionId=v1) == data  # the old version is still there

    # deleting again stacks a second marker
    again = s3.delete_object(Bucket=bucket, Key="doc")
    assert again["DeleteMarker"] is True and again["VersionId"] not in (marker, v1)
    assert ids(versions(s3, bucket)[1]) == [again["VersionId"], marker]

    # removing both markers by id brings the object back, byte-exact
    for m in (again["VersionId"], marker):
        gone = s3b.delete_object(Bucket=bucket, Key="doc", VersionId=m)
        assert gone["ResponseMetadata"]["HTTPStatusCode"] == 204
        assert gone["DeleteMarker"] is True and gone["VersionId"] == m
    got = s3.get_object(Bucket=bucket, Key="doc")
    assert got["VersionId"] == v1 and got["Body"].read() == data
    vs, ms = versions(s3, bucket)
    assert [(v["VersionId"], v["IsLatest"]) for v in vs] == [(v1, True)] and ms == []
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["doc"]

    # deleting a real version by id is permanent and answers its id, no marker
    gone = s3.delete_object(Bucket=bucket, Key="doc", VersionId=v1)
    assert gone["VersionId"] == v1 and not gone.get("DeleteMarker")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="doc")
    assert status(e) == 404 and code(e) == "NoSuchKey"
    assert "x-amz-delete-marker" not in headers(e)
    assert versions(s3, bucket) == ([], [])


def test_delete_marker_by_version_id_answers_last_modified(s3, bucket):
    """AWS GetObject/HeadObject: "If the specified version is a delete marker, the response
    returns a 405 Method Not Allowed error and the Last-Modified: timestamp response header"."""
    enable(s3, bucket)
    s3.put_object(Bucket=bucket, Key="doc", Body=b"x")
    marker = s3.delete_object(Bucket=bucket, Key="doc")["VersionId"]
    listed = s3.list_object_versions(Bucket=bucket)["DeleteMarkers"][0]["LastModified"]
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as e:
            call(Bucket=bucket, Key="doc", VersionId=marker)
        assert status(e) == 405
        assert headers(e).get("x-amz-delete-marker") == "true"
        assert "last-modified" in headers(e), call.__name__
        stamp = email.utils.parsedate_to_datetime(headers(e)["last-modified"])
        assert abs((stamp - listed).total_seconds()) < 1


def test_copy_old_version_over_the_key_restores_it(s3, bucket):
    enable(s3, bucket)
    old = os.urandom(2 * MIB + 333)
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=old)["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"newer")["VersionId"]
    copied = s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k", "VersionId": v1})
    assert copied["CopySourceVersionId"] == v1
    v3 = copied["VersionId"]
    assert v3 not in (v1, v2, None, "null")
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(old).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["VersionId"] == v3 and got["Body"].read() == old
    assert ids(versions(s3, bucket)[0]) == [v3, v2, v1]
    assert body(s3, bucket, "k", VersionId=v2) == b"newer"
    # copying the latest (no versionId) reports the source's version id
    latest = s3.copy_object(Bucket=bucket, Key="k2", CopySource={"Bucket": bucket, "Key": "k"})
    assert latest["CopySourceVersionId"] == v3
    # a copy source whose latest is a delete marker: as if deleted (404); the marker by id: 400
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="k3", CopySource={"Bucket": bucket, "Key": "k"})
    assert status(e) == 404 and code(e) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="k3", CopySource={"Bucket": bucket, "Key": "k", "VersionId": marker})
    assert status(e) == 400
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="k3")
    assert status(e) == 404  # neither failed copy wrote anything
    # an old version can still be copied while the latest is a marker
    restored = s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k", "VersionId": v2})
    assert restored["CopySourceVersionId"] == v2
    assert body(s3, bucket, "k") == b"newer"


def test_multipart_complete_in_versioned_bucket_makes_a_version(s3, bucket):
    enable(s3, bucket)
    v1 = s3.put_object(Bucket=bucket, Key="big", Body=b"small first")["VersionId"]
    parts = [os.urandom(5 * MIB), os.urandom(MIB + 17)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=n, Body=p)["ETag"]
             for n, p in enumerate(parts, 1)]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    v2 = done["VersionId"]
    assert v2 and v2 not in (v1, "null")
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["VersionId"] == v2 and got["Body"].read() == b"".join(parts)
    assert s3.head_object(Bucket=bucket, Key="big", VersionId=v2)["ContentLength"] == sum(map(len, parts))
    assert body(s3, bucket, "big", VersionId=v1) == b"small first"
    vs, _ = versions(s3, bucket)
    assert [(v["VersionId"], v["IsLatest"]) for v in vs] == [(v2, True), (v1, False)]
    assert vs[0]["ETag"] == done["ETag"] and vs[0]["Size"] == sum(map(len, parts))


# ---------------------------------------------------------------- listing


def test_thousand_versions_listed_page_by_page(s3, bucket):
    enable(s3, bucket)
    before = s3.put_object(Bucket=bucket, Key="j", Body=b"j")["VersionId"]
    threads, per_thread = 8, 125
    written: dict[str, tuple[int, int]] = {}  # vid -> (thread, sequence within the thread)
    lock = threading.Lock()

    def writer(t: int) -> None:
        for n in range(per_thread):
            vid = s3.put_object(Bucket=bucket, Key="k", Body=f"{t}:{n}".encode())["VersionId"]
            with lock:
                written[vid] = (t, n)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(writer, range(threads)))
    after = s3.put_object(Bucket=bucket, Key="l", Body=b"l")["VersionId"]
    assert len(written) == 1000  # distinct ids

    # by hand: MaxKeys=100, KeyMarker/VersionIdMarker
    pages, entries, kwargs = 0, [], {}
    while True:
        page = s3.list_object_versions(Bucket=bucket, MaxKeys=100, **kwargs)
        pages += 1
        got = page.get("Versions", [])
        assert page["MaxKeys"] == 100 and len(got) <= 100 and not page.get("DeleteMarkers")
        entries += got
        if not page["IsTruncated"]:
            break
        assert len(got) == 100
        assert page["NextKeyMarker"] == got[-1]["Key"] and page["NextVersionIdMarker"] == got[-1]["VersionId"]
        kwargs = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
        assert pages < 20
    assert pages == 11 and len(entries) == 1002
    assert [(e["Key"], e["VersionId"]) for e in entries[:1]] == [("j", before)]
    assert [(e["Key"], e["VersionId"]) for e in entries[-1:]] == [("l", after)]
    ks = entries[1:-1]
    assert {e["Key"] for e in ks} == {"k"}
    assert len(ids(ks)) == len(set(ids(ks))) == 1000 and set(ids(ks)) == set(written)
    assert [e["IsLatest"] for e in ks] == [True] + [False] * 999
    assert all(e["IsLatest"] for e in (entries[0], entries[-1]))
    assert ks[0]["VersionId"] == s3.head_object(Bucket=bucket, Key="k")["VersionId"]
    # newest first: every thread's own writes appear in reverse order of writing
    for t in range(threads):
        seq = [written[e["VersionId"]][1] for e in ks if written[e["VersionId"]][0] == t]
        assert seq == list(range(per_thread - 1, -1, -1)), t

    # the boto3 paginator walks the same list
    paged = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, PaginationConfig={"PageSize": 100}):
        paged += [(v["Key"], v["VersionId"], v["IsLatest"]) for v in page.get("Versions", [])]
    assert paged == [(e["Key"], e["VersionId"], e["IsLatest"]) for e in entries]
    # a marker in the middle of one key's versions
    mid = ks[537]
    page = s3.list_object_versions(Bucket=bucket, KeyMarker="k", VersionIdMarker=mid["VersionId"], MaxKeys=3)
    assert ids(page["Versions"]) == ids(ks[538:541])
    # a key marker alone starts after every version of that key
    page = s3.list_object_versions(Bucket=bucket, KeyMarker="k")
    assert [(v["Key"], v["VersionId"]) for v in page["Versions"]] == [("l", after)]
    with pytest.raises(ClientError) as e:  # a version-id marker needs a key marker
        s3.list_object_versions(Bucket=bucket, VersionIdMarker=mid["VersionId"])
    assert status(e) == 400 and code(e) == "InvalidArgument"


def test_versions_written_concurrently_through_both_frontends(s3, s3b, bucket):
    enable(s3, bucket)
    jobs = [(client, f"{side}-{n}".encode()) for n in range(50) for side, client in (("a", s3), ("b", s3b))]

    def put(job):
        client, data = job
        return client.put_object(Bucket=bucket, Key="shared", Body=data)["VersionId"], data

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(put, jobs))
    vids = [vid for vid, _ in results]
    assert len(set(vids)) == 100 and "null" not in vids
    vs, ms = versions(s3b, bucket)
    assert ms == [] and len(vs) == 100 and set(ids(vs)) == set(vids)
    assert [v["IsLatest"] for v in vs] == [True] + [False] * 99
    assert s3.head_object(Bucket=bucket, Key="shared")["VersionId"] == vs[0]["VersionId"]
    assert s3b.head_object(Bucket=bucket, Key="shared")["VersionId"] == vs[0]["VersionId"]
    expected = dict(results)
    with ThreadPoolExecutor(8) as pool:
        read = list(pool.map(lambda vid: (vid, body(s3, bucket, "shared", VersionId=vid)), vids))
    assert dict(read) == expected


def test_listings_hide_marked_keys_and_list_versions_with_prefix_delimiter_encoding(cluster, s3, bucket):
    enable(s3, bucket)
    keys = ["docs/x.txt", "photos/2024/a.jpg", "photos/2024/b.jpg", "photos/2025/c.jpg", "top.txt",
            "weird dir/é+%&<x>.txt"]
    vid = {k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode())["VersionId"] for k in keys}
    markers = {k: s3.delete_object(Bucket=bucket, Key=k)["VersionId"]
               for k in ("photos/2025/c.jpg", "top.txt", "weird dir/é+%&<x>.txt")}

    live = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in live["Contents"]] == ["docs/x.txt", "photos/2024/a.jpg", "photos/2024/b.jpg"]
    assert live["KeyCount"] == 3
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top.get("CommonPrefixes", [])] == ["docs/", "photos/"]  # "weird dir/" only marked
    assert "Contents" not in top
    photos = s3.list_objects_v2(Bucket=bucket, Prefix="photos/", Delimiter="/")
    assert [p["Prefix"] for p in photos["CommonPrefixes"]] == ["photos/2024/"]  # 2025/ holds only a marker
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == keys[:3]

    # ListObjectVersions sees all of it
    top = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["docs/", "photos/", "weird dir/"]
    assert [(v["Key"], v["VersionId"]) for v in top["Versions"]] == [("top.txt", vid["top.txt"])]
    assert [(m["Key"], m["VersionId"], m["IsLatest"]) for m in top["DeleteMarkers"]] == [
        ("top.txt", markers["top.txt"], True)]
    photos = s3.list_object_versions(Bucket=bucket, Prefix="photos/", Delimiter="/")
    assert [p["Prefix"] for p in photos["CommonPrefixes"]] == ["photos/2024/", "photos/2025/"]
    assert "Versions" not in photos and "DeleteMarkers" not in photos
    assert photos["Prefix"] == "photos/" and photos["Delimiter"] == "/"
    y2025 = s3.list_object_versions(Bucket=bucket, Prefix="photos/2025/")
    assert [(v["Key"], v["IsLatest"]) for v in y2025["Versions"]] == [("photos/2025/c.jpg", False)]
    assert [(m["Key"], m["IsLatest"]) for m in y2025["DeleteMarkers"]] == [("photos/2025/c.jpg", True)]
    paged = s3.list_object_versions(Bucket=bucket, Prefix="photos/", Delimiter="/", MaxKeys=1)
    assert paged["IsTruncated"] and [p["Prefix"] for p in paged["CommonPrefixes"]] == ["photos/2024/"]
    rest = s3.list_object_versions(Bucket=bucket, Prefix="photos/", Delimiter="/", MaxKeys=1,
                                   KeyMarker=paged["NextKeyMarker"])
    assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["photos/2025/"] and not rest["IsTruncated"]

    # EncodingType=url (boto3 asks for it and decodes): the raw XML holds encoded keys
    raw: list[bytes] = []
    client = cluster.s3(0)
    client.meta.events.register("after-call.s3.ListObjectVersions",
                                lambda http_response, **_: raw.append(http_response.content))
    weird = "weird dir/é+%&<x>.txt"
    got = client.list_object_versions(Bucket=bucket, Prefix="weird dir/")  # boto3 adds EncodingType=url
    assert got["EncodingType"] == "url"
    assert [v["Key"] for v in got["Versions"]] == [weird] and [m["Key"] for m in got["DeleteMarkers"]] == [weird]
    assert got["Prefix"] == "weird dir/"
    text = raw[-1].decode()
    assert "<EncodingType>url</EncodingType>" in text
    encoded = [chunk.split("</Key>")[0] for chunk in text.split("<Key>")[1:]]
    assert len(encoded) == 2
    for e in encoded:
        assert "é" not in e and " " not in e and "&amp;" not in e and "&lt;" not in e
        assert urllib.parse.unquote_plus(e) == weird
    got = client.list_object_versions(Bucket=bucket, Delimiter=" ")
    assert [p["Prefix"] for p in got["CommonPrefixes"]] == ["weird "] and got["Delimiter"] == " "
    assert "<Delimiter>" in raw[-1].decode() and "<Delimiter> </Delimiter>" not in raw[-1].decode()
    # without EncodingType the key comes back verbatim (XML-escaped)
    plain = cluster.s3(0)
    plain.meta.events.unregister("before-parameter-build.s3.ListObjectVersions", set_list_objects_encoding_type_url)
    plain.meta.events.register("after-call.s3.ListObjectVersions",
                               lambda http_response, **_: raw.append(http_response.content))
    got = plain.list_object_versions(Bucket=bucket, Prefix="weird dir/")
    assert "EncodingType" not in got and [v["Key"] for v in got["Versions"]] == [weird]
    assert "<EncodingType>" not in raw[-1].decode()
    with pytest.raises(ClientError) as e:
        s3.list_object_versions(Bucket=bucket, EncodingType="base64")
    assert status(e) == 400 and code(e) == "InvalidArgument"


# ---------------------------------------------------------------- suspended buckets, null versions


def test_suspended_bucket_writes_replace_the_null_version(s3, bucket):
    before = s3.put_object(Bucket=bucket, Key="k", Body=b"unversioned")
    assert "VersionId" not in before  # never-versioned bucket: no version id
    enable(s3, bucket)
    vs, _ = versions(s3, bucket)
    assert [(v["VersionId"], v["IsLatest"]) for v in vs] == [("null", True)]
    assert body(s3, bucket, "k", VersionId="null") == b"unversioned"
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"real one")["VersionId"]
    assert v1 != "null"
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"suspended 1")
    assert first.get("VersionId", "null") == "null"
    assert s3.head_object(Bucket=bucket, Key="k").get("VersionId", "null") == "null"
    vs, _ = versions(s3, bucket)
    # the pre-versioning null version was replaced by the new null version
    assert [(v["VersionId"], v["IsLatest"]) for v in vs] == [("null", True), (v1, False)]
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"suspended 2")
    assert second.get("VersionId", "null") == "null"
    vs, _ = versions(s3, bucket)
    assert [(v["VersionId"], v["IsLatest"]) for v in vs] == [("null", True), (v1, False)]
    assert body(s3, bucket, "k") == b"suspended 2"
    assert body(s3, bucket, "k", VersionId="null") == b"suspended 2"
    assert body(s3, bucket, "k", VersionId=v1) == b"real one"
    # a delete in a suspended bucket: a null marker that replaces the null version
    gone = s3.delete_object(Bucket=bucket, Key="k")
    assert gone["DeleteMarker"] is True and gone["VersionId"] == "null"
    vs, ms = versions(s3, bucket)
    assert [(v["VersionId"], v["IsLatest"]) for v in vs] == [(v1, False)]
    assert [(m["VersionId"], m["IsLatest"]) for m in ms] == [("null", True)]
    # re-enabled: new real versions on top, the null marker stays below
    enable(s3, bucket)
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"enabled again")["VersionId"]
    assert v2 not in ("null", v1)
    vs, ms = versions(s3, bucket)
    assert ids(vs) == [v2, v1] and ids(ms) == ["null"] and not ms[0]["IsLatest"]
    s3.delete_object(Bucket=bucket, Key="k", VersionId="null")
    vs, ms = versions(s3, bucket)
    assert ids(vs) == [v2, v1] and ms == []


# ---------------------------------------------------------------- DeleteObjects, tagging, conditionals


def test_delete_objects_with_version_ids(s3, bucket):
    enable(s3, bucket)
    a1 = s3.put_object(Bucket=bucket, Key="a", Body=b"a1")["VersionId"]
    a2 = s3.put_object(Bucket=bucket, Key="a", Body=b"a2")["VersionId"]
    b1 = s3.put_object(Bucket=bucket, Key="b", Body=b"b1")["VersionId"]
    c1 = s3.put_object(Bucket=bucket, Key="c", Body=b"c1")["VersionId"]
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "a", "VersionId": a1}, {"Key": "b"}, {"Key": "c", "VersionId": c1}]})
    assert not out.get("Errors")
    deleted = {d["Key"]: d for d in out["Deleted"]}
    assert set(deleted) == {"a", "b", "c"}
    assert deleted["a"]["VersionId"] == a1 and not deleted["a"].get("DeleteMarker")
    assert deleted["c"]["VersionId"] == c1 and not deleted["c"].get("DeleteMarker")
    assert deleted["b"]["DeleteMarker"] is True
    b_marker = deleted["b"]["DeleteMarkerVersionId"]
    assert b_marker and b_marker != b1 and "VersionId" not in deleted["b"]
    vs, ms = versions(s3, bucket)
    assert [(v["Key"], v["VersionId"]) for v in vs] == [("a", a2), ("b", b1)]
    assert [(m["Key"], m["VersionId"]) for m in ms] == [("b", b_marker)]
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "b", "VersionId": b_marker}]})
    assert [(d["Key"], d["VersionId"], d.get("DeleteMarker")) for d in out["Deleted"]] == [("b", b_marker, True)]
    assert body(s3, bucket, "b") == b"b1"
    # Quiet mode answers no Deleted entries but still deletes
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a", "VersionId": a2}], "Quiet": True})
    assert not out.get("Deleted") and not out.get("Errors")
    vs, ms = versions(s3, bucket)
    assert [(v["Key"], v["VersionId"]) for v in vs] == [("b", b1)] and ms == []
    # a well-formed id that names no version: deleted (nothing to do), as S3 answers
    gone = s3.put_object(Bucket=bucket, Key="z", Body=b"z")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="z", VersionId=gone)
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "b", "VersionId": gone}]})
    assert [(d["Key"], d["VersionId"]) for d in out.get("Deleted", [])] == [("b", gone)] and not out.get("Errors")
    # a malformed version id is a per-key NoSuchVersion error (as S3 answers), the rest goes on
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "b", "VersionId": "not-a-version"},
                                                               {"Key": "b", "VersionId": b1}]})
    assert [(d["Key"], d["VersionId"]) for d in out.get("Deleted", [])] == [("b", b1)]
    assert [(e["Key"], e["VersionId"], e["Code"]) for e in out.get("Errors", [])] == [
        ("b", "not-a-version", "NoSuchVersion")]
    assert versions(s3, bucket) == ([], [])


def test_delete_objects_removing_a_marker_answers_its_id_as_delete_marker_version_id(s3, bucket):
    """AWS DeleteObjects, a delete marker removed by its version id: the Deleted entry has
    VersionId, DeleteMarker true and DeleteMarkerVersionId (the marker's id)."""
    enable(s3, bucket)
    v1 = s3.put_object(Bucket=bucket, Key="b", Body=b"b1")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="b")["VersionId"]
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "b", "VersionId": marker}]})
    assert not out.get("Errors")
    assert [(d["Key"], d.get("VersionId"), d.get("DeleteMarker"), d.get("DeleteMarkerVersionId"))
            for d in out["Deleted"]] == [("b", marker, True, marker)]
    assert s3.get_object(Bucket=bucket, Key="b")["VersionId"] == v1


def test_tagging_by_version_id(s3, bucket):
    enable(s3, bucket)
    v1 = s3.put_object(Bucket=bucket, Key="t", Body=b"1", Tagging="a=1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="t", Body=b"2", Tagging="b=2")["VersionId"]
    got = s3.get_object_tagging(Bucket=bucket, Key="t", VersionId=v1)
    assert got["VersionId"] == v1 and got["TagSet"] == [{"Key": "a", "Value": "1"}]
    got = s3.get_object_tagging(Bucket=bucket, Key="t")
    assert got["VersionId"] == v2 and got["TagSet"] == [{"Key": "b", "Value": "2"}]
    put = s3.put_object_tagging(Bucket=bucket, Key="t", VersionId=v1,
                                Tagging={"TagSet": [{"Key": "c", "Value": "3"}, {"Key": "d", "Value": "4"}]})
    assert put["VersionId"] == v1
    assert s3.get_object_tagging(Bucket=bucket, Key="t", VersionId=v1)["TagSet"] == [
        {"Key": "c", "Value": "3"}, {"Key": "d", "Value": "4"}]
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [{"Key": "b", "Value": "2"}]
    assert s3.get_object(Bucket=bucket, Key="t", VersionId=v1)["TagCount"] == 2
    assert s3.head_object(Bucket=bucket, Key="t", VersionId=v2)["ResponseMetadata"]["HTTPStatusCode"] == 200
    dropped = s3.delete_object_tagging(Bucket=bucket, Key="t", VersionId=v1)
    assert dropped["VersionId"] == v1 and dropped["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.get_object_tagging(Bucket=bucket, Key="t", VersionId=v1)["TagSet"] == []
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [{"Key": "b", "Value": "2"}]
    other = s3.put_object(Bucket=bucket, Key="other", Body=b"o")["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.put_object_tagging(Bucket=bucket, Key="t", VersionId=other,
                              Tagging={"TagSet": [{"Key": "x", "Value": "y"}]})
    assert status(e) == 404 and code(e) == "NoSuchVersion"
    assert s3.get_object_tagging(Bucket=bucket, Key="other")["TagSet"] == []  # not applied to the other key


def test_if_none_match_star_over_a_delete_marker(s3, bucket):
    enable(s3, bucket)
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"first")["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="k", Body=b"refused", IfNoneMatch="*")
    assert status(e) == 412 and code(e) == "PreconditionFailed"
    assert ids(versions(s3, bucket)[0]) == [v1]  # nothing written
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"after marker", IfNoneMatch="*")
    assert put["VersionId"] not in (v1, marker)
    assert body(s3, bucket, "k") == b"after marker"
    vs, ms = versions(s3, bucket)
    assert ids(vs) == [put["VersionId"], v1] and ids(ms) == [marker] and not ms[0]["IsLatest"]


def test_delete_bucket_with_only_delete_markers_is_not_empty(s3, bucket):
    enable(s3, bucket)
    for key in ("a", "b/c"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=bucket)
    assert status(e) == 409 and code(e) == "BucketNotEmpty"
    vs, ms = versions(s3, bucket)
    assert len(vs) == 2 and len(ms) == 2  # unchanged
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in vs]})
    with pytest.raises(ClientError) as e:  # markers alone still count
        s3.delete_bucket(Bucket=bucket)
    assert status(e) == 409 and code(e) == "BucketNotEmpty"
    for m in ms:
        s3.delete_object(Bucket=bucket, Key=m["Key"], VersionId=m["VersionId"])
    assert s3.delete_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=bucket)
    assert status(e) == 404


# ---------------------------------------------------------------- the aws CLI


def test_aws_cli_versioning(cluster, s3, bucket, tmp_path):
    ep = cluster.endpoints[1]
    aws(ep, "s3api", "put-bucket-versioning", "--bucket", bucket, "--versioning-configuration", "Status=Enabled")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    bad = aws(ep, "s3api", "put-bucket-versioning", "--bucket", bucket, "--versioning-configuration",
              "Status=Nope", check=False)
    assert bad.returncode != 0
    assert "MalformedXML" in bad.stderr or "IllegalVersioningConfigurationException" in bad.stderr, bad.stderr
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(os.urandom(3 * MIB + 5))  # spans chunks; one PUT (under the CLI multipart threshold)
    second.write_bytes(b"second version\n")
    aws(ep, "s3", "cp", str(first), f"s3://{bucket}/dir/file.bin")
    aws(ep, "s3", "cp", str(second), f"s3://{bucket}/dir/file.bin")
    aws(ep, "s3", "rm", f"s3://{bucket}/dir/file.bin")
    assert aws(ep, "s3", "ls", "--recursive", f"s3://{bucket}").stdout.strip() == ""
    listing = json.loads(aws(ep, "s3api", "list-object-versions", "--bucket", bucket).stdout)
    assert [(v["Key"], v["Size"], v["IsLatest"]) for v in listing["Versions"]] == [
        ("dir/file.bin", 15, False), ("dir/file.bin", 3 * MIB + 5, False)]
    assert [(m["Key"], m["IsLatest"]) for m in listing["DeleteMarkers"]] == [("dir/file.bin", True)]
    marker = listing["DeleteMarkers"][0]["VersionId"]
    assert marker == s3.list_object_versions(Bucket=bucket)["DeleteMarkers"][0]["VersionId"]
    old = listing["Versions"][1]["VersionId"]
    assert s3.get_object(Bucket=bucket, Key="dir/file.bin", VersionId=old)["Body"].read() == first.read_bytes()
    aws(ep, "s3api", "delete-object", "--bucket", bucket, "--key", "dir/file.bin", "--version-id", marker)
    assert s3.get_object(Bucket=bucket, Key="dir/file.bin")["Body"].read() == second.read_bytes()
    paged = json.loads(aws(ep, "s3api", "list-object-versions", "--bucket", bucket, "--page-size", "1").stdout)
    assert [v["VersionId"] for v in paged["Versions"]] == [v["VersionId"] for v in listing["Versions"]]
    assert "DeleteMarkers" not in paged or paged["DeleteMarkers"] == []
