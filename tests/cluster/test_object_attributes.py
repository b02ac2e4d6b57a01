"""GetObjectAttributes and the part checksums behind it, with boto3 against a real
cluster: a plain object, multipart objects with SHA256 (COMPOSITE) and CRC32C
(FULL_OBJECT) part checksums paged with MaxParts, GET of one part with its checksum,
versions by versionId and delete markers, a bad attribute name."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib

import crc32c
import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.cluster

MIB = 1024 * 1024
ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def status(exc: pytest.ExceptionInfo) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def sha256(data: bytes) -> str:
    return b64(hashlib.sha256(data).digest())


def crc(data: bytes) -> str:
    return b64(crc32c.crc32c(data).to_bytes(4, "big"))


def _multipart(s3, bucket: str, key: str, parts: list[bytes], algorithm: str, **create) -> dict:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm, **create)
    listed = []
    for n, data in enumerate(parts, 1):
        reply = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=n, Body=data,
                               ChecksumAlgorithm=algorithm)
        listed.append({"PartNumber": n, "ETag": reply["ETag"], f"Checksum{algorithm}": reply[f"Checksum{algorithm}"]})
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                        MultipartUpload={"Parts": listed})


def test_plain_object(s3, bucket):
    data = b"A" * 1024
    put = s3.put_object(Bucket=bucket, Key="plain", Body=data, ChecksumAlgorithm="SHA256")
    got = s3.get_object_attributes(Bucket=bucket, Key="plain", ObjectAttributes=ALL)
    assert got["ETag"] == put["ETag"].strip('"') == hashlib.md5(data).hexdigest()  # unquoted
    assert got["ObjectSize"] == 1024 and got["StorageClass"] == "STANDARD"
    assert got["Checksum"] == {"ChecksumSHA256": sha256(data), "ChecksumType": "FULL_OBJECT"}
    assert "ObjectParts" not in got and "VersionId" not in got and "DeleteMarker" not in got
    assert got["LastModified"] == s3.head_object(Bucket=bucket, Key="plain")["LastModified"]
    only = s3.get_object_attributes(Bucket=bucket, Key="plain", ObjectAttributes=["ObjectSize"])
    assert "ETag" not in only and "Checksum" not in only and only["ObjectSize"] == 1024
    s3.put_object(Bucket=bucket, Key="default", Body=b"x")  # boto3 sends a CRC32 unasked
    assert s3.get_object_attributes(Bucket=bucket, Key="default", ObjectAttributes=ALL)["Checksum"] == {
        "ChecksumCRC32": b64(zlib.crc32(b"x").to_bytes(4, "big")), "ChecksumType": "FULL_OBJECT"}


def test_multipart_sha256_paged(s3, bucket):
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(1000)]
    done = _multipart(s3, bucket, "mp", parts, "SHA256")
    composite = b64(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()) + "-3"
    assert done["ChecksumSHA256"] == composite

    first = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=ALL, MaxParts=2)
    assert first["ETag"] == done["ETag"].strip('"') and first["ObjectSize"] == 10 * MIB + 1000
    assert first["Checksum"] == {"ChecksumSHA256": composite, "ChecksumType": "COMPOSITE"}
    page = first["ObjectParts"]
    assert (page["TotalPartsCount"], page["MaxParts"], page["IsTruncated"], page["NextPartNumberMarker"]) == (
        3, 2, True, 2)
    assert page["Parts"] == [{"PartNumber": n, "Size": len(p), "ChecksumSHA256": sha256(p)}
                             for n, p in enumerate(parts[:2], 1)]
    rest = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=2,
                                    PartNumberMarker=2)["ObjectParts"]
    assert rest["PartNumberMarker"] == 2 and rest["IsTruncated"] is False
    assert rest["Parts"] == [{"PartNumber": 3, "Size": 1000, "ChecksumSHA256": sha256(parts[2])}]

    # GET of one part answers that part's own checksum
    one = s3.get_object(Bucket=bucket, Key="mp", PartNumber=3, ChecksumMode="ENABLED")
    assert one["Body"].read() == parts[2]
    assert one["ChecksumSHA256"] == sha256(parts[2]) and one["ChecksumType"] == "COMPOSITE"


def test_multipart_crc32c_full_object(s3, bucket):
    parts = [os.urandom(5 * MIB), os.urandom(777)]
    done = _multipart(s3, bucket, "crc", parts, "CRC32C", ChecksumType="FULL_OBJECT")
    assert done["ChecksumCRC32C"] == crc(b"".join(parts)) and done["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object_attributes(Bucket=bucket, Key="crc", ObjectAttributes=["Checksum", "ObjectParts"],
                                   MaxParts=1)
    assert got["Checksum"] == {"ChecksumCRC32C": crc(b"".join(parts)), "ChecksumType": "FULL_OBJECT"}
    assert got["ObjectParts"]["IsTruncated"] is True
    assert got["ObjectParts"]["Parts"] == [{"PartNumber": 1, "Size": 5 * MIB, "ChecksumCRC32C": crc(parts[0])}]


def test_versions_and_delete_markers(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="v", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="v", Body=b"second")["VersionId"]
    latest = s3.get_object_attributes(Bucket=bucket, Key="v", ObjectAttributes=["ObjectSize", "ETag"])
    assert (latest["VersionId"], latest["ObjectSize"]) == (v2, 6)
    old = s3.get_object_attributes(Bucket=bucket, Key="v", VersionId=v1, ObjectAttributes=["ObjectSize", "ETag"])
    assert (old["VersionId"], old["ObjectSize"], old["ETag"]) == (v1, 3, hashlib.md5(b"one").hexdigest())
    marker = s3.delete_object(Bucket=bucket, Key="v")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.get_object_attributes(Bucket=bucket, Key="v", ObjectAttributes=["ObjectSize"])
    assert status(exc) == 404 and exc.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    with pytest.raises(ClientError) as exc:
        s3.get_object_attributes(Bucket=bucket, Key="v", VersionId=marker, ObjectAttributes=["ObjectSize"])
    assert status(exc) == 405
    assert s3.get_object_attributes(Bucket=bucket, Key="v", VersionId=v1, ObjectAttributes=["ObjectSize"])[
        "ObjectSize"] == 3


def test_bad_requests(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    for names in (["ETag", "Owner"], ["etag"]):
        with pytest.raises(ClientError) as exc:
            s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=names)
        assert (status(exc), code(exc)) == (400, "InvalidArgument")
    with pytest.raises(ClientError) as exc:
        s3.get_object_attributes(Bucket=bucket, Key="missing", ObjectAttributes=["ETag"])
    assert status(exc) == 404


def test_post_form_checksum(s3, bucket):
    """A browser form's x-amz-checksum-<algorithm> field (covered by its policy) is
    verified and kept like a PUT's header."""
    from tests.cluster.test_access import _post

    data = os.urandom(3000)
    for key, value in (("good", sha256(data)), ("bad", sha256(b"other"))):
        post = s3.generate_presigned_post(bucket, key, Fields={"x-amz-checksum-sha256": value},
                                          Conditions=[{"x-amz-checksum-sha256": value}])
        got, body = _post(post["url"], post["fields"], "f", data)
        if key == "good":
            assert got == 204, body
        else:
            assert got == 400 and b"BadDigest" in body, body
    assert s3.get_object_attributes(Bucket=bucket, Key="good", ObjectAttributes=["Checksum"])["Checksum"] == {
        "ChecksumSHA256": sha256(data), "ChecksumType": "FULL_OBJECT"}
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="bad")
