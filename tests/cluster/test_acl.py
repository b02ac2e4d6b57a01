"""ACLs as S3 has them, end to end with boto3: object ACLs deciding reads, grant headers
by canonical id and e-mail address, copy sources checked against their own ACL,
ownership controls and the public access block."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from core.acl import canonical_id
from tests.cluster.test_access import admin, client, code

pytestmark = pytest.mark.cluster


def user(cluster, name: str, email: str | None = None):
    admin(cluster, "user", "add", name, *(["--email", email] if email else []))
    key = json.loads(admin(cluster, "key", "add", name).stdout)
    return client(cluster, key["access_key"], key["secret_key"], index=1)


@pytest.fixture(scope="module")
def people(cluster):
    return {"olga": user(cluster, "olga", "olga@example.com"), "pete": user(cluster, "pete", "pete@example.com"),
            "anon": boto3.client("s3", endpoint_url=cluster.endpoints[0], region_name="us-east-1",
                                 config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))}


def denied(call) -> None:
    with pytest.raises(ClientError) as e:
        call()
    assert code(e) == "AccessDenied"


def test_object_acls_decide_reads_and_writers_own_what_they_write(people):
    olga, pete, anon = people["olga"], people["pete"], people["anon"]
    olga.create_bucket(Bucket="acl-shared", ACL="public-read-write")
    pete.put_object(Bucket="acl-shared", Key="petes", Body=b"by pete")
    denied(lambda: olga.get_object(Bucket="acl-shared", Key="petes"))  # ObjectWriter: pete's, private
    acl = pete.get_object_acl(Bucket="acl-shared", Key="petes")
    assert acl["Owner"] == {"ID": canonical_id("pete"), "DisplayName": "pete"}
    pete.put_object_acl(Bucket="acl-shared", Key="petes", ACL="bucket-owner-read")
    assert olga.get_object(Bucket="acl-shared", Key="petes")["Body"].read() == b"by pete"
    denied(lambda: olga.put_object_acl(Bucket="acl-shared", Key="petes", ACL="public-read"))  # READ is not WRITE_ACP
    anon.put_object(Bucket="acl-shared", Key="anon", Body=b"x")  # public-read-write: anyone writes
    assert [o["Key"] for o in anon.list_objects_v2(Bucket="acl-shared")["Contents"]] == ["anon", "petes"]
    denied(lambda: anon.get_object(Bucket="acl-shared", Key="petes"))


def test_grant_headers_by_id_and_email(cluster, people):
    olga, pete = people["olga"], people["pete"]
    olga.create_bucket(Bucket="acl-grants")
    olga.put_object(Bucket="acl-grants", Key="k", Body=b"v",
                    GrantRead=f'id="{canonical_id("pete")}"', GrantReadACP='emailAddress="pete@example.com"')
    assert pete.get_object(Bucket="acl-grants", Key="k")["Body"].read() == b"v"
    grants = pete.get_object_acl(Bucket="acl-grants", Key="k")["Grants"]
    assert sorted((g["Grantee"]["DisplayName"], g["Permission"]) for g in grants) == [
        ("pete", "READ"), ("pete", "READ_ACP")]
    denied(lambda: pete.list_objects_v2(Bucket="acl-grants"))  # the bucket's ACL is still private
    with pytest.raises(ClientError) as e:
        olga.put_bucket_acl(Bucket="acl-grants", GrantRead='emailAddress="nobody@example.com"')
    assert code(e) == "UnresolvableGrantByEmailAddress"
    with pytest.raises(ClientError) as e:
        olga.put_bucket_acl(Bucket="acl-grants", GrantRead='id="not-a-user"')
    assert code(e) == "InvalidArgument"
    olga.put_bucket_acl(Bucket="acl-grants", AccessControlPolicy={
        "Owner": {"ID": canonical_id("olga")},
        "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": canonical_id("olga")}, "Permission": "FULL_CONTROL"},
                   {"Grantee": {"Type": "AmazonCustomerByEmail", "EmailAddress": "pete@example.com"},
                    "Permission": "READ"}]})
    assert [o["Key"] for o in pete.list_objects_v2(Bucket="acl-grants")["Contents"]] == ["k"]
    denied(lambda: pete.get_bucket_acl(Bucket="acl-grants"))


def test_a_copy_source_is_checked_against_its_own_acl(people):
    olga, pete = people["olga"], people["pete"]
    olga.create_bucket(Bucket="acl-src", ACL="public-read")  # listable by anyone
    olga.put_object(Bucket="acl-src", Key="secret", Body=b"olga only")
    pete.create_bucket(Bucket="acl-dst")
    denied(lambda: pete.copy_object(Bucket="acl-dst", Key="stolen", CopySource={"Bucket": "acl-src", "Key": "secret"}))
    upload = pete.create_multipart_upload(Bucket="acl-dst", Key="stolen")["UploadId"]
    denied(lambda: pete.upload_part_copy(Bucket="acl-dst", Key="stolen", UploadId=upload, PartNumber=1,
                                         CopySource={"Bucket": "acl-src", "Key": "secret"}))
    olga.put_object_acl(Bucket="acl-src", Key="secret", ACL="authenticated-read")
    pete.copy_object(Bucket="acl-dst", Key="copied", CopySource={"Bucket": "acl-src", "Key": "secret"})
    assert pete.get_object_acl(Bucket="acl-dst", Key="copied")["Owner"]["DisplayName"] == "pete"


def test_ownership_controls(people):
    olga, pete = people["olga"], people["pete"]
    olga.create_bucket(Bucket="acl-own", ACL="public-read-write")
    with pytest.raises(ClientError) as e:
        olga.get_bucket_ownership_controls(Bucket="acl-own")
    assert code(e) == "OwnershipControlsNotFoundError"
    enforced = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    with pytest.raises(ClientError) as e:
        olga.put_bucket_ownership_controls(Bucket="acl-own", OwnershipControls=enforced)
    assert code(e) == "InvalidBucketAclWithObjectOwnership"
    olga.put_bucket_acl(Bucket="acl-own", ACL="private")
    olga.put_bucket_ownership_controls(Bucket="acl-own", OwnershipControls=enforced)
    rules = olga.get_bucket_ownership_controls(Bucket="acl-own")["OwnershipControls"]["Rules"]
    assert rules == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    olga.put_object(Bucket="acl-own", Key="k", Body=b"v")
    with pytest.raises(ClientError) as e:
        olga.put_object_acl(Bucket="acl-own", Key="k", ACL="public-read")
    assert code(e) == "AccessControlListNotSupported"
    olga.delete_bucket_ownership_controls(Bucket="acl-own")
    olga.create_bucket(Bucket="acl-pref", ACL="public-read-write", ObjectOwnership="BucketOwnerPreferred")
    pete.put_object(Bucket="acl-pref", Key="given", Body=b"g", ACL="bucket-owner-full-control")
    assert olga.get_object_acl(Bucket="acl-pref", Key="given")["Owner"]["DisplayName"] == "olga"


def test_public_access_block(people):
    olga, anon = people["olga"], people["anon"]
    olga.create_bucket(Bucket="acl-pab")
    olga.put_object(Bucket="acl-pab", Key="pub", Body=b"p", ACL="public-read")
    assert anon.get_object(Bucket="acl-pab", Key="pub")["Body"].read() == b"p"
    with pytest.raises(ClientError) as e:
        olga.get_public_access_block(Bucket="acl-pab")
    assert code(e) == "NoSuchPublicAccessBlockConfiguration"
    olga.put_public_access_block(Bucket="acl-pab", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True})
    conf = olga.get_public_access_block(Bucket="acl-pab")["PublicAccessBlockConfiguration"]
    assert conf == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": False,
                    "RestrictPublicBuckets": False}
    denied(lambda: anon.get_object(Bucket="acl-pab", Key="pub"))
    denied(lambda: olga.put_object(Bucket="acl-pab", Key="pub2", Body=b"", ACL="public-read"))
    denied(lambda: olga.put_bucket_acl(Bucket="acl-pab", ACL="public-read"))
    olga.delete_public_access_block(Bucket="acl-pab")
    assert anon.get_object(Bucket="acl-pab", Key="pub")["Body"].read() == b"p"
