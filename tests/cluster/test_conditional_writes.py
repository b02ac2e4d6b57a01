"""Conditional writes and deletes against a real cluster, with boto3: If-None-Match (``*``
and ETags) and If-Match on PutObject and CompleteMultipartUpload, racing writers of
which exactly one wins, AWS's 409 ConditionalRequestConflict for an object deleted
while a multipart upload was open, and DeleteObject / DeleteObjects conditions
(If-Match, x-amz-if-match-last-modified-time, x-amz-if-match-size; ETag,
LastModifiedTime, Size per entry)."""

from __future__ import annotations

import datetime
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.cluster


def err(exc: pytest.ExceptionInfo) -> tuple[int, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def enable(s3, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def multipart(s3, bucket: str, key: str, data: bytes = b"abc", **cond):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=data)
    return lambda: s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}, **cond)


# ---------------------------------------------------------------- PutObject


def test_put_if_none_match_and_if_match(s3, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"1", IfNoneMatch="*")["ETag"]
    for cond in ({"IfNoneMatch": "*"}, {"IfNoneMatch": etag}, {"IfNoneMatch": f'"nope", {etag}'},
                 {"IfMatch": '"nope"'}):
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key="k", Body=b"2", **cond)
        assert err(exc) == (412, "PreconditionFailed"), cond
    assert body(s3, bucket, "k") == b"1"
    etag2 = s3.put_object(Bucket=bucket, Key="k", Body=b"2", IfNoneMatch='"nope"')["ETag"]
    s3.put_object(Bucket=bucket, Key="k", Body=b"3", IfMatch=etag2)
    s3.put_object(Bucket=bucket, Key="k", Body=b"4", IfMatch="*")
    assert body(s3, bucket, "k") == b"4"
    s3.delete_object(Bucket=bucket, Key="k")
    for value in ("*", etag):
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key="k", Body=b"5", IfMatch=value)
        assert err(exc) == (404, "NoSuchKey")


def test_if_match_over_a_delete_marker_is_no_such_key(s3, bucket: str) -> None:
    enable(s3, bucket)
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"1")["ETag"]
    assert s3.delete_object(Bucket=bucket, Key="k")["DeleteMarker"]
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"2", IfMatch=etag)
    assert err(exc) == (404, "NoSuchKey")
    s3.put_object(Bucket=bucket, Key="k", Body=b"3", IfNoneMatch=etag)  # absent: no ETag matches
    assert body(s3, bucket, "k") == b"3"


def test_racing_compare_and_swap_writers_exactly_one_wins(s3, s3b, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"base")["ETag"]

    def swap(i: int) -> str:
        client = (s3, s3b)[i % 2]
        try:
            client.put_object(Bucket=bucket, Key="k", Body=f"w{i}".encode(), IfMatch=etag)
            return f"w{i}"
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "PreconditionFailed"
            return ""

    with ThreadPoolExecutor(8) as pool:
        winners = [w for w in pool.map(swap, range(8)) if w]
    assert len(winners) == 1
    assert body(s3, bucket, "k") == winners[0].encode()


# ---------------------------------------------------------------- CompleteMultipartUpload


def test_complete_multipart_conditions(s3, bucket: str) -> None:
    etag = multipart(s3, bucket, "k", IfNoneMatch="*")()["ETag"]
    for cond in ({"IfNoneMatch": "*"}, {"IfNoneMatch": etag}, {"IfMatch": '"nope"'}):
        with pytest.raises(ClientError) as exc:
            multipart(s3, bucket, "k", **cond)()
        assert err(exc) == (412, "PreconditionFailed"), cond
    etag2 = multipart(s3, bucket, "k", b"second", IfMatch=etag)()["ETag"]
    assert body(s3, bucket, "k") == b"second"
    s3.delete_object(Bucket=bucket, Key="k")
    with pytest.raises(ClientError) as exc:
        multipart(s3, bucket, "k", IfMatch=etag2)()
    assert err(exc) == (404, "NoSuchKey")


def test_object_deleted_while_an_upload_was_open_is_a_conflict(s3, bucket: str) -> None:
    enable(s3, bucket)
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"1")["ETag"]
    complete = multipart(s3, bucket, "k", IfMatch=etag)
    s3.delete_object(Bucket=bucket, Key="k")  # after the initiation
    with pytest.raises(ClientError) as exc:
        complete()
    assert err(exc) == (409, "ConditionalRequestConflict")
    multipart(s3, bucket, "k", b"again", IfNoneMatch="*")()  # re-initiated: judged on the key as it is
    assert body(s3, bucket, "k") == b"again"


# ---------------------------------------------------------------- deletes


def test_delete_object_conditions(s3, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"")["ETag"]
    mtime = s3.head_object(Bucket=bucket, Key="k")["LastModified"]
    old = datetime.datetime(2015, 1, 1)
    for cond in ({"IfMatch": '"nope"'}, {"IfMatchLastModifiedTime": old}, {"IfMatchSize": 9},
                 {"IfMatch": etag, "IfMatchSize": 9}):
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=bucket, Key="k", **cond)
        assert err(exc) == (412, "PreconditionFailed"), cond
    s3.head_object(Bucket=bucket, Key="k")
    s3.delete_object(Bucket=bucket, Key="k", IfMatch=etag, IfMatchLastModifiedTime=mtime, IfMatchSize=0)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="k")
    assert err(exc)[0] == 404
    # a missing object is deleted "if it doesn't exist": 204
    response = s3.delete_object(Bucket=bucket, Key="k", IfMatch='"nope"', IfMatchSize=9)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_delete_version_if_match(s3, bucket: str) -> None:
    enable(s3, bucket)
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=bucket, Key="k", VersionId=put["VersionId"], IfMatch='"nope"')
    assert err(exc) == (412, "PreconditionFailed")
    response = s3.delete_object(Bucket=bucket, Key="k", VersionId=put["VersionId"], IfMatch=put["ETag"])
    assert "DeleteMarker" not in response
    assert not s3.list_object_versions(Bucket=bucket).get("Versions")


def test_delete_objects_conditions_per_entry(s3, bucket: str) -> None:
    etags = {k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode())["ETag"] for k in ("a", "b", "c")}
    mtime = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    reply = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "a", "ETag": '"nope"'}, {"Key": "b", "ETag": etags["b"]},
        {"Key": "c", "LastModifiedTime": mtime, "Size": 1}, {"Key": "missing", "ETag": '"nope"'}]})
    assert sorted(d["Key"] for d in reply["Deleted"]) == ["b", "c", "missing"]
    assert [(e["Key"], e["Code"]) for e in reply["Errors"]] == [("a", "PreconditionFailed")]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["a"]
