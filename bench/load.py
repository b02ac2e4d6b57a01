"""A light S3 load generator: several processes, several threads each, raw http.client.

boto3 spends ~1 ms of CPU per request building, signing and parsing; on two cores that
caps it near 1,000 ops/s, below what the servers under test can do. Here every thread
keeps one keep-alive connection and signs each request itself with SigV4 (a signing key
derived once per run, then one HMAC per request), so a request costs tens of
microseconds of client CPU. ``ceiling()`` measures what this generator reaches against
a server that answers at once, so every small-object figure can be read against it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import multiprocessing
import os
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Signer:
    """SigV4 for S3 path-style requests, header auth, payload hash in x-amz-content-sha256."""

    def __init__(self, access_key: str, secret_key: str, region: str = "us-east-1", now: float | None = None) -> None:
        stamp = time.gmtime(time.time() if now is None else now)
        self.amz_date = time.strftime("%Y%m%dT%H%M%SZ", stamp)
        day = self.amz_date[:8]
        self.scope = f"{day}/{region}/s3/aws4_request"
        self.access_key = access_key
        key = ("AWS4" + secret_key).encode()
        for part in (day, region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self.key = key

    def headers(self, method: str, host: str, path: str, query: str = "",
                payload_sha256: str = EMPTY_SHA256) -> dict[str, str]:
        """Headers for one request; ``path`` and ``query`` already URI-encoded as sent."""
        signed = "host;x-amz-content-sha256;x-amz-date"
        canonical = "\n".join([method, path, query, f"host:{host}", f"x-amz-content-sha256:{payload_sha256}",
                               f"x-amz-date:{self.amz_date}", "", signed, payload_sha256])
        to_sign = "\n".join(["AWS4-HMAC-SHA256", self.amz_date, self.scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        sig = hmac.new(self.key, to_sign.encode(), hashlib.sha256).hexdigest()
        return {"Host": host, "x-amz-date": self.amz_date, "x-amz-content-sha256": payload_sha256,
                "Authorization": f"AWS4-HMAC-SHA256 Credential={self.access_key}/{self.scope}, "
                                 f"SignedHeaders={signed}, Signature={sig}"}


def encode_query(params: dict[str, str]) -> str:
    """SigV4's canonical query string, which is also what we send."""
    q = urllib.parse.quote
    return "&".join(f"{q(k, safe='-_.~')}={q(v, safe='-_.~')}" for k, v in sorted(params.items()))


@dataclass
class Endpoint:
    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    @property
    def hostport(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc


@dataclass
class Job:
    """One worker process's share of a run: ``threads`` threads, each over ``keys[i::threads]``
    (count mode) or cycling over them until ``until`` (time mode)."""

    endpoint: Endpoint
    method: str
    bucket: str
    keys: list[str]
    threads: int
    start_at: float
    until: float | None = None
    body_size: int = 4096
    unique: bool = False  # keys[0] is a prefix: every request writes a new key under it
    proc: int = 0
    max_seconds: float = 600.0  # hard bound on any job


@dataclass
class JobResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    started: float = 0.0
    ended: float = 0.0


def _thread_loop(job: Job, keys: list[str], tid: int, out: JobResult, lock: threading.Lock) -> None:
    host = job.endpoint.hostport
    signer = Signer(job.endpoint.access_key, job.endpoint.secret_key, job.endpoint.region)
    body = os.urandom(job.body_size) if job.method == "PUT" else None
    digest = hashlib.sha256(body).hexdigest() if body is not None else EMPTY_SHA256
    lat: list[float] = []
    errors, first = 0, ""
    conn = http.client.HTTPConnection(host, timeout=30)
    bucket_path = "/" + urllib.parse.quote(job.bucket)
    time.sleep(max(0.0, job.start_at - time.time()))
    i, hard_stop = 0, job.start_at + job.max_seconds
    while keys and time.time() < hard_stop:
        if job.until is None:
            if i >= len(keys):
                break
        elif time.time() >= job.until:
            break
        key = f"{keys[0]}{job.proc}-{tid}-{i}" if job.unique else keys[i % len(keys)]
        path = f"{bucket_path}/{urllib.parse.quote(key, safe='/~')}"
        i += 1
        headers = signer.headers(job.method, host, path, "", digest)
        t = time.perf_counter()
        try:
            conn.request(job.method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            ok = 200 <= resp.status < 300
            if not ok and not first:
                first = f"{job.method} HTTP {resp.status}"
        except (OSError, http.client.HTTPException) as exc:
            ok = False
            first = first or f"{job.method} {exc!r}"
            conn.close()
            conn = http.client.HTTPConnection(host, timeout=30)
        if ok:
            lat.append(time.perf_counter() - t)
        else:
            errors += 1
    conn.close()
    with lock:
        out.latencies += lat
        out.errors += errors
        out.first_error = out.first_error or first


def run_job(job: Job) -> JobResult:
    """Worker-process entry: run the job's threads, return every latency."""
    out, lock = JobResult(), threading.Lock()
    threads = [threading.Thread(target=_thread_loop,
                                args=(job, job.keys if job.unique else job.keys[i::job.threads], i, out, lock))
               for i in range(job.threads)]
    for t in threads:
        t.start()
    out.started = max(job.start_at, time.time())
    for t in threads:
        t.join()
    out.ended = time.time()
    return out


def _warm(_: int) -> int:
    return os.getpid()


class LoadGenerator:
    """A pool of client processes; ``run`` spreads a concurrency level over them."""

    def __init__(self, processes: int = 4) -> None:
        self.processes = processes
        self.pool = multiprocessing.get_context("spawn").Pool(processes)
        self.pids = sorted(set(self.pool.map(_warm, range(processes * 4))))

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, endpoint: Endpoint, method: str, bucket: str, keys: list[str], concurrency: int,
            duration: float | None = None, body_size: int = 4096, unique: bool = False,
            max_seconds: float = 600.0) -> dict[str, Any]:
        """``concurrency`` requests in flight; over each key once (duration None) or cycling
        for ``duration`` seconds (``unique``: new keys under the prefix ``keys[0]``).
        Returns ok count, errors, wall seconds and latencies."""
        procs = min(concurrency, self.processes)
        start = time.time() + 0.5
        until = start + duration if duration is not None else None
        jobs = []
        for p in range(procs):
            threads = concurrency // procs + (1 if p < concurrency % procs else 0)
            share = keys if unique else keys[p::procs]
            jobs.append(Job(endpoint, method, bucket, share, threads, start, until, body_size, unique, p, max_seconds))
        results = self.pool.map(run_job, jobs, chunksize=1)
        lat = [x for r in results for x in r.latencies]
        wall = max(r.ended for r in results) - start
        errors = sum(r.errors for r in results)
        first = next((r.first_error for r in results if r.first_error), "")
        return {"ok": len(lat), "errors": errors, "first_error": first, "seconds": wall,
                "ops_per_s": len(lat) / wall if wall > 0 else 0.0, "latencies": lat}


# ---------------------------------------------------------------------- listing


def list_all(endpoint: Endpoint, bucket: str, prefix: str = "", max_pages: int | None = None,
             max_seconds: float = 300.0) -> int:
    """ListObjectsV2 page after page (1000 keys each) with the light client; returns the
    number of keys seen. Parsing is two regexes: the server's work, not XML, is timed."""
    deadline = time.monotonic() + max_seconds
    host, signer = endpoint.hostport, Signer(endpoint.access_key, endpoint.secret_key, endpoint.region)
    conn = http.client.HTTPConnection(host, timeout=120)
    path = "/" + urllib.parse.quote(bucket)
    token, seen = None, 0
    try:
        for _page in range(max_pages or 1_000_000):
            if time.monotonic() > deadline:
                raise TimeoutError(f"listing took over {max_seconds:.0f} s ({seen:,} keys so far)")
            params = {"list-type": "2", "max-keys": "1000"}
            if prefix:
                params["prefix"] = prefix
            if token:
                params["continuation-token"] = token
            query = encode_query(params)
            conn.request("GET", f"{path}?{query}", headers=signer.headers("GET", host, path, query))
            resp = conn.getresponse()
            xml = resp.read().decode()
            if resp.status != 200:
                raise RuntimeError(f"ListObjectsV2 HTTP {resp.status}: {xml[:300]}")
            seen += xml.count("<Key>")
            m = re.search(r"<NextContinuationToken>([^<]*)</NextContinuationToken>", xml)
            if "<IsTruncated>true</IsTruncated>" not in xml or not m:
                break
            token = _unescape(m.group(1))
    finally:
        conn.close()
    return seen


def _unescape(text: str) -> str:
    return (text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
            .replace("&apos;", "'").replace("&amp;", "&"))


# ---------------------------------------------------------------------- null server


class _NullProtocol(asyncio.Protocol):
    """Answers every HTTP/1.1 request at once: 200, a 4 KiB body for GET, none otherwise."""

    GET_BODY = b"x" * 4096

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buf[:end].decode("latin-1")
            m = re.search(r"(?im)^content-length:\s*(\d+)", head)
            need = end + 4 + (int(m.group(1)) if m else 0)
            if len(self.buf) < need:
                break
            self.buf = self.buf[need:]
            if head.startswith("GET"):
                out.append(b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n" + self.GET_BODY)
            elif head.startswith("HEAD"):
                out.append(b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n")
            else:
                out.append(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        if out:
            self.transport.write(b"".join(out))


def _serve_null(port: int, ready: Any, stop_after: float) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_NullProtocol, "127.0.0.1", port)
        ready.set()
        async with server:
            await asyncio.sleep(stop_after)

    asyncio.run(main())


def ceiling(gen: LoadGenerator, port: int, concurrency: int = 16, duration: float = 3.0) -> dict[str, float]:
    """ops/s of each method against a one-process asyncio server that answers at once (on
    the same two cores, as every server under test is)."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=_serve_null, args=(port, ready, 120.0), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("null server did not start")
        ep = Endpoint(f"http://127.0.0.1:{port}", "AK", "SK")
        keys = [f"k{i}" for i in range(1000)]
        return {m: gen.run(ep, m, "null", keys, concurrency, duration)["ops_per_s"] for m in ("PUT", "GET", "HEAD")}
    finally:
        server.terminate()
        server.join(10)
