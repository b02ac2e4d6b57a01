"""Bucket lifecycle rules acted on by the leader's lifecycle chore, in a real cluster.

The cluster's lifecycle "day" is ``DAY`` seconds, so a rule of ``Days=1`` comes due one
to two days (2-4 s) after an object is written: S3 rounds every due time up to the next
day boundary, ``ceil((created + days * DAY) / DAY) * DAY``. Tests wait for a pass of the
chore that *started* after the latest possible due time (the bucket's progress in
``GET /_cairn/lifecycle``) and then assert the exact state: no fixed sleeps."""

from __future__ import annotations

import base64
import hashlib
import math
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chaos.cluster import ACCESS_KEY, SECRET_KEY, Cluster

pytestmark = pytest.mark.cluster

DAY = 2.0
INTERVAL = 0.5
RATE = 100.0  # actions per second: a pass over FAILOVER_KEYS expiring keys takes ~6 s
FAILOVER_KEYS = 600
MARGIN = 0.25  # a pass "started after T" if its first entry is this much later (the scan's clock ran first)


@pytest.fixture(scope="module")
def lc(tmp_path_factory: pytest.TempPathFactory):
    flags = ["--lifecycle-day-seconds", str(DAY), "--lifecycle-interval", str(INTERVAL),
             "--lifecycle-rate", str(RATE)]
    with Cluster(tmp_path_factory.mktemp("lifecycle"), frontends=1, chunk_size=1024 * 1024,
                 gc_grace=1.0, gc_interval=0.5, raftmeta_flags=flags) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def s3(lc: Cluster):
    return lc.s3(0, max_pool_connections=16)


# ---------------------------------------------------------------- helpers


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def status(exc: pytest.ExceptionInfo) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def due_bound(t: float, days: int = 1) -> float:
    """The latest due time of an action ``days`` after anything that happened by ``t``."""
    return math.ceil((t + days * DAY) / DAY) * DAY


def lifecycle_status(cluster: Cluster) -> dict[str, Any]:
    st, reply = cluster.admin("GET", "lifecycle")
    assert st == 200 and reply.get("ok"), reply
    return reply


def wait_pass(cluster: Cluster, bucket: str, after: float, timeout: float | None = None) -> dict[str, Any]:
    """Until a pass over ``bucket`` that started after ``after`` has completed; its progress.
    The default deadline is two lifecycle days past ``after`` (plus scheduling slack)."""
    deadline = max(after, time.time()) + (timeout if timeout is not None else 2 * DAY + 5)
    last: Any = None
    while time.time() < deadline:
        st, reply = cluster.admin("GET", "lifecycle")
        if st == 200 and reply.get("ok"):
            last = progress = reply["lifecycle"]["buckets"].get(bucket)
            if (progress and progress.get("pass_started") and progress.get("last_completed")
                    and progress["pass_started"] > after + MARGIN
                    and progress["last_completed"] >= progress["pass_started"]):
                return progress
        else:
            last = reply
        time.sleep(0.1)
    raise AssertionError(f"no completed lifecycle pass over {bucket} started after {after:.2f} "
                         f"(now {time.time():.2f}); last progress: {last}")


def keys(s3, bucket: str, **kw: Any) -> list[str]:  # noqa: ANN001
    out, token = [], None
    while True:
        page = s3.list_objects_v2(Bucket=bucket, **kw, **({"ContinuationToken": token} if token else {}))
        out += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]


def versions(s3, bucket: str, **kw: Any) -> tuple[list[dict], list[dict]]:  # noqa: ANN001
    """(versions, delete markers), all pages."""
    vs: list[dict] = []
    ms: list[dict] = []
    marker: dict[str, str] = {}
    while True:
        page = s3.list_object_versions(Bucket=bucket, **kw, **marker)
        vs += page.get("Versions", [])
        ms += page.get("DeleteMarkers", [])
        if not page.get("IsTruncated"):
            return vs, ms
        marker = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}


def vids_of(s3, bucket: str, key: str) -> list[str]:  # noqa: ANN001
    vs, _ = versions(s3, bucket, Prefix=key)
    return [v["VersionId"] for v in vs if v["Key"] == key]


def put_rules(s3, bucket: str, *rules: dict[str, Any]) -> None:  # noqa: ANN001
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": list(rules)})


def enable_versioning(s3, bucket: str) -> None:  # noqa: ANN001
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def raw_put_lifecycle(cluster: Cluster, bucket: str, body: bytes) -> tuple[int, str, bytes]:
    """PUT ?lifecycle with an arbitrary body (boto3 validates its own), signed and with a
    correct Content-MD5: (status, error code, body)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{cluster.endpoints[0]}/{bucket}?lifecycle"
    headers = {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
               "Content-Type": "application/xml", "x-amz-content-sha256": hashlib.sha256(body).hexdigest()}
    req = AWSRequest("PUT", url, data=body, headers=headers)
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    http = urllib.request.Request(url, method="PUT", headers=dict(req.headers.items()), data=body)
    try:
        with urllib.request.urlopen(http, timeout=30) as r:
            return r.status, "", r.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            found = next((el.text or "" for el in ET.fromstring(raw).iter() if el.tag.endswith("Code")), "")
        except ET.ParseError:
            found = ""
        return exc.code, found, raw


# ---------------------------------------------------------------- Expiration, unversioned


def test_expiration_days_prefix_tag_and_size_filters(lc, s3):
    bucket = "lc-expire"
    s3.create_bucket(Bucket=bucket)
    put_rules(s3, bucket,
              {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 1}},
              {"ID": "tagged", "Filter": {"Tag": {"Key": "expire", "Value": "yes"}}, "Status": "Enabled",
               "Expiration": {"Days": 1}},
              {"ID": "big", "Filter": {"ObjectSizeGreaterThan": 1000}, "Status": "Enabled",
               "Expiration": {"Days": 1}},
              {"ID": "off", "Filter": {"Prefix": "disabled/"}, "Status": "Disabled", "Expiration": {"Days": 1}},
              {"ID": "slow", "Filter": {"Prefix": "slow/"}, "Status": "Enabled", "Expiration": {"Days": 3}})
    t0 = time.time()
    goners = {"logs/a": b"a", "logs/deep/b": b"b", "tag/yes": b"y", "tag/later": b"l", "size/big": b"x" * 2000}
    stayers = {"logs": b"no slash", "logsx/a": b"other prefix", "keep/a": b"k", "tag/no": b"n",
               "tag/retagged": b"r", "tag/other-key": b"o", "size/exact": b"x" * 1000, "size/small": b"x" * 10,
               "disabled/a": b"d", "slow/a": b"three days"}
    tagging = {"tag/yes": "expire=yes", "tag/no": "expire=no", "tag/retagged": "expire=yes",
               "tag/other-key": "keep=yes&other=yes"}
    for key, body in {**goners, **stayers}.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, **({"Tagging": tagging[key]} if key in tagging else {}))
    # tags changed after the write count: the rule sees the object's tags when it is due
    s3.put_object_tagging(Bucket=bucket, Key="tag/later", Tagging={"TagSet": [{"Key": "expire", "Value": "yes"}]})
    s3.put_object_tagging(Bucket=bucket, Key="tag/retagged",
                          Tagging={"TagSet": [{"Key": "expire", "Value": "no"}]})
    t1 = time.time()
    if time.time() < t0 + DAY:  # nothing can be due before a day has passed
        assert sorted(keys(s3, bucket)) == sorted({**goners, **stayers})

    wait_pass(lc, bucket, due_bound(t1))
    assert sorted(keys(s3, bucket)) == sorted(stayers), "exactly the matching objects expire"
    for key in goners:
        with pytest.raises(ClientError) as e:
            s3.head_object(Bucket=bucket, Key=key)
        assert status(e) == 404
    for key, body in stayers.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    assert s3.list_object_versions(Bucket=bucket).get("DeleteMarkers", []) == [], \
        "an unversioned bucket gets no delete markers"
    if time.time() < t0 + 3 * DAY:  # Days=3 cannot be due yet
        assert s3.get_object(Bucket=bucket, Key="slow/a")["Body"].read() == b"three days"

    # a while later the others are still there, and the Days=3 one has gone too
    wait_pass(lc, bucket, max(due_bound(time.time()), due_bound(t1, 3)))
    assert sorted(keys(s3, bucket)) == sorted(set(stayers) - {"slow/a"})
    progress = lifecycle_status(lc)["lifecycle"]["buckets"][bucket]
    assert progress["expired"] == len(goners) + 1, progress
    assert progress["rules"] == 5 and progress["enabled_rules"] == 4, progress


def test_expiration_date_and_overwrite(lc, s3):
    bucket = "lc-date"
    s3.create_bucket(Bucket=bucket)
    put_rules(s3, bucket,
              {"ID": "past", "Filter": {"Prefix": "past/"}, "Status": "Enabled",
               "Expiration": {"Date": datetime(2020, 1, 1, tzinfo=UTC)}},
              {"ID": "future", "Filter": {"Prefix": "future/"}, "Status": "Enabled",
               "Expiration": {"Date": datetime(2099, 1, 1, tzinfo=UTC)}},
              {"ID": "days", "Filter": {"Prefix": "rewritten/"}, "Status": "Enabled", "Expiration": {"Days": 1}})
    first = time.time()
    s3.put_object(Bucket=bucket, Key="rewritten/k", Body=b"first")
    for key in ("past/a", "past/b", "future/a", "other/a"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    t1 = time.time()
    wait_pass(lc, bucket, t1)  # a past Date applies at once, whenever the object was written
    assert sorted(keys(s3, bucket)) == ["future/a", "other/a", "rewritten/k"]

    # an overwrite just before the first version is due starts the count again
    while time.time() < due_bound(first) - 0.3:
        time.sleep(0.05)
    before = time.time()
    s3.put_object(Bucket=bucket, Key="rewritten/k", Body=b"second")
    rewritten = time.time()
    progress = wait_pass(lc, bucket, due_bound(first))
    if progress["pass_started"] < before + DAY:  # that pass ran before the new one was due
        assert s3.get_object(Bucket=bucket, Key="rewritten/k")["Body"].read() == b"second"
    wait_pass(lc, bucket, due_bound(rewritten))
    assert sorted(keys(s3, bucket)) == ["future/a", "other/a"]
    assert lifecycle_status(lc)["lifecycle"]["buckets"][bucket]["expired"] == 3


def test_expiration_in_suspended_bucket_replaces_the_null_version(lc, s3):
    bucket = "lc-suspended"
    s3.create_bucket(Bucket=bucket)
    enable_versioning(s3, bucket)
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"enabled era")["VersionId"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"null version").get("VersionId", "null") == "null"
    put_rules(s3, bucket, {"ID": "exp", "Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": 1}})
    t1 = time.time()
    wait_pass(lc, bucket, due_bound(t1))
    vs, ms = versions(s3, bucket)
    # S3: a null delete marker replaces the null version; the other versions stay
    assert [(v["VersionId"], v["IsLatest"]) for v in vs] == [(v1, False)], vs
    assert [(m["VersionId"], m["IsLatest"]) for m in ms] == [("null", True)], ms
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=v1)["Body"].read() == b"enabled era"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="k")
    assert status(e) == 404 and code(e) == "NoSuchKey"


# ---------------------------------------------------------------- Expiration, versioned


def test_expiration_in_versioned_bucket_adds_a_delete_marker(lc, s3):
    bucket = "lc-versioned-expire"
    s3.create_bucket(Bucket=bucket)
    enable_versioning(s3, bucket)
    put_rules(s3, bucket, {"ID": "exp", "Filter": {"Prefix": "exp/"}, "Status": "Enabled",
                           "Expiration": {"Days": 1}})
    one = s3.put_object(Bucket=bucket, Key="exp/one", Body=b"only version")["VersionId"]
    old = s3.put_object(Bucket=bucket, Key="exp/two", Body=b"old")["VersionId"]
    new = s3.put_object(Bucket=bucket, Key="exp/two", Body=b"new")["VersionId"]
    keep = s3.put_object(Bucket=bucket, Key="keep/k", Body=b"kept")["VersionId"]
    t1 = time.time()

    wait_pass(lc, bucket, due_bound(t1))
    seen = time.time()
    assert keys(s3, bucket) == ["keep/k"]
    for key in ("exp/one", "exp/two"):
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket=bucket, Key=key)
        assert status(e) == 404 and code(e) == "NoSuchKey"
        assert e.value.response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-delete-marker") == "true"
    vs, ms = versions(s3, bucket)
    assert sorted((v["Key"], v["VersionId"], v["IsLatest"]) for v in vs) == sorted(
        [("exp/one", one, False), ("exp/two", new, False), ("exp/two", old, False), ("keep/k", keep, True)])
    assert sorted((m["Key"], m["IsLatest"]) for m in ms) == [("exp/one", True), ("exp/two", True)]
    markers = {m["Key"]: m["VersionId"] for m in ms}
    # the data stays, readable by version id
    assert s3.get_object(Bucket=bucket, Key="exp/one", VersionId=one)["Body"].read() == b"only version"
    assert s3.get_object(Bucket=bucket, Key="exp/two", VersionId=new)["Body"].read() == b"new"
    assert s3.get_object(Bucket=bucket, Key="exp/two", VersionId=old)["Body"].read() == b"old"

    # a day later: no second marker stacked on the first, and the marker itself is not expired
    # (it still hides versions: not an expired object delete marker)
    wait_pass(lc, bucket, due_bound(seen))
    vs2, ms2 = versions(s3, bucket)
    assert {m["Key"]: m["VersionId"] for m in ms2} == markers and len(ms2) == 2
    assert sorted(v["VersionId"] for v in vs2) == sorted(v["VersionId"] for v in vs)


# ---------------------------------------------------------------- NoncurrentVersionExpiration


def test_noncurrent_expiration_keeps_newer_noncurrent_versions(lc, s3):
    bucket = "lc-noncurrent"
    s3.create_bucket(Bucket=bucket)
    enable_versioning(s3, bucket)
    put_rules(s3, bucket, {"ID": "nc", "Filter": {"Prefix": ""}, "Status": "Enabled",
                           "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 2}})
    t0 = time.time()
    five = [s3.put_object(Bucket=bucket, Key="five", Body=f"five-{i}".encode())["VersionId"] for i in range(5)]
    three = [s3.put_object(Bucket=bucket, Key="three", Body=f"three-{i}".encode())["VersionId"] for i in range(3)]
    one = s3.put_object(Bucket=bucket, Key="one", Body=b"one")["VersionId"]
    t1 = time.time()
    if time.time() < t0 + DAY:  # nothing has been noncurrent for a day yet
        assert vids_of(s3, bucket, "five") == five[::-1]

    wait_pass(lc, bucket, due_bound(t1))
    # five: current v4, the 2 newest noncurrent (v3, v2) kept, v1 and v0 deleted for good
    assert vids_of(s3, bucket, "five") == five[:1:-1] == [five[4], five[3], five[2]]
    for gone in five[:2]:
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket=bucket, Key="five", VersionId=gone)
        assert status(e) == 404 and code(e) == "NoSuchVersion"
    for i in (2, 3, 4):
        assert s3.get_object(Bucket=bucket, Key="five", VersionId=five[i])["Body"].read() == f"five-{i}".encode()
    assert s3.get_object(Bucket=bucket, Key="five")["Body"].read() == b"five-4"
    # three: only 2 noncurrent versions, both kept
    assert vids_of(s3, bucket, "three") == three[::-1]
    assert vids_of(s3, bucket, "one") == [one]
    assert versions(s3, bucket)[1] == [], "NoncurrentVersionExpiration adds no delete markers"

    # the kept ones stay however old they get
    wait_pass(lc, bucket, due_bound(time.time()))
    assert vids_of(s3, bucket, "five") == [five[4], five[3], five[2]]
    assert vids_of(s3, bucket, "three") == three[::-1]


# ---------------------------------------------------------------- ExpiredObjectDeleteMarker


def test_expired_object_delete_marker_is_removed(lc, s3):
    bucket = "lc-markers"
    s3.create_bucket(Bucket=bucket)
    enable_versioning(s3, bucket)
    put_rules(s3, bucket, {"ID": "eodm", "Filter": {"Prefix": ""}, "Status": "Enabled",
                           "Expiration": {"ExpiredObjectDeleteMarker": True}},
              {"ID": "cleanup", "Filter": {"Prefix": "both/"}, "Status": "Enabled",
               "Expiration": {"ExpiredObjectDeleteMarker": True},
               "NoncurrentVersionExpiration": {"NoncurrentDays": 1}})
    s3.put_object(Bucket=bucket, Key="both/k", Body=b"old")
    s3.put_object(Bucket=bucket, Key="both/k", Body=b"older")
    both_marker = s3.delete_object(Bucket=bucket, Key="both/k")["VersionId"]
    lone = s3.put_object(Bucket=bucket, Key="lone", Body=b"x")["VersionId"]
    lone_marker = s3.delete_object(Bucket=bucket, Key="lone")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="lone", VersionId=lone)  # the marker is all that is left
    bare_marker = s3.delete_object(Bucket=bucket, Key="never-existed")["VersionId"]
    hidden = s3.put_object(Bucket=bucket, Key="hidden", Body=b"still here")["VersionId"]
    hidden_marker = s3.delete_object(Bucket=bucket, Key="hidden")["VersionId"]
    live = s3.put_object(Bucket=bucket, Key="live", Body=b"live")["VersionId"]
    assert lone_marker and bare_marker and hidden_marker
    t1 = time.time()

    wait_pass(lc, bucket, t1)
    vs, ms = versions(s3, bucket)
    assert sorted((m["Key"], m["VersionId"]) for m in ms) == [("both/k", both_marker), ("hidden", hidden_marker)], \
        "lone delete markers removed; markers hiding a version kept"
    assert sorted((v["Key"], v["VersionId"]) for v in vs if v["Key"] != "both/k") == [("hidden", hidden),
                                                                                       ("live", live)]
    assert len([v for v in vs if v["Key"] == "both/k"]) == 2
    assert s3.get_object(Bucket=bucket, Key="hidden", VersionId=hidden)["Body"].read() == b"still here"
    assert s3.get_object(Bucket=bucket, Key="live")["Body"].read() == b"live"
    assert lifecycle_status(lc)["lifecycle"]["buckets"][bucket]["expired"] == 2

    # the usual cleanup: the noncurrent versions go after a day, then the marker left alone
    wait_pass(lc, bucket, due_bound(t1))
    assert versions(s3, bucket, Prefix="both/") == ([], []), "noncurrent versions and then the lone marker removed"
    assert sorted(m["Key"] for m in versions(s3, bucket)[1]) == ["hidden"]
    assert lifecycle_status(lc)["lifecycle"]["buckets"][bucket]["expired"] == 5


# ---------------------------------------------------------------- AbortIncompleteMultipartUpload


def test_abort_incomplete_multipart_upload(lc, s3):
    bucket = "lc-uploads"
    s3.create_bucket(Bucket=bucket)
    t0 = time.time()
    put_rules(s3, bucket, {"ID": "abort", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
                           "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}})
    stale = s3.create_multipart_upload(Bucket=bucket, Key="tmp/stale")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="tmp/stale", UploadId=stale, PartNumber=1, Body=b"p" * 1024)
    empty = s3.create_multipart_upload(Bucket=bucket, Key="tmp/no-parts")["UploadId"]
    kept = s3.create_multipart_upload(Bucket=bucket, Key="keep/upload")["UploadId"]
    t1 = time.time()
    if time.time() < t0 + DAY:  # none due yet
        listed = {u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
        assert listed == {stale, empty, kept}

    wait_pass(lc, bucket, due_bound(t1))
    left = s3.list_multipart_uploads(Bucket=bucket, Prefix="tmp/")
    assert left.get("Uploads", []) == [], left.get("Uploads")
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == [kept]
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="tmp/stale", UploadId=stale)
    assert status(e) == 404 and code(e) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="tmp/stale", UploadId=stale,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]})
    assert code(e) == "NoSuchUpload"
    assert keys(s3, bucket) == []
    assert s3.list_parts(Bucket=bucket, Key="keep/upload", UploadId=kept).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="keep/upload", UploadId=kept)


# ---------------------------------------------------------------- object lock


def test_compliance_locked_version_outlives_noncurrent_expiration(lc, s3):
    bucket = "lc-locked"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    put_rules(s3, bucket, {"ID": "nc", "Filter": {"Prefix": ""}, "Status": "Enabled",
                           "NoncurrentVersionExpiration": {"NoncurrentDays": 1}})
    until = float(math.ceil(time.time()) + 15)
    locked = s3.put_object(Bucket=bucket, Key="locked", Body=b"locked data", ObjectLockMode="COMPLIANCE",
                           ObjectLockRetainUntilDate=datetime.fromtimestamp(until, UTC))["VersionId"]
    newer = s3.put_object(Bucket=bucket, Key="locked", Body=b"newer")["VersionId"]
    governed = s3.put_object(Bucket=bucket, Key="governed", Body=b"governed", ObjectLockMode="GOVERNANCE",
                             ObjectLockRetainUntilDate=datetime.fromtimestamp(until, UTC))["VersionId"]
    governed_new = s3.put_object(Bucket=bucket, Key="governed", Body=b"new")["VersionId"]
    held = s3.put_object(Bucket=bucket, Key="held", Body=b"held", ObjectLockLegalHoldStatus="ON")["VersionId"]
    held_new = s3.put_object(Bucket=bucket, Key="held", Body=b"new")["VersionId"]
    free_old = s3.put_object(Bucket=bucket, Key="free", Body=b"old")["VersionId"]
    free_new = s3.put_object(Bucket=bucket, Key="free", Body=b"new")["VersionId"]
    t1 = time.time()
    retention = s3.get_object_retention(Bucket=bucket, Key="locked", VersionId=locked)["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert due_bound(t1) + MARGIN + 1 < until, "the test needs the rule due well before the lock ends"

    wait_pass(lc, bucket, due_bound(t1))
    assert time.time() < until
    assert vids_of(s3, bucket, "free") == [free_new], "the unlocked noncurrent version is expired"
    assert vids_of(s3, bucket, "locked") == [newer, locked], "a COMPLIANCE-locked version is never removed"
    assert s3.get_object(Bucket=bucket, Key="locked", VersionId=locked)["Body"].read() == b"locked data"
    assert vids_of(s3, bucket, "governed") == [governed_new, governed], "lifecycle never bypasses GOVERNANCE"
    assert vids_of(s3, bucket, "held") == [held_new, held], "a legal hold keeps a version"
    s3.put_object_legal_hold(Bucket=bucket, Key="held", VersionId=held, LegalHold={"Status": "OFF"})
    released = time.time()
    wait_pass(lc, bucket, released)
    assert vids_of(s3, bucket, "held") == [held_new], "removed once the hold is released"
    if time.time() < until:  # still locked
        assert vids_of(s3, bucket, "locked") == [newer, locked]
        assert vids_of(s3, bucket, "governed") == [governed_new, governed]

    # the lock ends: the next pass removes it
    wait_pass(lc, bucket, until, timeout=2 * DAY + 5)
    assert vids_of(s3, bucket, "locked") == [newer]
    assert vids_of(s3, bucket, "governed") == [governed_new]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="locked", VersionId=locked)
    assert status(e) == 404 and code(e) == "NoSuchVersion"
    assert s3.get_object(Bucket=bucket, Key="locked")["Body"].read() == b"newer"
    assert free_old not in vids_of(s3, bucket, "free")


# ---------------------------------------------------------------- the leader dies mid-pass


def test_pass_survives_raft_leader_kill(lc, s3):
    bucket = "lc-failover"
    s3.create_bucket(Bucket=bucket)
    names = [f"k/{i:04d}" for i in range(FAILOVER_KEYS)]
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"e"), names))
    t1 = time.time()
    # every object due at once when the rule arrives, so one pass expires them all, slowly
    while time.time() < due_bound(t1) + MARGIN:
        time.sleep(0.1)
    put_rules(s3, bucket, {"ID": "all", "Filter": {"Prefix": "k/"}, "Status": "Enabled",
                           "Expiration": {"Days": 1}})

    deadline = time.monotonic() + 20
    observed = None
    while time.monotonic() < deadline:
        reply = lifecycle_status(lc)
        progress = reply["lifecycle"]["buckets"].get(bucket) or {}
        if 0 < progress.get("expired", 0) < FAILOVER_KEYS and progress.get("cursor"):
            observed = progress
            break
        assert progress.get("expired", 0) < FAILOVER_KEYS, f"the pass ended before the test saw it: {progress}"
        time.sleep(0.05)
    assert observed is not None, "no pass in progress seen"
    old_addr = reply["leader"]
    assert old_addr in lc.raft, reply
    victim = f"raftmeta{lc.raft.index(old_addr) + 1}"
    lc.kill(victim)
    killed_at = time.time()
    try:
        deadline = time.monotonic() + 60
        left = names
        while time.monotonic() < deadline:
            try:
                left = keys(s3, bucket)
            except ClientError:
                pass  # no leader yet
            if not left:
                break
            time.sleep(0.3)
        assert left == [], f"{len(left)} of {FAILOVER_KEYS} objects never expired after the leader died"

        progress = wait_pass(lc, bucket, killed_at, timeout=30)
        reply = lifecycle_status(lc)
        assert reply["leader"] != old_addr and reply["leader"] in lc.raft, reply
        stats = reply["lifecycle"]
        progress = stats["buckets"][bucket]
        assert progress["expired"] == FAILOVER_KEYS, f"each object expired once: {progress}"
        assert progress["last_completed"] >= killed_at and progress["cursor"] == "", progress
        assert progress["passes"] >= 1, progress
        # the new leader did the rest of the pass: all but what the old one had done (at
        # most one batch of 100 after the test looked)
        assert stats["expired_total"] >= FAILOVER_KEYS - observed["expired"] - 100, (stats, observed)
        assert stats["examined_total"] >= FAILOVER_KEYS - observed["examined"] - 100, (stats, observed)
        assert stats["last_run"] and stats["last_run"] >= killed_at, stats
        assert stats["day"] == DAY and stats["rate"] == RATE and stats["interval"] == INTERVAL, stats
    finally:
        lc.start(victim)
        lc.wait_healthy()


# ---------------------------------------------------------------- configuration errors


def test_malformed_xml_keeps_configuration_and_delete_removes_it(lc, s3):
    bucket = "lc-config"
    s3.create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert status(e) == 404 and code(e) == "NoSuchLifecycleConfiguration"
    rule = {"ID": "gone-soon", "Filter": {"Prefix": "p/"}, "Status": "Enabled", "Expiration": {"Days": 1}}
    put_rules(s3, bucket, rule)
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert stored == [rule]

    bad = [
        b"<LifecycleConfiguration><Rule><ID>x</ID>",  # not well-formed
        b"<LifecycleConfiguration xmlns='http://s3.amazonaws.com/doc/2006-03-01/'><Rule><ID>x</ID>"
        b"<Filter><Prefix>q/</Prefix></Filter><Expiration><Days>1</Days></Expiration></Rule>"
        b"</LifecycleConfiguration>",  # no Status
        b"<LifecycleConfiguration xmlns='http://s3.amazonaws.com/doc/2006-03-01/'><Rule><ID>x</ID>"
        b"<Filter><Prefix>q/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>one</Days>"
        b"</Expiration></Rule></LifecycleConfiguration>",  # Days not a number
        b"<NotLifecycle><Rule/></NotLifecycle>",
        b"",
    ]
    for body in bad:
        st, err, raw = raw_put_lifecycle(lc, bucket, body)
        assert (st, err) == (400, "MalformedXML"), (body, st, raw)
        assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == stored, body

    # objects the rule would expire; the rule goes before they are due
    s3.put_object(Bucket=bucket, Key="p/a", Body=b"a")
    t1 = time.time()
    s3.delete_bucket_lifecycle(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert status(e) == 404 and code(e) == "NoSuchLifecycleConfiguration"
    assert bucket not in lifecycle_status(lc)["lifecycle"]["buckets"]
    while time.time() < due_bound(t1) + MARGIN:
        time.sleep(0.1)
    st, reply = lc.admin("POST", "lifecycle")  # a whole pass, started after the object was due
    assert st == 200 and reply.get("ok"), reply
    assert keys(s3, bucket) == ["p/a"], "a deleted configuration expires nothing"
    s3.delete_bucket_lifecycle(Bucket=bucket)  # deleting again is fine (S3: 204)


def test_configuration_replaced_whole_and_gone_with_its_bucket(lc, s3):
    bucket = "lc-replace"
    s3.create_bucket(Bucket=bucket)
    put_rules(s3, bucket, {"ID": "a", "Filter": {"Prefix": "a/"}, "Status": "Enabled", "Expiration": {"Days": 1}},
              {"ID": "b", "Filter": {"Prefix": "b/"}, "Status": "Enabled", "Expiration": {"Days": 1}})
    replacement = {"ID": "c", "Filter": {"Prefix": "c/"}, "Status": "Enabled", "Expiration": {"Days": 5}}
    put_rules(s3, bucket, replacement)
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == [replacement]
    s3.put_object(Bucket=bucket, Key="a/x", Body=b"x")
    t1 = time.time()
    wait_pass(lc, bucket, due_bound(t1))
    assert keys(s3, bucket) == ["a/x"], "a replaced rule no longer applies"

    s3.delete_object(Bucket=bucket, Key="a/x")
    s3.delete_bucket(Bucket=bucket)
    assert bucket not in lifecycle_status(lc)["lifecycle"]["buckets"]
    s3.create_bucket(Bucket=bucket)  # a new bucket of the same name starts without rules
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert status(e) == 404 and code(e) == "NoSuchLifecycleConfiguration"
    assert bucket not in lifecycle_status(lc)["lifecycle"]["buckets"]
