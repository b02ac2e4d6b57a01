"""Small objects live in their manifest: replicated and fsynced by Raft with the commit,
no blob-node write, nothing to garbage-collect. Everything S3 does with them still works."""

from __future__ import annotations

import hashlib
import os

import pytest
import trio

from core import chunksum
from frontend.datapath import DataPath, Settings
from frontend.errors import S3Error

pytestmark = pytest.mark.cluster
KIB = 1024


def test_small_objects_write_no_chunk_files(cluster, s3, s3b, bucket):
    before = set(cluster.chunk_files())
    bodies = {f"small{n}": os.urandom(n) for n in (1, 100, 4 * KIB, 16 * KIB)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert set(cluster.chunk_files()) == before
    for key, body in bodies.items():
        got = s3b.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == body and got["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    body = bodies[f"small{4 * KIB}"]
    assert s3.get_object(Bucket=bucket, Key=f"small{4 * KIB}", Range="bytes=100-199")["Body"].read() == body[100:200]
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": f"small{4 * KIB}"})
    s3.delete_object(Bucket=bucket, Key=f"small{4 * KIB}")
    assert s3b.get_object(Bucket=bucket, Key="copy")["Body"].read() == body
    # one byte over the limit goes to blob nodes as before
    s3.put_object(Bucket=bucket, Key="bigger", Body=os.urandom(16 * KIB + 1))
    assert len(set(cluster.chunk_files()) - before) == 1


def test_multipart_with_a_small_last_part(s3, bucket):
    first, last = os.urandom(5 * 1024 * KIB), os.urandom(3 * KIB)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    parts = []
    for number, body in ((1, first), (2, last)):
        etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload["UploadId"], PartNumber=number, Body=body)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == first + last
    assert s3.get_object(Bucket=bucket, Key="mp", PartNumber=2)["Body"].read() == last


@pytest.mark.parametrize("checksum", [hashlib.sha256(b"abc").hexdigest(), chunksum.compute(b"abc").value],
                         ids=["sha256", "xxh3"])
def test_corrupt_inline_bytes_are_never_served(checksum):
    data = DataPath(None, None, Settings())  # an inline chunk needs no raftmeta and no blob node
    good = [os.urandom(16).hex(), 3, checksum, [], b"abc"]
    assert trio.run(data.read_chunk, good) == b"abc"
    with pytest.raises(S3Error):
        trio.run(data.read_chunk, [*good[:4], b"abd"])
