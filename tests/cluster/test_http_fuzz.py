"""The HTTP edge under garbage: seeded, bounded streams of truncated and malformed
requests of every kind thrown at a live frontend from plain sockets. The process must
stay up and keep serving, a complete request must get an answer, and no answer to a
client's mistake may be a 500."""

from __future__ import annotations

import random
import socket
import time

import pytest

from chaos.cluster import ACCESS_KEY, SECRET_KEY
from frontend.sigv4 import sign_headers

pytestmark = pytest.mark.cluster

REQUESTS = 1000  # per seed
BUDGET_S = 30.0  # per seed, whatever is left undone

METHODS = ["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH", "PROPFIND", "G\x01T", ""]
PATHS = ["/", "/fuzz", "/fuzz/k", "/fuzz/a/b/../c", "//", "/fuzz//k", "/%ff%fe", "/fuzz/%00", "/_cairn/status",
         "/_cairn/health", "/_cairn/users", "/_cairn/../fuzz", "/Fuzz_Bad", "/" + "a" * 300, "/fuzz/" + "k" * 2000,
         "*", "fuzz/k", "/fuzz/k?", "/fuzz/\u00e9"]
QUERIES = ["", "acl", "tagging", "uploads", "uploadId=x", "uploadId=x&partNumber=1", "partNumber=0", "versions",
           "delete", "cors", "location", "list-type=2&max-keys=-1", "list-type=2&continuation-token=%%%",
           "max-keys=99999999999999999999999", "prefix=%ZZ", "encoding-type=xml", "x-id=PutObject",
           "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a/b", "AWSAccessKeyId=a&Signature=b&Expires=c",
           "X-Amz-Expires=999999999999999999999", "response-content-type=a%0d%0ab", "policy", "website",
           "select&select-type=2", "torrent", "restore", "lifecycle", "object-lock", "retention", "legal-hold",
           "&&&==&", "a=%E0%A4%A"]
HEADERS = [("Content-MD5", "not base64"), ("Content-MD5", "AAAA"), ("x-amz-content-sha256", "junk"),
           ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), ("x-amz-decoded-content-length", "x"),
           ("x-amz-decoded-content-length", "9" * 40), ("Content-Encoding", "aws-chunked"),
           ("Range", "bytes=9-1"), ("Range", "bytes=" + "9" * 50 + "-"), ("Range", "chars=1-2"),
           ("If-Match", "*"), ("If-None-Match", "\"x\""), ("If-Modified-Since", "yesterday"),
           ("x-amz-copy-source", "/"), ("x-amz-copy-source", "/fuzz/%ff"), ("x-amz-copy-source-range", "bytes=a-b"),
           ("x-amz-checksum-crc32", "!!"), ("x-amz-checksum-sha256", "AAAA"), ("x-amz-trailer", "x-amz-checksum-md6"),
           ("x-amz-tagging", "a=b&a=c"), ("x-amz-meta-big", "m" * 3000), ("x-amz-acl", "public-read-write"),
           ("Authorization", "AWS4-HMAC-SHA256 Credential=/"), ("Authorization", "AWS a:b"),
           ("Authorization", "AWS4-HMAC-SHA256 Credential=cairnroot/20260101/us-east-1/s3/aws4_request, "
                             "SignedHeaders=host, Signature=00"), ("x-amz-date", "garbage"), ("Expect", "100-continue"),
           ("Content-Type", "multipart/form-data; boundary="), ("Content-Type", "multipart/form-data; boundary=X"),
           ("Host", ""), ("Host", "b.example.com"), ("Connection", "close"), ("Transfer-Encoding", "gzip")]
BODIES = [b"", b"<", b"<Delete><Object><Key>k</Key></Object></Delete>", b"\x00" * 100, b"\xff\xfe<\x00",
          b"<?xml version='1.0'?><!DOCTYPE a SYSTEM 'file:///etc/passwd'><a/>",
          b"--X\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk\r\n--X--\r\n", b"x" * 70000]


def _request(rng: random.Random, host: str, bucket_ready: bool) -> tuple[bytes, bool]:
    """One malformed request as bytes, and whether it is complete (it deserves an answer)."""
    method = rng.choice(METHODS)
    path = rng.choice(PATHS)
    query = rng.choice(QUERIES)
    target = path + ("?" + query if query and "?" not in path else "")
    headers = [("Host", host)] if rng.random() < 0.95 else []
    headers += rng.sample(HEADERS, rng.randint(0, 4))
    body = rng.choice(BODIES)
    complete = True
    framing = rng.random()
    if framing < 0.55:
        headers.append(("Content-Length", str(len(body))))
    elif framing < 0.7:  # a lie about the length: short bodies are truncated requests
        declared = max(0, len(body) + rng.choice([-5, 1, 100, 10**6]))
        headers.append(("Content-Length", str(declared)))
        complete = declared <= len(body)
        body = body[:declared]
    elif framing < 0.85:
        headers.append(("Transfer-Encoding", "chunked"))
        if rng.random() < 0.5:
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        else:  # bad chunked framing
            body = rng.choice([b"zz\r\nabc", b"5\r\nab", b"ffffffffffffffff\r\n", b"3\r\nabcde\r\n0\r\n\r\n"])
            complete = False
    elif framing < 0.9:
        headers.append(("Content-Length", "-1" if rng.random() < 0.5 else "1,2"))
    if rng.random() < 0.2 and method and method.isalpha():  # some validly signed, to get past authentication
        signed = sign_headers(method, path.split("?")[0].encode("utf-8", "replace"), query.encode(), headers,
                              ACCESS_KEY, SECRET_KEY)
        headers = signed
    if rng.random() < 0.03:
        headers.append(("X-Huge", "h" * 70000))  # past the frontend's header limit
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    data = head.encode("utf-8", "surrogateescape") + body
    if rng.random() < 0.1:
        data += rng.choice([b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00", b"\r\n" * 100])
    if rng.random() < 0.1:  # truncated anywhere, even in the request line
        data = data[: rng.randint(0, len(data))]
        complete = False
    return data, complete


def _send(addr: tuple[str, int], data: bytes, rng: random.Random, complete: bool) -> bytes | None:
    """Send; then either read the answer (None if none came) or leave rudely. A
    truncated request may wait for the rest of itself: it gets a moment, not 5 s."""
    s = socket.create_connection(addr, timeout=5 if complete else 0.2)
    try:
        try:
            s.sendall(data)
        except OSError:
            return b""
        ending = rng.random()
        if ending < 0.15:
            return b""  # close at once, answer or not
        if ending < 0.25:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return b""  # reset
        if ending < 0.35:
            s.shutdown(socket.SHUT_WR)
        try:
            first = s.recv(65536)
        except TimeoutError:
            return None
        except OSError:
            return b""
        return first
    finally:
        s.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_garbage_never_kills_or_500s_the_frontend(cluster, s3, seed):
    s3.create_bucket(Bucket="fuzz") if seed == 1 else None
    endpoint = cluster.endpoints[seed % 2]
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    addr = (host, int(port))
    rng = random.Random(seed)
    errors: list[tuple[bytes, bytes]] = []
    unanswered: list[bytes] = []
    started = time.monotonic()
    for i in range(REQUESTS):
        if time.monotonic() - started > BUDGET_S:
            break
        data, complete = _request(rng, f"{host}:{port}", True)
        answer = _send(addr, data, rng, complete)
        if answer is None and complete:
            unanswered.append(data[:200])
        if answer and answer.split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"500"]:
            errors.append((data[:300], answer[:300]))
        if i % 50 == 49:
            assert cluster.procs[f"frontend{seed % 2 + 1}"].alive(), f"frontend died after request {i}"
            assert (cluster.health(seed % 2) or {}).get("status") == "ok"
    assert cluster.procs[f"frontend{seed % 2 + 1}"].alive()
    assert (cluster.health(seed % 2) or {}).get("status") == "ok"
    s3.put_object(Bucket="fuzz", Key="after-the-storm", Body=b"fine")
    assert s3.get_object(Bucket="fuzz", Key="after-the-storm")["Body"].read() == b"fine"
    assert not errors, f"{len(errors)} answers were 500: {errors[:3]}"
    print(f"seed {seed}: {i + 1} requests in {time.monotonic() - started:.1f} s")
    assert not unanswered, f"{len(unanswered)} complete requests got no answer in 5 s: {unanswered[:3]}"
