"""S3 Object Lock against a real cluster, driven with boto3 and the aws CLI: lock-enabled
buckets, default retention, COMPLIANCE and GOVERNANCE retention (and its expiry), legal
holds, the bypass header, and the errors AWS answers (each re-read: nothing changed)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from chaos.cluster import ACCESS_KEY, SECRET_KEY
from tests.cluster.test_cli_tools import aws

pytestmark = pytest.mark.cluster


# ---------------------------------------------------------------- helpers


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def status(exc: pytest.ExceptionInfo) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def now() -> datetime:
    return datetime.now(UTC)


def lock_bucket(s3, bucket: str) -> str:
    name = bucket[:55] + "-l"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def retention(s3, bucket: str, key: str, vid: str) -> tuple[str, datetime] | None:
    try:
        got = s3.get_object_retention(Bucket=bucket, Key=key, VersionId=vid)["Retention"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchObjectLockConfiguration":
            return None
        raise
    return got["Mode"], got["RetainUntilDate"]


def version_ids(s3, bucket: str) -> list[str]:
    out = s3.list_object_versions(Bucket=bucket)
    return [v["VersionId"] for v in out.get("Versions", [])] + [m["VersionId"] for m in out.get("DeleteMarkers", [])]


def close(a: datetime, b: datetime, within: float = 1.0) -> bool:
    return abs((a - b).total_seconds()) <= within




def admin(cluster, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CAIRN_ROOT_ACCESS_KEY=ACCESS_KEY, CAIRN_ROOT_SECRET_KEY=SECRET_KEY)
    done = subprocess.run([sys.executable, "-m", "cairn.cli", "admin", "--endpoint", cluster.endpoints[0], *args],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def user_client(cluster, name: str):
    import boto3
    from botocore.config import Config

    admin(cluster, "user", "add", name)
    key = json.loads(admin(cluster, "key", "add", name).stdout)
    return boto3.client("s3", endpoint_url=cluster.endpoints[1], aws_access_key_id=key["access_key"],
                        aws_secret_access_key=key["secret_key"], region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, signature_version="s3v4"))


# ---------------------------------------------------------------- bucket configuration


def test_lock_enabled_bucket_and_configuration(s3, s3b, bucket):
    name = lock_bucket(s3, bucket)
    assert s3b.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    assert s3b.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"] == {"ObjectLockEnabled": "Enabled"}
    with pytest.raises(ClientError) as e:  # a bucket created without object lock
        s3.get_object_lock_configuration(Bucket=bucket)
    assert status(e) == 404 and code(e) == "ObjectLockConfigurationNotFoundError"
    # a default retention rule, read back from the other frontend
    rule = {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}
    s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled",
                                                                           "Rule": rule})
    assert s3b.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled", "Rule": rule}
    # malformed rules are refused and change nothing
    malformed, bad_period = ("MalformedXML", "InvalidArgument"), ("InvalidRetentionPeriod",)
    for bad, codes in (({"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1, "Years": 1}}, malformed),
                       ({"DefaultRetention": {"Mode": "GOVERNANCE"}}, malformed),
                       ({"DefaultRetention": {"Mode": "FOREVER", "Days": 1}}, malformed),
                       ({"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 0}}, bad_period),
                       ({"DefaultRetention": {"Mode": "COMPLIANCE", "Days": -3}}, bad_period)):
        with pytest.raises(ClientError) as e:
            s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled",
                                                                                   "Rule": bad})
        assert status(e) == 400, bad
        assert code(e) in codes, bad
        assert s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]["Rule"] == rule, bad
    # years instead of days; then no rule at all
    years = {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 1}}
    s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled",
                                                                           "Rule": years})
    assert s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]["Rule"] == years
    s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    assert s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"] == {"ObjectLockEnabled": "Enabled"}


def test_lock_configuration_on_an_unversioned_bucket_is_invalid_bucket_state(s3, bucket):
    config = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}
    with pytest.raises(ClientError) as e:
        s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=config)
    assert status(e) == 409 and code(e) == "InvalidBucketState"
    with pytest.raises(ClientError) as e:
        s3.get_object_lock_configuration(Bucket=bucket)
    assert code(e) == "ObjectLockConfigurationNotFoundError"
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    with pytest.raises(ClientError) as e:
        s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=config)
    assert status(e) == 409 and code(e) == "InvalidBucketState"
    with pytest.raises(ClientError) as e:
        s3.get_object_lock_configuration(Bucket=bucket)
    assert code(e) == "ObjectLockConfigurationNotFoundError"
    # versioning enabled: object lock can be turned on for the existing bucket (AWS, since 2023)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=config)
    assert s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"] == config
    with pytest.raises(ClientError) as e:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert status(e) == 409 and code(e) == "InvalidBucketState"


def test_default_retention_applies_to_new_versions(s3, s3b, bucket):
    name = lock_bucket(s3, bucket)
    unlocked = s3.put_object(Bucket=name, Key="before", Body=b"no rule yet")["VersionId"]
    s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    assert retention(s3, name, "before", unlocked) is None
    assert "ObjectLockMode" not in s3.head_object(Bucket=name, Key="before")
    t0 = now()
    vid = s3.put_object(Bucket=name, Key="k", Body=os.urandom(2 * 1024 * 1024 + 1))["VersionId"]
    head = s3b.head_object(Bucket=name, Key="k", VersionId=vid)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert close(head["ObjectLockRetainUntilDate"], t0 + timedelta(days=1), within=120)
    assert retention(s3b, name, "k", vid) == ("GOVERNANCE", head["ObjectLockRetainUntilDate"])
    got = s3.get_object(Bucket=name, Key="k")
    assert got["ObjectLockMode"] == "GOVERNANCE" and got["ObjectLockRetainUntilDate"] == head["ObjectLockRetainUntilDate"]
    # explicit headers win over the default
    until = (now() + timedelta(days=2)).replace(microsecond=0)
    explicit = s3.put_object(Bucket=name, Key="k2", Body=b"x", ObjectLockMode="COMPLIANCE",
                             ObjectLockRetainUntilDate=until)["VersionId"]
    assert retention(s3, name, "k2", explicit) == ("COMPLIANCE", until)
    # a copy and a multipart upload get the default as well
    copied = s3.copy_object(Bucket=name, Key="copy", CopySource={"Bucket": name, "Key": "before"})["VersionId"]
    assert s3.head_object(Bucket=name, Key="copy", VersionId=copied)["ObjectLockMode"] == "GOVERNANCE"
    upload = s3.create_multipart_upload(Bucket=name, Key="mpu")["UploadId"]
    part = s3.upload_part(Bucket=name, Key="mpu", UploadId=upload, PartNumber=1, Body=b"p" * 1000)
    done = s3.complete_multipart_upload(Bucket=name, Key="mpu", UploadId=upload,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    head = s3.head_object(Bucket=name, Key="mpu", VersionId=done["VersionId"])
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert close(head["ObjectLockRetainUntilDate"], now() + timedelta(days=1), within=120)
    # the default protects: no delete by id without bypass
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=name, Key="k", VersionId=vid)
    assert status(e) == 403 and code(e) == "AccessDenied"
    assert s3.head_object(Bucket=name, Key="k", VersionId=vid)["VersionId"] == vid


def test_lock_headers_on_copy_and_multipart(s3, bucket):
    name = lock_bucket(s3, bucket)
    src = s3.put_object(Bucket=name, Key="src", Body=b"source")["VersionId"]
    assert retention(s3, name, "src", src) is None
    until = (now() + timedelta(hours=3)).replace(microsecond=0)
    copied = s3.copy_object(Bucket=name, Key="dst", CopySource={"Bucket": name, "Key": "src"},
                            ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until,
                            ObjectLockLegalHoldStatus="ON")["VersionId"]
    head = s3.head_object(Bucket=name, Key="dst", VersionId=copied)
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"], head["ObjectLockLegalHoldStatus"]) == (
        "GOVERNANCE", until, "ON")
    upload = s3.create_multipart_upload(Bucket=name, Key="mpu", ObjectLockMode="COMPLIANCE",
                                        ObjectLockRetainUntilDate=until)["UploadId"]
    part = s3.upload_part(Bucket=name, Key="mpu", UploadId=upload, PartNumber=1, Body=b"p" * 100)
    done = s3.complete_multipart_upload(Bucket=name, Key="mpu", UploadId=upload,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert retention(s3, name, "mpu", done["VersionId"]) == ("COMPLIANCE", until)
    # the legal hold blocks the copy's deletion even with bypass; lifting it, bypass works
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=name, Key="dst", VersionId=copied, BypassGovernanceRetention=True)
    assert status(e) == 403 and code(e) == "AccessDenied"
    s3.put_object_legal_hold(Bucket=name, Key="dst", VersionId=copied, LegalHold={"Status": "OFF"})
    s3.delete_object(Bucket=name, Key="dst", VersionId=copied, BypassGovernanceRetention=True)
    assert copied not in version_ids(s3, name)


# ---------------------------------------------------------------- retention modes


def test_compliance_retention_until_it_expires(s3, s3b, bucket):
    name = lock_bucket(s3, bucket)
    until = (now() + timedelta(seconds=20)).replace(microsecond=0)
    data = os.urandom(3 * 1024)
    put = s3.put_object(Bucket=name, Key="k", Body=data, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
    vid = put["VersionId"]
    head = s3b.head_object(Bucket=name, Key="k", VersionId=vid)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] == until
    assert retention(s3b, name, "k", vid) == ("COMPLIANCE", until)

    def still_there() -> None:
        assert s3.get_object(Bucket=name, Key="k", VersionId=vid)["Body"].read() == data
        assert retention(s3, name, "k", vid) == ("COMPLIANCE", until)

    for kwargs in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError) as e:
            s3.delete_object(Bucket=name, Key="k", VersionId=vid, **kwargs)
        assert status(e) == 403 and code(e) == "AccessDenied", kwargs
        still_there()
        out = s3b.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "k", "VersionId": vid}]}, **kwargs)
        assert not out.get("Deleted"), kwargs
        assert [(x["Key"], x["VersionId"], x["Code"]) for x in out["Errors"]] == [("k", vid, "AccessDenied")], kwargs
        still_there()
    # an overwrite is a new version; the locked one stays readable by id
    newer = s3.put_object(Bucket=name, Key="k", Body=b"newer")["VersionId"]
    assert newer != vid and s3.get_object(Bucket=name, Key="k")["Body"].read() == b"newer"
    still_there()
    # a delete without a version id only adds a marker, which is allowed
    marker = s3.delete_object(Bucket=name, Key="k")
    assert marker["DeleteMarker"] is True
    still_there()
    # COMPLIANCE can be extended, never shortened nor turned into GOVERNANCE (not even with bypass)
    for mode, date, kwargs in (("COMPLIANCE", until - timedelta(seconds=5), {}),
                               ("COMPLIANCE", until - timedelta(seconds=5), {"BypassGovernanceRetention": True}),
                               ("GOVERNANCE", until, {}),
                               ("GOVERNANCE", until + timedelta(seconds=1), {"BypassGovernanceRetention": True})):
        with pytest.raises(ClientError) as e:
            s3.put_object_retention(Bucket=name, Key="k", VersionId=vid,
                                    Retention={"Mode": mode, "RetainUntilDate": date}, **kwargs)
        assert status(e) == 403 and code(e) == "AccessDenied", (mode, date, kwargs)
        still_there()
    until = until + timedelta(seconds=2)
    s3.put_object_retention(Bucket=name, Key="k", VersionId=vid, Retention={"Mode": "COMPLIANCE",
                                                                          "RetainUntilDate": until})
    still_there()
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=name, Key="k", VersionId=vid, BypassGovernanceRetention=True)
    assert code(e) == "AccessDenied"
    # after the date, the version can be deleted by id
    wait = (until - now()).total_seconds() + 1.5
    assert 0 < wait < 30
    time.sleep(wait)
    gone = s3.delete_object(Bucket=name, Key="k", VersionId=vid)
    assert gone["ResponseMetadata"]["HTTPStatusCode"] == 204 and gone["VersionId"] == vid
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=name, Key="k", VersionId=vid)
    assert status(e) == 404 and code(e) == "NoSuchVersion"
    assert set(version_ids(s3, name)) == {newer, marker["VersionId"]}


def test_governance_retention_and_bypass(cluster, s3, bucket):
    name = lock_bucket(s3, bucket)
    until = (now() + timedelta(days=1)).replace(microsecond=0)
    vids = [s3.put_object(Bucket=name, Key=f"g{i}", Body=b"gov", ObjectLockMode="GOVERNANCE",
                          ObjectLockRetainUntilDate=until)["VersionId"] for i in range(3)]
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=name, Key="g0", VersionId=vids[0])
    assert status(e) == 403 and code(e) == "AccessDenied"
    out = s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "g1", "VersionId": vids[1]}]})
    assert [(x["Key"], x["Code"]) for x in out["Errors"]] == [("g1", "AccessDenied")] and not out.get("Deleted")
    assert set(version_ids(s3, name)) == set(vids)
    # shortening GOVERNANCE needs bypass; extending does not
    shorter = until - timedelta(hours=1)
    with pytest.raises(ClientError) as e:
        s3.put_object_retention(Bucket=name, Key="g2", VersionId=vids[2],
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": shorter})
    assert status(e) == 403 and code(e) == "AccessDenied"
    assert retention(s3, name, "g2", vids[2]) == ("GOVERNANCE", until)
    s3.put_object_retention(Bucket=name, Key="g2", VersionId=vids[2], BypassGovernanceRetention=True,
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": shorter})
    assert retention(s3, name, "g2", vids[2]) == ("GOVERNANCE", shorter)
    longer = until + timedelta(hours=1)
    s3.put_object_retention(Bucket=name, Key="g2", VersionId=vids[2],
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": longer})
    assert retention(s3, name, "g2", vids[2]) == ("GOVERNANCE", longer)
    # a user with write access only cannot bypass
    writer = user_client(cluster, "lock-writer")
    admin(cluster, "grant", name, "lock-writer", "write")
    with pytest.raises(ClientError) as e:
        writer.delete_object(Bucket=name, Key="g0", VersionId=vids[0], BypassGovernanceRetention=True)
    assert status(e) == 403 and code(e) == "AccessDenied"
    assert retention(s3, name, "g0", vids[0]) == ("GOVERNANCE", until)
    # the root may
    gone = s3.delete_object(Bucket=name, Key="g0", VersionId=vids[0], BypassGovernanceRetention=True)
    assert gone["ResponseMetadata"]["HTTPStatusCode"] == 204 and gone["VersionId"] == vids[0]
    out = s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "g1", "VersionId": vids[1]}]},
                            BypassGovernanceRetention=True)
    assert [(d["Key"], d["VersionId"]) for d in out["Deleted"]] == [("g1", vids[1])] and not out.get("Errors")
    assert version_ids(s3, name) == [vids[2]]


def test_legal_hold(s3, bucket):
    name = lock_bucket(s3, bucket)
    held = s3.put_object(Bucket=name, Key="h", Body=b"held", ObjectLockLegalHoldStatus="ON")["VersionId"]
    assert s3.head_object(Bucket=name, Key="h", VersionId=held)["ObjectLockLegalHoldStatus"] == "ON"
    assert s3.get_object_legal_hold(Bucket=name, Key="h", VersionId=held)["LegalHold"] == {"Status": "ON"}
    assert retention(s3, name, "h", held) is None
    for kwargs in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError) as e:
            s3.delete_object(Bucket=name, Key="h", VersionId=held, **kwargs)
        assert status(e) == 403 and code(e) == "AccessDenied", kwargs
        out = s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "h", "VersionId": held}]}, **kwargs)
        assert [(x["Key"], x["Code"]) for x in out["Errors"]] == [("h", "AccessDenied")], kwargs
        assert s3.get_object_legal_hold(Bucket=name, Key="h", VersionId=held)["LegalHold"] == {"Status": "ON"}
    # a hold on a GOVERNANCE version: bypass is not enough until it is OFF
    until = (now() + timedelta(days=1)).replace(microsecond=0)
    gov = s3.put_object(Bucket=name, Key="g", Body=b"gov", ObjectLockMode="GOVERNANCE",
                        ObjectLockRetainUntilDate=until)["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.get_object_legal_hold(Bucket=name, Key="g", VersionId=gov)
    assert status(e) == 404 and code(e) == "NoSuchObjectLockConfiguration"
    s3.put_object_legal_hold(Bucket=name, Key="g", VersionId=gov, LegalHold={"Status": "ON"})
    assert s3.head_object(Bucket=name, Key="g")["ObjectLockLegalHoldStatus"] == "ON"
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=name, Key="g", VersionId=gov, BypassGovernanceRetention=True)
    assert status(e) == 403 and code(e) == "AccessDenied"
    s3.put_object_legal_hold(Bucket=name, Key="g", VersionId=gov, LegalHold={"Status": "OFF"})
    assert s3.get_object_legal_hold(Bucket=name, Key="g", VersionId=gov)["LegalHold"] == {"Status": "OFF"}
    with pytest.raises(ClientError) as e:  # the retention still holds without bypass
        s3.delete_object(Bucket=name, Key="g", VersionId=gov)
    assert code(e) == "AccessDenied"
    s3.delete_object(Bucket=name, Key="g", VersionId=gov, BypassGovernanceRetention=True)
    # OFF on the held version: then a plain delete by id works
    s3.put_object_legal_hold(Bucket=name, Key="h", VersionId=held, LegalHold={"Status": "OFF"})
    assert s3.head_object(Bucket=name, Key="h", VersionId=held)["ObjectLockLegalHoldStatus"] == "OFF"
    s3.delete_object(Bucket=name, Key="h", VersionId=held)
    assert version_ids(s3, name) == []
    # the latest version is the default target of the hold calls
    latest = s3.put_object(Bucket=name, Key="h", Body=b"again")["VersionId"]
    s3.put_object_legal_hold(Bucket=name, Key="h", LegalHold={"Status": "ON"})
    assert s3.get_object_legal_hold(Bucket=name, Key="h", VersionId=latest)["LegalHold"] == {"Status": "ON"}
    with pytest.raises(ClientError) as e:
        s3.put_object_legal_hold(Bucket=name, Key="h", VersionId=latest, LegalHold={"Status": "MAYBE"})
    assert status(e) == 400 and code(e) == "MalformedXML"
    assert s3.get_object_legal_hold(Bucket=name, Key="h", VersionId=latest)["LegalHold"] == {"Status": "ON"}
    s3.put_object_legal_hold(Bucket=name, Key="h", LegalHold={"Status": "OFF"})
    s3.delete_object(Bucket=name, Key="h", VersionId=latest)


# ---------------------------------------------------------------- errors


def test_retention_errors_change_nothing(s3, bucket):
    name = lock_bucket(s3, bucket)
    until = (now() + timedelta(hours=1)).replace(microsecond=0)
    vid = s3.put_object(Bucket=name, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                        ObjectLockRetainUntilDate=until)["VersionId"]
    past = now() - timedelta(minutes=5)
    with pytest.raises(ClientError) as e:
        s3.put_object_retention(Bucket=name, Key="k", VersionId=vid, BypassGovernanceRetention=True,
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": past})
    assert status(e) == 400 and code(e) == "InvalidArgument"
    assert retention(s3, name, "k", vid) == ("GOVERNANCE", until)
    # a write with a past retain-until date is refused and writes nothing
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=name, Key="k", Body=b"y", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=past)
    assert status(e) == 400 and code(e) == "InvalidArgument"
    # only one of mode / date
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=name, Key="k", Body=b"y", ObjectLockMode="GOVERNANCE")
    assert status(e) == 400 and code(e) == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=name, Key="k", Body=b"y", ObjectLockRetainUntilDate=until)
    assert status(e) == 400 and code(e) == "InvalidArgument"
    assert version_ids(s3, name) == [vid]
    # retention of a version that does not exist
    with pytest.raises(ClientError) as e:
        s3.put_object_retention(Bucket=name, Key="missing", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})
    assert status(e) == 404 and code(e) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.get_object_retention(Bucket=name, Key="missing")
    assert status(e) == 404 and code(e) == "NoSuchKey"
    s3.delete_object(Bucket=name, Key="k", VersionId=vid, BypassGovernanceRetention=True)


def test_lock_calls_on_a_bucket_without_object_lock_are_invalid_request(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    vid = s3.put_object(Bucket=bucket, Key="k", Body=b"plain")["VersionId"]
    until = now() + timedelta(hours=1)
    calls = [
        lambda: s3.put_object_retention(Bucket=bucket, Key="k", VersionId=vid,
                                        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until}),
        lambda: s3.put_object_legal_hold(Bucket=bucket, Key="k", VersionId=vid, LegalHold={"Status": "ON"}),
        lambda: s3.get_object_retention(Bucket=bucket, Key="k", VersionId=vid),
        lambda: s3.get_object_legal_hold(Bucket=bucket, Key="k", VersionId=vid),
        lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"locked?", ObjectLockMode="GOVERNANCE",
                              ObjectLockRetainUntilDate=until),
        lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"held?", ObjectLockLegalHoldStatus="ON"),
    ]
    for n, call in enumerate(calls):
        with pytest.raises(ClientError) as e:
            call()
        assert status(e) == 400 and code(e) == "InvalidRequest", n
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["VersionId"] == vid and "ObjectLockMode" not in head and "ObjectLockLegalHoldStatus" not in head
    assert version_ids(s3, bucket) == [vid]
    s3.delete_object(Bucket=bucket, Key="k", VersionId=vid)  # nothing holds it


def test_lock_headers_need_an_integrity_header(cluster, s3, bucket):
    """AWS PutObject: "The Content-MD5 or x-amz-sdk-checksum-algorithm header is required for
    any request to upload an object with a retention period configured using Amazon S3
    Object Lock" (InvalidRequest, 400)."""
    name = lock_bucket(s3, bucket)
    bare = cluster.s3(0, request_checksum_calculation="when_required")  # no checksum header unless required
    seen: list[dict] = []
    bare.meta.events.register("before-send.s3.PutObject", lambda request, **_: seen.append(dict(request.headers)))
    until = now() + timedelta(hours=1)
    for kwargs in ({"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until},
                   {"ObjectLockLegalHoldStatus": "ON"}):
        with pytest.raises(ClientError) as e:
            bare.put_object(Bucket=name, Key="k", Body=b"no integrity", **kwargs)
        sent = {k.lower() for k in seen[-1]}
        assert "content-md5" not in sent and not any(k.startswith("x-amz-checksum-") for k in sent)
        assert status(e) == 400 and code(e) == "InvalidRequest", kwargs
        assert version_ids(s3, name) == []
    md5 = base64.b64encode(hashlib.md5(b"with md5").digest()).decode()
    vid = bare.put_object(Bucket=name, Key="k", Body=b"with md5", ContentMD5=md5, ObjectLockMode="GOVERNANCE",
                          ObjectLockRetainUntilDate=until)["VersionId"]
    assert s3.head_object(Bucket=name, Key="k", VersionId=vid)["ObjectLockMode"] == "GOVERNANCE"
    checked = s3.put_object(Bucket=name, Key="k", Body=b"with crc", ChecksumAlgorithm="CRC32",
                            ObjectLockLegalHoldStatus="ON")["VersionId"]
    assert s3.head_object(Bucket=name, Key="k", VersionId=checked)["ObjectLockLegalHoldStatus"] == "ON"
    # an unlocked write to the lock bucket needs none
    plain = bare.put_object(Bucket=name, Key="plain", Body=b"plain")["VersionId"]
    assert plain
    s3.put_object_legal_hold(Bucket=name, Key="k", VersionId=checked, LegalHold={"Status": "OFF"})
    for v in (vid, checked):
        s3.delete_object(Bucket=name, Key="k", VersionId=v, BypassGovernanceRetention=True)


def test_default_retention_writes_need_an_integrity_header(cluster, s3, bucket):
    """A bucket whose default retention locks every new version: AWS refuses a PutObject
    without Content-MD5 or a checksum (InvalidRequest "Content-MD5 OR x-amz-checksum- HTTP
    header is required for Put Object requests with Object Lock parameters")."""
    name = lock_bucket(s3, bucket)
    s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    bare = cluster.s3(0, request_checksum_calculation="when_required")
    with pytest.raises(ClientError) as e:
        bare.put_object(Bucket=name, Key="k", Body=b"no integrity")
    assert status(e) == 400 and code(e) == "InvalidRequest"
    assert version_ids(s3, name) == []
    vid = s3.put_object(Bucket=name, Key="k", Body=b"crc32 by default")["VersionId"]
    assert s3.head_object(Bucket=name, Key="k", VersionId=vid)["ObjectLockMode"] == "GOVERNANCE"


# ---------------------------------------------------------------- the aws CLI


def test_aws_cli_object_lock(cluster, s3, bucket):
    ep = cluster.endpoints[1]
    name = bucket[:55] + "-c"
    aws(ep, "s3api", "create-bucket", "--bucket", name, "--object-lock-enabled-for-bucket")
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    assert s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    vid = s3.put_object(Bucket=name, Key="f", Body=b"cli locked\n")["VersionId"]
    until = (now() + timedelta(hours=2)).replace(microsecond=0)
    stamp = until.strftime("%Y-%m-%dT%H:%M:%SZ")
    aws(ep, "s3api", "put-object-retention", "--bucket", name, "--key", "f", "--version-id", vid,
        "--retention", json.dumps({"Mode": "GOVERNANCE", "RetainUntilDate": stamp}))
    got = json.loads(aws(ep, "s3api", "get-object-retention", "--bucket", name, "--key", "f", "--version-id", vid)
                     .stdout)["Retention"]
    assert got["Mode"] == "GOVERNANCE"
    assert datetime.fromisoformat(got["RetainUntilDate"].replace("Z", "+00:00")) == until
    assert retention(s3, name, "f", vid) == ("GOVERNANCE", until)
    denied = aws(ep, "s3api", "delete-object", "--bucket", name, "--key", "f", "--version-id", vid, check=False)
    assert denied.returncode != 0 and "AccessDenied" in denied.stderr
    past = aws(ep, "s3api", "put-object-retention", "--bucket", name, "--key", "f", "--version-id", vid,
               "--bypass-governance-retention", "--retention",
               json.dumps({"Mode": "GOVERNANCE", "RetainUntilDate": "2001-01-01T00:00:00Z"}), check=False)
    assert past.returncode != 0 and "InvalidArgument" in past.stderr
    assert retention(s3, name, "f", vid) == ("GOVERNANCE", until)
    aws(ep, "s3api", "delete-object", "--bucket", name, "--key", "f", "--version-id", vid,
        "--bypass-governance-retention")
    assert version_ids(s3, name) == []
