"""Users, keys, grants and canned ACLs, driven through `cairn admin` and boto3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from chaos.cluster import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.cluster


def admin(cluster, *args: str, index: int = 0, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, CAIRN_ROOT_ACCESS_KEY=ACCESS_KEY, CAIRN_ROOT_SECRET_KEY=SECRET_KEY)
    done = subprocess.run([sys.executable, "-m", "cairn.cli", "admin", "--endpoint", cluster.endpoints[index], *args],
                          env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def client(cluster, access: str, secret: str, index: int = 0):
    return boto3.client("s3", endpoint_url=cluster.endpoints[index], aws_access_key_id=access,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, signature_version="s3v4"))


def new_user(cluster, name: str):
    admin(cluster, "user", "add", name)
    key = json.loads(admin(cluster, "key", "add", name).stdout)
    return key, client(cluster, key["access_key"], key["secret_key"], index=1)


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def test_users_do_not_see_each_others_private_buckets(cluster):
    _, alice = new_user(cluster, "alice")
    _, bob = new_user(cluster, "bob")
    alice.create_bucket(Bucket="alice-private")
    alice.put_object(Bucket="alice-private", Key="secret.txt", Body=b"alice only")
    bob.create_bucket(Bucket="bob-private")
    assert [b["Name"] for b in alice.list_buckets()["Buckets"]] == ["alice-private"]
    assert [b["Name"] for b in bob.list_buckets()["Buckets"]] == ["bob-private"]
    for call in (lambda: bob.get_object(Bucket="alice-private", Key="secret.txt"),
                 lambda: bob.list_objects_v2(Bucket="alice-private"),
                 lambda: bob.put_object(Bucket="alice-private", Key="x", Body=b"x"),
                 lambda: bob.delete_bucket(Bucket="alice-private"),
                 lambda: bob.get_bucket_acl(Bucket="alice-private")):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDenied"
    # the admin sees everything
    root = client(cluster, ACCESS_KEY, SECRET_KEY)
    assert {"alice-private", "bob-private"} <= {b["Name"] for b in root.list_buckets()["Buckets"]}
    acl = alice.get_bucket_acl(Bucket="alice-private")
    assert acl["Owner"]["DisplayName"] == "alice" and len(acl["Owner"]["ID"]) == 64
    assert acl["Grants"][0]["Permission"] == "FULL_CONTROL"


def test_grants(cluster):
    _, carol = new_user(cluster, "carol")
    _, dave = new_user(cluster, "dave")
    carol.create_bucket(Bucket="carol-shared")
    carol.put_object(Bucket="carol-shared", Key="doc", Body=b"shared doc")
    with pytest.raises(ClientError):
        dave.get_object(Bucket="carol-shared", Key="doc")
    admin(cluster, "grant", "carol-shared", "dave", "read")
    assert dave.get_object(Bucket="carol-shared", Key="doc")["Body"].read() == b"shared doc"  # at once, other frontend
    with pytest.raises(ClientError) as e:
        dave.put_object(Bucket="carol-shared", Key="new", Body=b"x")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError):
        dave.list_objects_v2(Bucket="carol-shared")
    admin(cluster, "grant", "carol-shared", "dave", "write")
    dave.put_object(Bucket="carol-shared", Key="new", Body=b"from dave")
    admin(cluster, "grant", "carol-shared", "dave", "full")
    assert len(dave.list_objects_v2(Bucket="carol-shared")["Contents"]) == 2
    admin(cluster, "revoke", "carol-shared", "dave")
    with pytest.raises(ClientError):
        dave.get_object(Bucket="carol-shared", Key="doc")
    users = json.loads(admin(cluster, "user", "ls").stdout)
    assert {u["name"] for u in users} >= {"carol", "dave"}
    assert all("secret" not in json.dumps(u).lower() for u in users)


def test_revoked_key_stops_at_once_everywhere(cluster):
    key, erin = new_user(cluster, "erin")
    erin.create_bucket(Bucket="erin-bucket")
    url = erin.generate_presigned_url("get_object", Params={"Bucket": "erin-bucket", "Key": "k"}, ExpiresIn=600)
    erin.put_object(Bucket="erin-bucket", Key="k", Body=b"v")
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"v"
    second = json.loads(admin(cluster, "key", "add", "erin").stdout)  # several keys per user
    admin(cluster, "key", "rm", key["access_key"])
    for index in (0, 1):
        with pytest.raises(ClientError) as e:
            client(cluster, key["access_key"], key["secret_key"], index).list_buckets()
        assert code(e) == "InvalidAccessKeyId"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=10)
    assert e.value.code == 403
    other = client(cluster, second["access_key"], second["secret_key"])
    assert other.get_object(Bucket="erin-bucket", Key="k")["Body"].read() == b"v"


def test_canned_acls(cluster):
    _, frank = new_user(cluster, "frank")
    _, grace = new_user(cluster, "grace")
    anonymous = boto3.client("s3", endpoint_url=cluster.endpoints[0], region_name="us-east-1",
                             config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))
    frank.create_bucket(Bucket="frank-public", ACL="public-read")
    frank.put_object(Bucket="frank-public", Key="private.html", Body=b"mine")
    with pytest.raises(ClientError) as e:  # a public bucket lists its objects; each object's ACL says who reads it
        anonymous.get_object(Bucket="frank-public", Key="private.html")
    assert code(e) == "AccessDenied"
    frank.delete_object(Bucket="frank-public", Key="private.html")
    frank.put_object(Bucket="frank-public", Key="page.html", Body=b"<h1>hi</h1>", ACL="public-read")
    assert anonymous.get_object(Bucket="frank-public", Key="page.html")["Body"].read() == b"<h1>hi</h1>"
    assert [o["Key"] for o in anonymous.list_objects_v2(Bucket="frank-public")["Contents"]] == ["page.html"]
    with pytest.raises(ClientError) as e:
        anonymous.put_object(Bucket="frank-public", Key="graffiti", Body=b"x")
    assert code(e) == "AccessDenied"
    grants = frank.get_bucket_acl(Bucket="frank-public")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") and g["Permission"] == "READ" for g in grants)

    frank.put_bucket_acl(Bucket="frank-public", ACL="authenticated-read")
    frank.put_object_acl(Bucket="frank-public", Key="page.html", ACL="authenticated-read")
    for call in (lambda: anonymous.get_object(Bucket="frank-public", Key="page.html"),
                 lambda: anonymous.list_objects_v2(Bucket="frank-public")):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDenied"
    assert grace.get_object(Bucket="frank-public", Key="page.html")["Body"].read() == b"<h1>hi</h1>"
    assert [o["Key"] for o in grace.list_objects_v2(Bucket="frank-public")["Contents"]] == ["page.html"]
    frank.put_bucket_acl(Bucket="frank-public", ACL="private")
    frank.put_object_acl(Bucket="frank-public", Key="page.html", ACL="private")
    with pytest.raises(ClientError):
        grace.get_object(Bucket="frank-public", Key="page.html")
    with pytest.raises(ClientError) as e:
        anonymous.list_buckets()
    assert code(e) == "AccessDenied"


def test_admin_endpoints_need_admin(cluster):
    key, henry = new_user(cluster, "henry")
    done = admin(cluster, "--access-key", key["access_key"], "--secret-key", key["secret_key"], "user", "ls",
                 check=False)
    assert done.returncode != 0
    bad = admin(cluster, "user", "add", "root", check=False)
    assert bad.returncode != 0
    dup = admin(cluster, "user", "add", "henry", check=False)
    assert dup.returncode != 0 and "UserAlreadyExists" in dup.stdout
    henry.create_bucket(Bucket="henry-bucket")
    owns = admin(cluster, "user", "rm", "henry", check=False)
    assert owns.returncode != 0 and "UserOwnsBuckets" in owns.stdout
    henry.delete_bucket(Bucket="henry-bucket")
    admin(cluster, "user", "rm", "henry")
    with pytest.raises(ClientError) as e:
        henry.list_buckets()
    assert code(e) == "InvalidAccessKeyId"
    assert json.loads(admin(cluster, "health").stdout)["status"] == "ok"


def _form(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = "----cairn-test-" + os.urandom(8).hex()
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def _post(url: str, fields: dict[str, str], filename: str, content: bytes) -> tuple[int, bytes]:
    body, ctype = _form(fields, filename, content)
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_presigned_post(cluster):
    key, ivan = new_user(cluster, "ivan")
    ivan.create_bucket(Bucket="ivan-uploads")
    post = ivan.generate_presigned_post(
        "ivan-uploads", "incoming/${filename}", ExpiresIn=300,
        Fields={"success_action_status": "201"},
        Conditions=[["starts-with", "$key", "incoming/"], {"success_action_status": "201"},
                    ["content-length-range", 1, 5 * 1024 * 1024]])
    content = os.urandom(2 * 1024 * 1024 + 3)
    status, body = _post(post["url"], post["fields"], "photo.jpg", content)
    assert status == 201 and b"<Key>incoming/photo.jpg</Key>" in body, body
    assert ivan.get_object(Bucket="ivan-uploads", Key="incoming/photo.jpg")["Body"].read() == content
    # too big for the policy: refused, nothing stored
    status, body = _post(post["url"], post["fields"], "huge.bin", os.urandom(5 * 1024 * 1024 + 1))
    assert status == 400 and b"EntityTooLarge" in body
    with pytest.raises(ClientError):
        ivan.head_object(Bucket="ivan-uploads", Key="incoming/huge.bin")
    # a tampered policy or an extra field is refused
    tampered = dict(post["fields"], key="elsewhere/x")
    assert _post(post["url"], tampered, "x", b"x")[0] == 403
    extra = dict(post["fields"], **{"x-amz-meta-sneaky": "1"})
    assert _post(post["url"], extra, "x", b"x")[0] == 403
    # expired
    old = ivan.generate_presigned_post("ivan-uploads", "k", ExpiresIn=-10)
    status, body = _post(old["url"], old["fields"], "x", b"x")
    assert status == 403 and b"expired" in body
    # revoked key
    admin(cluster, "key", "rm", key["access_key"])
    status, body = _post(post["url"], post["fields"], "late.jpg", b"late")
    assert status == 403 and b"InvalidAccessKeyId" in body


def test_delete_objects_needs_write_whatever_else_the_query_names(cluster):
    """DeleteObjects with another sub-resource beside ``delete`` (``?delete&location``)
    once needed only some access: an anonymous reader of a public-read bucket could delete
    from it. Its route needs write, whatever else the query carries."""
    import base64
    import hashlib

    key, owner = new_user(cluster, "dora")
    owner.create_bucket(Bucket="dora-public", ACL="public-read")
    owner.put_object(Bucket="dora-public", Key="keep.txt", Body=b"still here")
    body = b"<Delete><Object><Key>keep.txt</Key></Object></Delete>"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    for query in ("delete&location", "delete&versioning", "delete"):
        req = urllib.request.Request(f"{cluster.endpoints[0]}/dora-public?{query}", data=body, method="POST",
                                     headers={"Content-MD5": md5, "Content-Type": "application/xml"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 403, query
        assert b"<Code>AccessDenied</Code>" in err.value.read(), query
    assert owner.get_object(Bucket="dora-public", Key="keep.txt")["Body"].read() == b"still here"
