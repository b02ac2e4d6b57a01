"""Metadata round trips per request, counted by the frontend (``cairn_s3_metadata_round_trips``):
a small GET or HEAD by a user's key reads the key, the bucket access and the object behind
one barrier; nothing of the object is served unless the user may read it. A small PUT by
a user's key is its commit alone, which carries the key and access for the state machine
to check: a refused one stores nothing, and its errors keep AWS's order."""

from __future__ import annotations

import re

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from chaos.cluster import ACCESS_KEY, SECRET_KEY
from tests.cluster.test_access import admin, code, new_user

pytestmark = pytest.mark.cluster


def _trips(cluster, operation: str, index: int) -> tuple[float, float]:
    """(sum, count) of the round-trip histogram for ``operation`` on frontend ``index``."""
    status, body = cluster.admin("GET", "metrics", index=index)
    text = body["raw"] if isinstance(body, dict) and "raw" in body else str(body)
    assert status == 200, text[:300]
    found = {}
    for what in ("sum", "count"):
        match = re.search(rf'^cairn_s3_metadata_round_trips_{what}{{operation="{operation}"}} ([0-9.e+]+)$', text, re.M)
        found[what] = float(match.group(1)) if match else 0.0
    return found["sum"], found["count"]


def test_a_users_small_get_and_head_cost_one_round_trip(cluster, s3):
    _, carol = new_user(cluster, "carol-trips")  # a client of frontend 1
    carol.create_bucket(Bucket="carol-trips")
    carol.put_object(Bucket="carol-trips", Key="k", Body=b"x" * 4096)
    carol.get_object(Bucket="carol-trips", Key="k")["Body"].read()  # the secret is confirmed and cached now
    for operation, call in (("GetObject", lambda: carol.get_object(Bucket="carol-trips", Key="k")["Body"].read()),
                            ("HeadObject", lambda: carol.head_object(Bucket="carol-trips", Key="k"))):
        before = _trips(cluster, operation, 1)
        for _ in range(5):
            call()
        after = _trips(cluster, operation, 1)
        assert after[1] - before[1] == 5
        assert after[0] - before[0] == 5, (operation, before, after)  # one each
    before = _trips(cluster, "GetObject", 1)
    with pytest.raises(ClientError) as missing:
        carol.get_object(Bucket="carol-trips", Key="absent")
    assert code(missing) == "NoSuchKey"
    assert _trips(cluster, "GetObject", 1)[0] - before[0] == 1


def test_a_prefetched_object_is_never_served_to_a_user_who_may_not_read_it(cluster, s3):
    _, dave = new_user(cluster, "dave-trips")
    s3.create_bucket(Bucket="root-private-trips")
    s3.put_object(Bucket="root-private-trips", Key="secret", Body=b"root only")
    for call in (lambda: dave.get_object(Bucket="root-private-trips", Key="secret"),
                 lambda: dave.head_object(Bucket="root-private-trips", Key="secret"),
                 lambda: dave.get_object(Bucket="root-private-trips", Key="absent")):
        with pytest.raises(ClientError) as denied:
            call()
        assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as nobucket:
        dave.get_object(Bucket="no-such-bucket-trips", Key="k")
    assert code(nobucket) == "NoSuchBucket"


def test_a_users_small_put_costs_one_round_trip_and_is_authorized_by_its_commit(cluster, s3):
    key, erin = new_user(cluster, "erin-trips")
    _, frank = new_user(cluster, "frank-trips")
    erin.create_bucket(Bucket="erin-trips")
    erin.put_object(Bucket="erin-trips", Key="warm", Body=b"w")  # each key's identity confirmed, cached
    with pytest.raises(ClientError):
        frank.head_object(Bucket="erin-trips", Key="warm")
    before = _trips(cluster, "PutObject", 1)
    for n in range(5):
        erin.put_object(Bucket="erin-trips", Key=f"k{n}", Body=b"x" * 4096)
    after = _trips(cluster, "PutObject", 1)
    assert after[1] - before[1] == 5
    assert after[0] - before[0] == 5, (before, after)  # the commit alone
    assert erin.get_object(Bucket="erin-trips", Key="k4")["Body"].read() == b"x" * 4096

    # a user without write access: refused by the commit (one round trip), nothing stored
    before = _trips(cluster, "PutObject", 1)
    with pytest.raises(ClientError) as denied:
        frank.put_object(Bucket="erin-trips", Key="intruder", Body=b"no")
    assert code(denied) == "AccessDenied"
    assert _trips(cluster, "PutObject", 1)[0] - before[0] == 1
    with pytest.raises(ClientError) as bad_md5:  # the request's own error is not told before AccessDenied
        frank.put_object(Bucket="erin-trips", Key="intruder", Body=b"no", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
    assert code(bad_md5) == "AccessDenied"
    with pytest.raises(ClientError) as nobucket:
        frank.put_object(Bucket="no-such-bucket-trips", Key="k", Body=b"no")
    assert code(nobucket) == "NoSuchBucket"
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket="erin-trips", Key="intruder")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as own:  # the owner's own mistake is hers to see
        erin.put_object(Bucket="erin-trips", Key="k", Body=b"no", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
    assert code(own) == "BadDigest"

    # a large body is authorized before a byte of it is stored
    with pytest.raises(ClientError) as large:
        frank.put_object(Bucket="erin-trips", Key="big", Body=b"y" * (1 << 20))
    assert code(large) == "AccessDenied"

    # a key deleted since it was confirmed: its next commit refuses it
    admin(cluster, "key", "rm", key["access_key"])
    with pytest.raises(ClientError) as gone:
        erin.put_object(Bucket="erin-trips", Key="late", Body=b"late")
    assert code(gone) == "InvalidAccessKeyId"
    with pytest.raises(ClientError):
        s3.head_object(Bucket="erin-trips", Key="late")


def test_a_part_costs_its_commit_and_a_users_key_look_up(cluster, s3):
    """An upload's checksum algorithm is read once per frontend, behind a user's key
    look-up: a part by the root key on the frontend that created its upload is its commit
    alone, and one by a user's key costs that look-up and the commit."""
    root1 = boto3.client("s3", endpoint_url=cluster.endpoints[1], aws_access_key_id=ACCESS_KEY,
                         aws_secret_access_key=SECRET_KEY, region_name="us-east-1",  # parts carry no checksum:
                         config=Config(retries={"max_attempts": 1},  # the upload's algorithm is computed
                                       request_checksum_calculation="when_required"))
    _, gina = new_user(cluster, "gina-trips")
    _, hank = new_user(cluster, "hank-trips")
    gina.create_bucket(Bucket="gina-trips")
    hank.list_buckets()  # each key's identity confirmed
    upload = root1.create_multipart_upload(Bucket="gina-trips", Key="root", ChecksumAlgorithm="SHA256")["UploadId"]
    before = _trips(cluster, "UploadPart", 1)
    etags = [root1.upload_part(Bucket="gina-trips", Key="root", UploadId=upload, PartNumber=n,
                               Body=b"r" * 4096)["ETag"] for n in (1, 2, 3)]
    after = _trips(cluster, "UploadPart", 1)
    assert (after[0] - before[0], after[1] - before[1]) == (3, 3), (before, after)
    parts = root1.list_parts(Bucket="gina-trips", Key="root", UploadId=upload)["Parts"]
    assert [p["ETag"] for p in parts] == etags and all(p.get("ChecksumSHA256") for p in parts)

    # a user's upload begun on another frontend: the first part reads it behind the look-up
    upload = s3.create_multipart_upload(Bucket="gina-trips", Key="user")["UploadId"]
    before = _trips(cluster, "UploadPart", 1)
    for n in (1, 2):
        gina.upload_part(Bucket="gina-trips", Key="user", UploadId=upload, PartNumber=n, Body=b"g" * 4096)
    after = _trips(cluster, "UploadPart", 1)
    assert after[0] - before[0] == 4, (before, after)

    # the upload's answer is read before authorization, and never told to a caller refused
    with pytest.raises(ClientError) as denied:
        hank.upload_part(Bucket="gina-trips", Key="user", UploadId=upload, PartNumber=3, Body=b"h")
    assert code(denied) == "AccessDenied"
    with pytest.raises(ClientError) as denied:
        hank.upload_part(Bucket="gina-trips", Key="user", UploadId="no-such-upload", PartNumber=1, Body=b"h")
    assert code(denied) == "AccessDenied"
    with pytest.raises(ClientError) as missing:
        gina.upload_part(Bucket="gina-trips", Key="user", UploadId="no-such-upload", PartNumber=1, Body=b"g")
    assert code(missing) == "NoSuchUpload"
    with pytest.raises(ClientError) as other_key:  # an upload of another key is not this one's
        gina.upload_part(Bucket="gina-trips", Key="other", UploadId=upload, PartNumber=1, Body=b"g")
    assert code(other_key) == "NoSuchUpload"
    assert [p["PartNumber"] for p in gina.list_parts(Bucket="gina-trips", Key="user", UploadId=upload)["Parts"]] \
        == [1, 2]

    # an upload ended through another frontend, still known here: its part's commit refuses it
    s3.abort_multipart_upload(Bucket="gina-trips", Key="user", UploadId=upload)
    with pytest.raises(ClientError) as ended:
        gina.upload_part(Bucket="gina-trips", Key="user", UploadId=upload, PartNumber=3, Body=b"g" * 4096)
    assert code(ended) == "NoSuchUpload"
    assert upload not in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="gina-trips").get("Uploads", [])]
