"""Multipart uploads through boto3 and the aws CLI, against a real cluster."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
from botocore.exceptions import ClientError

from chaos.cluster import Cluster
from tests.cluster.test_cli_tools import aws

pytestmark = pytest.mark.cluster
MIB = 1024 * 1024


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def _file(path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("size", [0, 5 * MIB, 8 * MIB + 1, 40 * MIB + 7])
def test_upload_file_download_file(s3, s3b, bucket, tmp_path, size):
    data = _file(tmp_path / "src", size)
    s3.upload_file(str(tmp_path / "src"), bucket, "f")
    s3b.download_file(bucket, "f", str(tmp_path / "dst"))
    assert (tmp_path / "dst").read_bytes() == data
    head = s3b.head_object(Bucket=bucket, Key="f", ChecksumMode="ENABLED")
    if size > 8 * MIB:  # boto3's default threshold: a multipart upload with its S3 ETag
        parts = [data[i : i + 8 * MIB] for i in range(0, size, 8 * MIB)]
        md5s = b"".join(hashlib.md5(p).digest() for p in parts)
        assert head["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-{len(parts)}"'
        assert head["ChecksumCRC32"].endswith(f"-{len(parts)}")
        second = s3.get_object(Bucket=bucket, Key="f", PartNumber=2)
        assert second["Body"].read() == parts[1]
        assert second["PartsCount"] == len(parts)


def test_aws_cli_multipart_both_ways(cluster, tmp_path):
    ep = cluster.endpoints[1]
    aws(ep, "s3", "mb", "s3://cli-multipart")
    data = _file(tmp_path / "big.bin", 21 * MIB + 3)
    aws(ep, "s3", "cp", str(tmp_path / "big.bin"), "s3://cli-multipart/big.bin")
    aws(cluster.endpoints[0], "s3", "cp", "s3://cli-multipart/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data


def _parts(s3, bucket: str, key: str, bodies: list[bytes]) -> tuple[str, list[dict]]:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = []
    for i, body in enumerate(bodies, 1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=i, Body=body)["ETag"]
        done.append({"PartNumber": i, "ETag": etag})
    return upload_id, done


def test_complete_rules_and_errors(s3, bucket):
    small = os.urandom(1000)
    upload_id, parts = _parts(s3, bucket, "rules", [small, small])
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="rules", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert code(e) == "EntityTooSmall"
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="rules", UploadId=upload_id,
                                     MultipartUpload={"Parts": [parts[1], parts[0]]})
    assert code(e) == "InvalidPartOrder"
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="rules", UploadId=upload_id,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]})
    assert code(e) == "InvalidPart"
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="rules", UploadId=upload_id, PartNumber=10001, Body=b"x")
    assert code(e) == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="rules", UploadId="no-such-upload", PartNumber=1, Body=b"x")
    assert code(e) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="other-key", UploadId=upload_id, PartNumber=1, Body=b"x")
    assert code(e) == "NoSuchUpload"
    # a single small part is a valid (last) part
    done = s3.complete_multipart_upload(Bucket=bucket, Key="rules", UploadId=upload_id,
                                        MultipartUpload={"Parts": parts[:1]})
    assert s3.get_object(Bucket=bucket, Key="rules")["Body"].read() == small
    assert done["ETag"].endswith('-1"')


def test_reupload_replaces_part_and_retried_complete(s3, s3b, bucket):
    a, b, c = os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(123)
    upload_id, parts = _parts(s3, bucket, "re", [a, c])
    parts[0]["ETag"] = s3b.upload_part(Bucket=bucket, Key="re", UploadId=upload_id, PartNumber=1, Body=b)["ETag"]
    listed = s3.list_parts(Bucket=bucket, Key="re", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed] == [(1, 5 * MIB, parts[0]["ETag"]), (2, 123, parts[1]["ETag"])]
    first = s3.complete_multipart_upload(Bucket=bucket, Key="re", UploadId=upload_id, MultipartUpload={"Parts": parts})
    again = s3b.complete_multipart_upload(Bucket=bucket, Key="re", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert again["ETag"] == first["ETag"]
    assert s3.get_object(Bucket=bucket, Key="re")["Body"].read() == b + c
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="re", UploadId=upload_id, MultipartUpload={"Parts": parts[:1]})
    assert code(e) == "NoSuchUpload"


def test_parts_across_frontends_in_parallel(cluster, bucket):
    clients = [cluster.s3(0), cluster.s3(1)]
    upload_id = clients[0].create_multipart_upload(Bucket=bucket, Key="spread")["UploadId"]
    bodies = [os.urandom(5 * MIB + i) for i in range(6)]
    etags: dict[int, str] = {}

    def send(i: int) -> None:
        client = cluster.s3(i % 2)
        etags[i + 1] = client.upload_part(Bucket=bucket, Key="spread", UploadId=upload_id, PartNumber=i + 1,
                                          Body=bodies[i])["ETag"]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    listed = clients[1].list_parts(Bucket=bucket, Key="spread", UploadId=upload_id, MaxParts=4)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3, 4] and listed["IsTruncated"]
    rest = clients[0].list_parts(Bucket=bucket, Key="spread", UploadId=upload_id,
                                 PartNumberMarker=listed["NextPartNumberMarker"])
    assert [p["PartNumber"] for p in rest["Parts"]] == [5, 6]
    parts = [{"PartNumber": n, "ETag": etags[n]} for n in range(1, 7)]
    clients[1].complete_multipart_upload(Bucket=bucket, Key="spread", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert clients[0].get_object(Bucket=bucket, Key="spread")["Body"].read() == b"".join(bodies)


def test_upload_part_copy(s3, bucket):
    source = os.urandom(7 * MIB)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="copied")["UploadId"]
    p1 = s3.upload_part_copy(Bucket=bucket, Key="copied", UploadId=upload_id, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=f"bytes=0-{5 * MIB - 1}")
    p2 = s3.upload_part_copy(Bucket=bucket, Key="copied", UploadId=upload_id, PartNumber=2,
                             CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange="bytes=100-199")
    parts = [{"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]}]
    s3.complete_multipart_upload(Bucket=bucket, Key="copied", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="copied")["Body"].read() == source[: 5 * MIB] + source[100:200]


def test_list_multipart_uploads(s3, bucket):
    ids = {}
    for key in ("a/1", "a/2", "b", "b", "c/x/y"):
        ids.setdefault(key, []).append(s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"])
    listed = s3.list_multipart_uploads(Bucket=bucket)
    assert [(u["Key"], u["UploadId"]) for u in listed["Uploads"]] == [
        ("a/1", ids["a/1"][0]), ("a/2", ids["a/2"][0]), ("b", ids["b"][0]), ("b", ids["b"][1]), ("c/x/y", ids["c/x/y"][0])]
    grouped = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["a/", "c/"]
    assert [u["Key"] for u in grouped["Uploads"]] == ["b", "b"]
    seen = []
    pages = s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2})
    for page in pages:
        seen += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
    assert seen == [(u["Key"], u["UploadId"]) for u in listed["Uploads"]]
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket, Prefix="a/")["Uploads"]] == ["a/1", "a/2"]
    for key, upload_ids in ids.items():
        for upload_id in upload_ids:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_racing_complete_and_abort_leave_no_orphans(cluster, bucket):
    """Parts still streaming when their upload completes or aborts: nothing half-visible,
    and every chunk they wrote is reclaimed."""
    s3 = cluster.s3(0)
    for ending in ("complete", "abort"):
        key = f"race-{ending}"
        upload_id, parts = _parts(s3, bucket, key, [os.urandom(5 * MIB)])
        errors: list[str] = []

        def late_part(n: int, key: str = key, upload_id: str = upload_id, errors: list[str] = errors) -> None:
            try:
                cluster.s3(1).upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n,
                                          Body=os.urandom(12 * MIB))
            except ClientError as exc:
                errors.append(exc.response["Error"]["Code"])

        threads = [threading.Thread(target=late_part, args=(n,)) for n in (2, 3, 4)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        if ending == "complete":
            s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        else:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        for t in threads:
            t.join()
        assert set(errors) <= {"NoSuchUpload"}
        if ending == "complete":
            assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == 5 * MIB
        else:
            with pytest.raises(ClientError):
                s3.head_object(Bucket=bucket, Key=key)
    assert cluster.wait_no_orphans() == set()


def test_abort_reclaims_every_chunk(cluster, s3, bucket):
    before = set(cluster.chunk_files())
    upload_id, _ = _parts(s3, bucket, "aborted", [os.urandom(5 * MIB), os.urandom(3 * MIB)])
    assert set(cluster.chunk_files()) - before
    s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=upload_id)
    deadline = time.monotonic() + 20
    while set(cluster.chunk_files()) - before and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not set(cluster.chunk_files()) - before


def test_incomplete_upload_expires(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("expiry"), frontends=1, chunk_size=MIB, gc_grace=0.5, gc_interval=0.3,
                 upload_ttl=3.0, upload_expiry_interval=1.0) as cluster:
        s3 = cluster.s3(0)
        s3.create_bucket(Bucket="expiring")
        upload_id, _ = _parts(s3, "expiring", "left-behind", [os.urandom(2 * MIB)])
        assert cluster.chunk_files()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                s3.list_parts(Bucket="expiring", Key="left-behind", UploadId=upload_id)
            except ClientError as exc:
                assert code(pytest.ExceptionInfo.from_exc_info((type(exc), exc, exc.__traceback__))) == "NoSuchUpload"
                break
            time.sleep(0.5)
        else:
            pytest.fail("the upload was not aborted by the expiry task")
        assert cluster.wait_no_orphans() == set()
        assert not cluster.chunk_files()
        status, info = cluster.admin("GET", "uploads")
        assert status == 200 and info["expiry"]["aborted_total"] >= 1 and info["expiry"]["ttl"] == 3.0
        # an operator can trigger a pass at once
        s3.create_multipart_upload(Bucket="expiring", Key="second")
        time.sleep(3.2)
        status, info = cluster.admin("POST", "uploads/expire")
        assert status == 200 and info["uploads"] == 0
        anonymous = __import__("urllib.request").request
        with pytest.raises(Exception) as denied:
            anonymous.urlopen(anonymous.Request(f"{cluster.endpoints[0]}/_cairn/uploads/expire", method="POST", data=b""))
        assert getattr(denied.value, "code", None) == 403


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_full_object_checksum(s3, bucket, algorithm):
    import base64

    from frontend.checksums import new_checksum

    bodies = [os.urandom(5 * MIB), os.urandom(777)]
    key = f"full-{algorithm}"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm,
                                           ChecksumType="FULL_OBJECT")["UploadId"]
    parts = []
    for i, body in enumerate(bodies, 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=i, Body=body,
                           ChecksumAlgorithm=algorithm)
        parts.append({"PartNumber": i, "ETag": r["ETag"], f"Checksum{algorithm}": r[f"Checksum{algorithm}"]})
    whole = new_checksum(algorithm.lower())
    whole.update(b"".join(bodies))
    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
                                        ChecksumType="FULL_OBJECT", **{f"Checksum{algorithm}": whole.b64digest()})
    assert done[f"Checksum{algorithm}"] == whole.b64digest()
    got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(bodies)  # botocore validates the full-object checksum too
    assert got[f"Checksum{algorithm}"] == whole.b64digest()
    assert base64.b64decode(whole.b64digest())


def test_a_part_with_another_algorithm_than_its_uploads_is_refused(s3, bucket):
    """Every part's checksum is of the upload's algorithm (AWS: InvalidRequest, "Checksum
    Type mismatch"), refused before it is stored; a part without one has the upload's
    computed. botocore sends CRC32 by default, so a SHA-256 upload's parts name it."""
    key = "mismatched-parts"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]
    with pytest.raises(ClientError) as mismatch:
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 10,
                       ChecksumAlgorithm="CRC32")
    assert mismatch.value.response["Error"]["Code"] == "InvalidRequest"
    assert "expected checksum Type: sha256, actual checksum Type: crc32" in mismatch.value.response["Error"]["Message"]
    assert s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", []) == []
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 10,
                          ChecksumAlgorithm="SHA256")
    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]}]})
    assert done["ChecksumSHA256"].endswith("-1")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"x" * 10
