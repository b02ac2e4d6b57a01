"""What attacking a real cluster found, as regression tests: each one failed before its fix.

A cluster of its own with short HTTP-edge timeouts (2-3 s instead of 20-60 s) and a
1-byte minimum part size, so timeouts and a 10,000-part upload take seconds."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from chaos.cluster import ACCESS_KEY, SECRET_KEY, Cluster
from frontend.sigv4 import derive_signing_key, sign_headers

pytestmark = pytest.mark.cluster

TIMEOUT = 2.0  # --body-timeout, --header-timeout and --form-timeout of this cluster
PER_CLIENT = 200  # --max-connections-per-client


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("edge"), gc_grace=1.0, gc_interval=0.5,
                frontend_flags=["--body-timeout", str(TIMEOUT), "--header-timeout", str(TIMEOUT),
                                "--form-timeout", str(TIMEOUT), "--send-timeout", "3",
                                "--max-connections-per-client", str(PER_CLIENT)],
                raftmeta_flags=["--min-part-size", "1"])
    with c:
        yield c


def admin(cluster: Cluster, *args: str) -> str:
    env = dict(os.environ, CAIRN_ROOT_ACCESS_KEY=ACCESS_KEY, CAIRN_ROOT_SECRET_KEY=SECRET_KEY)
    done = subprocess.run([sys.executable, "-m", "cairn.cli", "admin", "--endpoint", cluster.endpoints[0], *args],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def client(cluster: Cluster, access: str, secret: str, index: int = 0, **config):
    return boto3.client("s3", endpoint_url=cluster.endpoints[index], aws_access_key_id=access,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, signature_version="s3v4", **config))


_users: dict[str, tuple[dict, object]] = {}


def user(cluster: Cluster, name: str):
    if name not in _users:
        admin(cluster, "user", "add", name)
        key = json.loads(admin(cluster, "key", "add", name))
        _users[name] = key, client(cluster, key["access_key"], key["secret_key"])
    return _users[name]


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def addr(cluster: Cluster, index: int = 0) -> tuple[str, int]:
    host, port = cluster.endpoints[index].removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def raw(cluster: Cluster, data: bytes, index: int = 0, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection (while reading: the server may answer before
    it has read everything); everything the server sends until it closes."""
    with socket.create_connection(addr(cluster, index), timeout=timeout) as s:
        def send() -> None:
            try:
                s.sendall(data)
            except OSError:
                pass  # the server answered and closed before taking it all

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        sender.join(timeout)
        return out


def signed(cluster: Cluster, method: str, path: str, query: str = "", headers: list | None = None,
           access: str = ACCESS_KEY, secret: str = SECRET_KEY, region: str = "us-east-1") -> bytes:
    """The request line and headers of a SigV4-signed request (UNSIGNED-PAYLOAD), ready to send."""
    host = "{}:{}".format(*addr(cluster))
    hdrs = sign_headers(method, path.encode(), query.encode(), [("host", host), *(headers or [])], access, secret,
                        region=region)
    target = path + ("?" + query if query else "")
    return (f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n").encode()


def serving(cluster: Cluster, index: int = 0) -> bool:
    return cluster.procs[f"frontend{index + 1}"].alive() and (cluster.health(index) or {}).get("status") == "ok"


# ---------------------------------------------------------------------- 0: one request killed a frontend


def test_truncated_requests_never_kill_the_frontend(edge):
    s3 = edge.s3(0)
    s3.create_bucket(Bucket="trunc")

    def early_close(s: socket.socket) -> None:
        s.close()

    def partial_close(s: socket.socket) -> None:
        s.sendall(b"abc")
        s.close()

    def reset(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()

    def half_close(s: socket.socket) -> None:
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.1)
        s.close()

    heads = [b"PUT /nobucket/k HTTP/1.1\r\nHost: x\r\nContent-Length: 123\r\n\r\n",
             b"PUT /trunc/k HTTP/1.1\r\nHost: x\r\nContent-Length: 123\r\n\r\n",
             b"POST /trunc?delete HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
             b"PUT /trunc/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
             signed(edge, "PUT", "/trunc/k", headers=[("content-length", "123")])]
    for head in heads:
        for ending in (early_close, partial_close, reset, half_close):
            for _ in range(5):
                s = socket.create_connection(addr(edge))
                s.sendall(head)
                ending(s)
            time.sleep(0.1)
            assert serving(edge), (head, ending.__name__)
    s3.put_object(Bucket="trunc", Key="after", Body=b"still here")
    assert s3.get_object(Bucket="trunc", Key="after")["Body"].read() == b"still here"
    assert s3.list_objects_v2(Bucket="trunc").get("KeyCount") == 1  # nothing truncated was stored


# ---------------------------------------------------------------------- 1, 2: copy sources are authorized


def test_copy_sources_need_read_access_to_the_source(edge):
    _, alice = user(edge, "alice")
    _, mallory = user(edge, "mallory")
    alice.create_bucket(Bucket="alice-private")
    alice.put_object(Bucket="alice-private", Key="secret", Body=b"alice's secret bytes")
    mallory.create_bucket(Bucket="mallory-public", ACL="public-read")
    with pytest.raises(ClientError) as e:
        mallory.copy_object(Bucket="mallory-public", Key="stolen",
                            CopySource={"Bucket": "alice-private", "Key": "secret"})
    assert code(e) == "AccessDenied"
    upload = mallory.create_multipart_upload(Bucket="mallory-public", Key="stolen2")["UploadId"]
    with pytest.raises(ClientError) as e:
        mallory.upload_part_copy(Bucket="mallory-public", Key="stolen2", UploadId=upload, PartNumber=1,
                                 CopySource={"Bucket": "alice-private", "Key": "secret"})
    assert code(e) == "AccessDenied"
    # Nothing of the secret is readable through mallory's bucket, by anyone.
    anonymous = boto3.client("s3", endpoint_url=edge.endpoints[1], region_name="us-east-1",
                             config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))
    for who in (mallory, anonymous):
        listing = who.list_objects_v2(Bucket="mallory-public")
        assert listing.get("KeyCount") == 0
        with pytest.raises(ClientError) as e:
            who.get_object(Bucket="mallory-public", Key="stolen")
        assert code(e) == "NoSuchKey"
    parts = mallory.list_parts(Bucket="mallory-public", Key="stolen2", UploadId=upload).get("Parts", [])
    assert parts == []
    # With a read grant the same copies work, byte for byte.
    admin(edge, "grant", "alice-private", "mallory", "read")
    mallory.copy_object(Bucket="mallory-public", Key="granted", CopySource={"Bucket": "alice-private", "Key": "secret"})
    assert mallory.get_object(Bucket="mallory-public", Key="granted")["Body"].read() == b"alice's secret bytes"
    mallory.upload_part_copy(Bucket="mallory-public", Key="stolen2", UploadId=upload, PartNumber=1,
                             CopySource={"Bucket": "alice-private", "Key": "secret"})
    admin(edge, "revoke", "alice-private", "mallory")
    with pytest.raises(ClientError) as e:
        mallory.copy_object(Bucket="mallory-public", Key="again", CopySource={"Bucket": "alice-private", "Key": "secret"})
    assert code(e) == "AccessDenied"


# ---------------------------------------------------------------------- 3: whole bodies over 1 MiB


def test_delete_objects_with_1000_long_keys(edge):
    s3 = edge.s3(0)
    s3.create_bucket(Bucket="longkeys")
    keys = [f"{i:04d}-" + "k" * 1019 for i in range(1000)]
    assert all(len(k.encode()) == 1024 for k in keys)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="longkeys", Key=k, Body=b""), keys[:100]))
    started = time.monotonic()
    reply = s3.delete_objects(Bucket="longkeys", Delete={"Objects": [{"Key": k} for k in keys]})
    assert time.monotonic() - started < 30
    assert sorted(d["Key"] for d in reply["Deleted"]) == keys and not reply.get("Errors")
    assert s3.list_objects_v2(Bucket="longkeys").get("KeyCount") == 0


def test_complete_with_10000_parts(edge):
    s3 = edge.s3(0)
    s3.create_bucket(Bucket="manyparts")
    upload = s3.create_multipart_upload(Bucket="manyparts", Key="big")["UploadId"]
    clients = [edge.s3(i % 2) for i in range(16)]

    def part(n: int) -> dict:
        reply = clients[n % 16].upload_part(Bucket="manyparts", Key="big", UploadId=upload, PartNumber=n,
                                            Body=bytes([n % 256]))
        return {"PartNumber": n, "ETag": reply["ETag"]}

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        parts = list(pool.map(part, range(1, 10_001)))
    reply = s3.complete_multipart_upload(Bucket="manyparts", Key="big", UploadId=upload,
                                         MultipartUpload={"Parts": parts})
    assert reply["ETag"].endswith('-10000"')
    body = s3.get_object(Bucket="manyparts", Key="big")["Body"].read()
    assert body == bytes(n % 256 for n in range(1, 10_001))


def test_whole_bodies_have_limits_whatever_their_framing(edge):
    s3 = edge.s3(0)
    s3.create_bucket(Bucket="framing")
    s3.put_object(Bucket="framing", Key="k", Body=b"x")
    tagging = b"<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>"

    def chunked(body: bytes) -> bytes:
        return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4096]), body[i:i + 4096])
                        for i in range(0, len(body), 4096)) + b"0\r\n\r\n"

    head = signed(edge, "PUT", "/framing/k", "tagging=", [("transfer-encoding", "chunked"), ("connection", "close")])
    answer = raw(edge, head + chunked(tagging))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert s3.get_object_tagging(Bucket="framing", Key="k")["TagSet"] == [{"Key": "a", "Value": "b"}]
    # 2 MiB of chunked tagging: refused once past the limit, not read to the end nor left hanging
    big = b"<Tagging><TagSet>" + b" " * (2 << 20) + b"</TagSet></Tagging>"
    started = time.monotonic()
    answer = raw(edge, head + chunked(big), timeout=15)
    assert b" 400 " in answer.split(b"\r\n", 1)[0] and b"MaxMessageLengthExceeded" in answer, answer[:300]
    assert time.monotonic() - started < 10
    assert s3.get_object_tagging(Bucket="framing", Key="k")["TagSet"] == [{"Key": "a", "Value": "b"}]
    assert serving(edge)


# ---------------------------------------------------------------------- 4, 5: stalls and fairness


def test_a_stalled_body_times_out_and_changes_nothing(edge):
    s3 = edge.s3(0)
    s3.create_bucket(Bucket="stall")
    s3.put_object(Bucket="stall", Key="k", Body=b"old")
    head = signed(edge, "PUT", "/stall/k", headers=[("content-length", str(10 << 20))])
    started = time.monotonic()
    answer = raw(edge, head + b"new bytes, then nothing", timeout=15)
    took = time.monotonic() - started
    assert b" 400 " in answer.split(b"\r\n", 1)[0] and b"RequestTimeout" in answer, answer[:300]
    assert TIMEOUT - 0.5 < took < TIMEOUT + 5
    assert s3.get_object(Bucket="stall", Key="k")["Body"].read() == b"old"


def test_slow_headers_and_unauthenticated_forms_are_cut_off(edge):
    for opening in (b"GET /stall/k HTTP/1.1\r\nHost: x\r\nX-Slow: ",  # headers that never end
                    b"POST /stall HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                    b"Content-Length: 100000\r\n\r\n--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk"):
        with socket.create_connection(addr(edge), timeout=15) as s:
            s.sendall(opening)
            started = time.monotonic()
            closed_after = None
            # trickle a byte a second (each under every idle limit) for at most 12 s
            while time.monotonic() - started < 12:
                try:
                    s.sendall(b"a")
                    s.settimeout(1.0)
                    if s.recv(65536) == b"":
                        closed_after = time.monotonic() - started
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed_after = time.monotonic() - started
                    break
            assert closed_after is not None and closed_after < TIMEOUT + 5, opening[:20]
    assert serving(edge)


def test_a_stalling_user_does_not_starve_another(edge):
    """One user opens uploads that trickle a byte each second (under the body timeout)
    and so hold chunk buffers; another user's 20 MiB PUT still goes through at once."""
    staller_key, staller = user(edge, "staller")
    _, victim = user(edge, "victim")
    victim.create_bucket(Bucket="victim-bucket")
    staller.create_bucket(Bucket="staller-bucket")
    stop = threading.Event()
    socks = []
    for i in range(12):  # more than the frontend's 8 chunk buffers
        s = socket.create_connection(addr(edge), timeout=30)
        s.sendall(signed(edge, "PUT", f"/staller-bucket/s{i}", headers=[("content-length", str(64 << 20))],
                         access=staller_key["access_key"], secret=staller_key["secret_key"]) + b"x")
        socks.append(s)

    def trickle() -> None:
        deadline = time.monotonic() + 40
        while not stop.is_set() and time.monotonic() < deadline:
            for s in socks:
                try:
                    s.sendall(b"x")
                except OSError:
                    pass
            stop.wait(TIMEOUT / 3)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        time.sleep(1.5)  # the stalled uploads have taken what buffers they may
        body = os.urandom(20 << 20)
        started = time.monotonic()
        victim.put_object(Bucket="victim-bucket", Key="big", Body=body)
        took = time.monotonic() - started
        assert victim.get_object(Bucket="victim-bucket", Key="big")["Body"].read() == body
        assert took < 15, f"the other user's PUT took {took:.1f} s"
    finally:
        stop.set()
        t.join(10)
        for s in socks:
            s.close()
    assert serving(edge)


# ---------------------------------------------------------------------- 8 and the weaker items


def test_response_overrides_need_a_signature_and_a_header_value(edge):
    s3 = edge.s3(0)
    s3.create_bucket(Bucket="overrides", ACL="public-read")
    s3.put_object(Bucket="overrides", Key="page.txt", Body=b"<script>alert(1)</script>", ContentType="text/plain",
                  ACL="public-read")
    anonymous = boto3.client("s3", endpoint_url=edge.endpoints[0], region_name="us-east-1",
                             config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        anonymous.get_object(Bucket="overrides", Key="page.txt", ResponseContentType="text/html")
    assert code(e) == "InvalidRequest"
    assert anonymous.get_object(Bucket="overrides", Key="page.txt")["ContentType"] == "text/plain"
    signed_get = s3.get_object(Bucket="overrides", Key="page.txt", ResponseContentType="text/html")
    assert signed_get["ContentType"] == "text/html"
    for value in ("a\r\nSet-Cookie: x=1", "a\nb", "caf\u00e9\x00"):
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket="overrides", Key="page.txt", ResponseContentDisposition=value)
        assert code(e) == "InvalidArgument"


def test_the_signing_region_must_be_this_clusters(edge):
    answer = raw(edge, signed(edge, "GET", "/", headers=[("connection", "close")], region="eu-west-3"))
    assert b" 400 " in answer.split(b"\r\n", 1)[0], answer[:300]
    assert b"AuthorizationHeaderMalformed" in answer and b"<Region>us-east-1</Region>" in answer
    other = boto3.client("s3", endpoint_url=edge.endpoints[0], aws_access_key_id=ACCESS_KEY,
                         aws_secret_access_key=SECRET_KEY, region_name="eu-west-3",
                         config=Config(retries={"max_attempts": 1}, signature_version="s3v4"))
    presigned = other.generate_presigned_url("list_buckets")
    host, port = addr(edge)
    parts = urllib.parse.urlsplit(presigned)
    answer = raw(edge, f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
                 .encode())
    assert b"AuthorizationQueryParametersError" in answer and b"<Region>us-east-1</Region>" in answer, answer[:400]


@pytest.mark.parametrize("query", ["list-type=2&max-keys=" + "9" * 5000, "list-type=2&max-keys=" + str(2**70),
                                   "list-type=2&max-keys=%C2%B2", "uploads&max-uploads=" + str(2**70),
                                   "uploads&max-uploads=%C2%B2"])
def test_malformed_numbers_are_400(edge, query):
    with contextlib.suppress(ClientError):
        edge.s3(0).create_bucket(Bucket="numbers")
    answer = raw(edge, signed(edge, "GET", "/numbers", query, [("connection", "close")]))
    assert b" 400 " in answer.split(b"\r\n", 1)[0] and b"InvalidArgument" in answer, answer[:300]


def test_malformed_numbers_in_object_requests(edge):
    s3 = edge.s3(0)
    s3.create_bucket(Bucket="numbers2")
    s3.put_object(Bucket="numbers2", Key="k", Body=b"0123456789")
    upload = s3.create_multipart_upload(Bucket="numbers2", Key="m")["UploadId"]
    for query in (f"uploadId={upload}&part-number-marker={2**70}", f"uploadId={upload}&max-parts=%C2%B2",
                  "partNumber=" + "1" * 5000, "partNumber=%C2%B2"):
        answer = raw(edge, signed(edge, "GET", "/numbers2/" + ("m" if "uploadId" in query else "k"), query,
                                  [("connection", "close")]))
        assert b" 400 " in answer.split(b"\r\n", 1)[0] and b"InvalidArgument" in answer, (query[:40], answer[:300])
    # A range past any size is a range to the end or unsatisfiable, never a 500.
    whole = raw(edge, signed(edge, "GET", "/numbers2/k", "", [("range", "bytes=2-" + "9" * 5000), ("connection", "close")]))
    assert whole.startswith(b"HTTP/1.1 206") and whole.endswith(b"23456789"), whole[:300]
    past = raw(edge, signed(edge, "GET", "/numbers2/k", "", [("range", "bytes=" + "9" * 5000 + "-"), ("connection", "close")]))
    assert past.startswith(b"HTTP/1.1 416"), past[:300]


def test_keys_xml_cannot_carry_are_refused_and_listings_stay_parseable(edge):
    s3 = edge.s3(0)
    s3.create_bucket(Bucket="xmlkeys")
    for key in ("nul\x00key", "bell\x07", "esc\x1b[0m"):
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="xmlkeys", Key=key, Body=b"x")
        assert code(e) == "InvalidArgument"
    for key in ("tab\tkey", "line\nkey", "cr\rkey", "amp&<lt>"):
        s3.put_object(Bucket="xmlkeys", Key=key, Body=b"x")
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket="xmlkeys")["Contents"]}
    assert listed == {"tab\tkey", "line\nkey", "cr\rkey", "amp&<lt>"}


def test_a_dtd_is_refused_in_any_encoding(edge):
    s3 = edge.s3(0)
    s3.create_bucket(Bucket="dtd")
    s3.put_object(Bucket="dtd", Key="k", Body=b"x")
    doc = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE t [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
           "<Tagging><TagSet><Tag><Key>k</Key><Value>&b;</Value></Tag></TagSet></Tagging>").encode("utf-16")
    head = signed(edge, "PUT", "/dtd/k", "tagging=", [("content-length", str(len(doc))), ("connection", "close")])
    answer = raw(edge, head + doc)
    assert b" 400 " in answer.split(b"\r\n", 1)[0] and b"MalformedXML" in answer, answer[:300]
    assert s3.get_object_tagging(Bucket="dtd", Key="k")["TagSet"] == []


def test_unknown_and_wrong_keys_are_refused_before_any_raft_read(edge):
    answer = raw(edge, signed(edge, "GET", "/", headers=[("connection", "close")], access="CKNOSUCHKEY0000",
                              secret="whatever"))
    assert b" 403 " in answer.split(b"\r\n", 1)[0] and b"InvalidAccessKeyId" in answer
    key, alice = user(edge, "alice")
    answer = raw(edge, signed(edge, "GET", "/", headers=[("connection", "close")], access=key["access_key"],
                              secret="not-the-secret"))
    assert b"SignatureDoesNotMatch" in answer
    alice.list_buckets()  # the real secret still works, and a deleted key stops at once
    admin(edge, "key", "rm", key["access_key"])
    with pytest.raises(ClientError) as e:
        alice.list_buckets()
    assert code(e) == "InvalidAccessKeyId"
    _users.pop("alice")


def test_connection_close_is_honoured_whenever_the_answer_comes(edge):
    """A client that says Connection: close waits for the close. It was lost whenever the
    answer came after the request had been read (the app's disconnect handling cancelled
    the close): such connections stayed open for good."""
    with contextlib.suppress(ClientError):
        edge.s3(0).create_bucket(Bucket="closing")
    for query in ("list-type=2&max-keys=5", "list-type=2&max-keys=x", "location"):
        for _ in range(10):
            started = time.monotonic()
            answer = raw(edge, signed(edge, "GET", "/closing", query, [("connection", "close")]), timeout=5)
            assert answer.startswith(b"HTTP/1.1 "), answer[:100]
            assert time.monotonic() - started < 3


def _form(fields: dict[str, str], file: bytes, boundary: str = "CairnBoundary") -> bytes:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return ("".join(parts) + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode("utf-8") + file + f"\r\n--{boundary}--\r\n".encode()


def test_broken_browser_forms_are_4xx_and_store_nothing(edge):
    s3 = client(edge, ACCESS_KEY, SECRET_KEY)
    with contextlib.suppress(ClientError):
        s3.create_bucket(Bucket="forms")
    post = s3.generate_presigned_post("forms", "upload.txt")
    host, port = addr(edge)

    def send(fields: dict[str, str]) -> bytes:
        body = _form(fields, b"form bytes")
        head = (f"POST /forms HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; "
                f"boundary=CairnBoundary\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        return raw(edge, head + body)

    assert send(post["fields"]).split(b"\r\n", 1)[0].split(b" ")[1] == b"204"
    assert s3.get_object(Bucket="forms", Key="upload.txt")["Body"].read() == b"form bytes"
    s3.delete_object(Bucket="forms", Key="upload.txt")
    def signed_policy(policy: bytes) -> dict[str, str]:
        encoded = base64.b64encode(policy).decode()
        _, date, region, service, _ = post["fields"]["x-amz-credential"].split("/")
        key = derive_signing_key(SECRET_KEY, date, region, service)
        return dict(post["fields"], policy=encoded,
                    **{"x-amz-signature": hmac.new(key, encoded.encode(), hashlib.sha256).hexdigest()})

    for change, want in ((dict(post["fields"], **{"x-amz-signature": "s\u00efgnature"}), b"403"),
                         (dict(post["fields"], policy=base64.b64encode(b"{not json").decode()), b"403"),
                         (signed_policy(b"{not json"), b"400"), (signed_policy(b'["a list"]'), b"400"),
                         (signed_policy(b'{"expiration": "2099-01-01T00:00:00Z", "conditions": [["eq", 1, 2]]}'),
                          b"403"),
                         (signed_policy(b'{"expiration": "2099-01-01T00:00:00Z", "conditions": '
                                        b'[["content-length-range", "a", []]]}'), b"400"),
                         ({**post["fields"], **{f"x-ignore-{i}": "v" * 1000 for i in range(80)}}, b"400")):
        answer = send(change)
        assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == want, answer[:400]
    with pytest.raises(ClientError):
        s3.head_object(Bucket="forms", Key="upload.txt")


def test_one_address_cannot_hold_every_connection(edge):
    """Past --max-connections-per-client, a client's new connections are closed before a
    byte is read; once it closes some, it is served again."""
    socks = []
    try:
        for _ in range(PER_CLIENT + 5):
            socks.append(socket.create_connection(addr(edge, 1), timeout=5))
        refused = 0
        for s in socks:
            s.settimeout(0.05)
            try:
                if s.recv(1) == b"":
                    refused += 1
            except TimeoutError:
                pass  # accepted: an idle connection, kept open
            except ConnectionResetError:
                refused += 1
        assert 5 <= refused <= PER_CLIENT + 5 and len(socks) - refused <= PER_CLIENT
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 10
    while not serving(edge, 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert serving(edge, 1)
    assert edge.s3(1).list_buckets()["Buckets"] is not None
