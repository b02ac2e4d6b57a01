"""Metadata round trips per request, counted by the frontend (``cairn_s3_metadata_round_trips``):
a small GET or HEAD by a user's key reads the key, the bucket access and the object behind
one barrier; nothing of the object is served unless the user may read it. A small PUT by
a user's key is its commit alone, which carries the key and access for the state machine
to check: a refused one stores nothing, and its errors keep AWS's order."""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

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
