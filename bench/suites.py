"""The measurements, run the same way against every target.

Large objects and multipart go through boto3 with its defaults (what users run); small
objects and listings go through the light load generator of bench.load, so that the
client is not what is measured. Every figure records its runs into a TargetResult.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from bench.load import Endpoint, LoadGenerator, list_all
from bench.report import TargetResult, percentile

MiB = 1 << 20


@dataclass
class Plan:
    large: int = 64 * MiB  # the "64 MiB" objects
    huge: int = 1024 * MiB  # the "1 GiB" objects
    streams: tuple[int, ...] = (1, 4, 16)
    runs: int = 3
    runs_big: int = 1  # runs of the 1 GiB and 100k-key cases
    small_seconds: float = 2.0
    concurrency: tuple[int, ...] = (1, 16, 64)
    list_small: int = 10_000
    list_big: int = 100_000
    populate_seconds: float = 600.0  # budget for writing the listing keys


def size_word(n: int) -> str:
    return f"{n // 1024 // MiB} GiB" if n >= 1024 * MiB else f"{n // MiB} MiB"


# ---------------------------------------------------------------------- resources


def _tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(pids: list[int], tree: bool = True) -> float:
    """CPU seconds used so far by ``pids`` (and their descendants when ``tree``)."""
    total = 0.0
    for pid in pids:
        for p in _tree(pid) if tree else _tree(pid)[:1]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


class Sampler:
    """A background thread calling ``sample()`` every ``interval`` seconds while in a
    ``with`` block."""

    interval = 0.1

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class Monitor(Sampler):
    """Samples the RSS of each named server process (with its children) every 0.1 s."""

    def __init__(self, procs: dict[str, int]) -> None:
        super().__init__()
        self.procs, self.peak = procs, dict.fromkeys(procs, 0)

    def sample(self) -> None:
        for name, pid in self.procs.items():
            rss = 0
            for p in _tree(pid):
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak[name] = max(self.peak[name], rss)


class OtherLoad(Sampler):
    """Average cores used by processes outside this process's tree (somebody else's work
    on the same machine), sampled every second while a target is measured."""

    interval = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.me = os.getpid()
        self.other, self.wall = 0.0, 0.0
        self._last: tuple[float, float, float] | None = None

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()  # guest time is already inside user; steal is the hypervisor's
        return t.user + t.system + sum(getattr(t, f, 0.0) for f in ("nice", "irq", "softirq"))

    def sample(self) -> None:
        now = self._busy(), cpu_seconds([self.me]), time.monotonic()
        if self._last is not None:
            (busy, ours, t), (busy2, ours2, t2) = self._last, now
            self.other += max(0.0, (busy2 - busy) - (ours2 - ours))
            self.wall += t2 - t
        self._last = now

    @property
    def cores(self) -> float:
        return round(self.other / self.wall, 2) if self.wall else 0.0


class CpuMeter:
    """Cores used by the client (this process and the generator's, without their children:
    the servers are our children too) and by the servers (with their children)."""

    def __init__(self, client: list[int], server: list[int]) -> None:
        self.client, self.server = client, server

    def __enter__(self) -> CpuMeter:
        self.t = time.perf_counter()
        self.c0, self.s0 = cpu_seconds(self.client, tree=False), cpu_seconds(self.server)
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.perf_counter() - self.t, 1e-9)
        self.cores = {"client_cores": round((cpu_seconds(self.client, tree=False) - self.c0) / wall, 2),
                      "server_cores": round((cpu_seconds(self.server) - self.s0) / wall, 2)}


def boto(ep: Endpoint, pool: int = 32) -> Any:
    import boto3
    from botocore.config import Config

    cfg = Config(max_pool_connections=pool, retries={"max_attempts": 3, "mode": "standard"},
                 connect_timeout=10, read_timeout=300)
    return boto3.client("s3", endpoint_url=ep.url, aws_access_key_id=ep.access_key,
                        aws_secret_access_key=ep.secret_key, region_name=ep.region, config=cfg)


def make_file(path: Path, size: int) -> Path:
    if not path.exists() or path.stat().st_size != size:
        with open(path, "wb") as f:
            for _ in range(size // (8 * MiB)):
                f.write(os.urandom(8 * MiB))
            f.write(os.urandom(size % (8 * MiB)))
    return path


# ---------------------------------------------------------------------- large objects


def large(ep: Endpoint, res: TargetResult, plan: Plan, files: Path, server: dict[str, int]) -> None:
    s3 = boto(ep)
    s3.create_bucket(Bucket="bench-large")
    src, big = make_file(files / "large.bin", plan.large), make_file(files / "huge.bin", plan.huge)
    L, H = size_word(plan.large), size_word(plan.huge)
    client = [os.getpid()]

    def put(key: str, path: Path) -> None:
        with open(path, "rb") as f:
            s3.put_object(Bucket="bench-large", Key=key, Body=f)

    def put_src(key: str) -> None:
        put(key, src)

    def get(key: str) -> int:
        body, n = s3.get_object(Bucket="bench-large", Key=key)["Body"], 0
        while block := body.read(MiB):
            n += len(block)
        return n

    def timed(fid: str, label: str, nbytes: int, work: Any) -> None:
        fig = res.figure(fid, label, "MB/s", "higher", "large")
        try:
            with CpuMeter(client, list(server.values())) as cpu:
                t = time.perf_counter()
                work()
                took = time.perf_counter() - t
            fig.runs.append(nbytes / took / 1e6)
            fig.extra.setdefault("cpu", []).append(cpu.cores)
        except Exception as exc:  # a failed case is reported, the others still run
            fig.error = f"{type(exc).__name__}: {exc}"[:300]

    put_src("warmup")  # first writes may allocate volumes, open files, elect things: not timed
    get("warmup")
    for n in plan.streams:
        keys = [f"s{n}/{i}" for i in range(n)]
        word = f"x{n} streams" if n > 1 else "1 stream"
        with ThreadPoolExecutor(n) as pool:
            for _ in range(plan.runs):
                timed(f"put_large_x{n}", f"PUT {L} {word}", n * plan.large, partial(_each, pool, put_src, keys))
                timed(f"get_large_x{n}", f"GET {L} {word}", n * plan.large, partial(_each, pool, get, keys))
        for k in keys:  # one by one: Swift's DeleteObjects wants Content-MD5, which boto3 no longer sends
            s3.delete_object(Bucket="bench-large", Key=k)
    for _ in range(plan.runs_big):
        timed("put_huge_x1", f"PUT {H} 1 stream", plan.huge, lambda: put("huge", big))
        timed("get_huge_x1", f"GET {H} 1 stream", plan.huge, lambda: get("huge"))
    s3.delete_object(Bucket="bench-large", Key="huge")
    for _ in range(plan.runs_big):
        timed("multipart_huge", f"upload_file {H} (boto3 multipart defaults)", plan.huge,
              lambda: s3.upload_file(str(big), "bench-large", "multipart"))
    s3.delete_object(Bucket="bench-large", Key="multipart")


def _each(pool: ThreadPoolExecutor, fn: Any, keys: list[str]) -> None:
    list(pool.map(fn, keys))


# ---------------------------------------------------------------------- small objects


def small(ep: Endpoint, res: TargetResult, plan: Plan, gen: LoadGenerator, server: dict[str, int]) -> None:
    s3 = boto(ep)
    s3.create_bucket(Bucket="bench-small")
    pool_keys = [f"pool/{i:05d}" for i in range(2000)]
    for attempt in range(3):  # a store may refuse some writes while it grows (SeaweedFS: HTTP 500)
        filled = gen.run(ep, "PUT", "bench-small", pool_keys, 16 if attempt else 64)
        if not filled["errors"]:
            break
        res.errors.append(f"small: {filled['errors']} errors writing the GET/HEAD pool (retried): {filled['first_error']}")
    else:
        raise RuntimeError(f"could not write the GET/HEAD key pool: {filled['first_error']}")
    client = [os.getpid(), *gen.pids]
    for run in range(plan.runs):
        for c in plan.concurrency:
            for op in ("PUT", "GET", "HEAD"):
                keys = [f"put/r{run}/c{c}/"] if op == "PUT" else pool_keys
                with CpuMeter(client, list(server.values())) as cpu:
                    r = gen.run(ep, op, "bench-small", keys, c, plan.small_seconds, unique=op == "PUT")
                lo = op.lower()
                ops = res.figure(f"small_{lo}_c{c}_ops", f"4 KiB {op} c{c}", "ops/s", "higher", "small_ops")
                p50 = res.figure(f"small_{lo}_c{c}_p50", f"4 KiB {op} c{c} p50", "ms", "lower", "small_lat")
                p99 = res.figure(f"small_{lo}_c{c}_p99", f"4 KiB {op} c{c} p99", "ms", "lower", "small_lat_tail")
                if r["errors"] > r["ok"] // 100:
                    for f in (ops, p50, p99):
                        f.error = f"{r['errors']} errors / {r['ok']} ok: {r['first_error']}"
                    continue
                ops.runs.append(r["ops_per_s"])
                ops.extra.setdefault("cpu", []).append(cpu.cores)
                ops.extra.setdefault("errors", []).append(r["errors"])
                p50.runs.append(percentile(r["latencies"], 50) * 1000)
                p99.runs.append(percentile(r["latencies"], 99) * 1000)


# ---------------------------------------------------------------------- listing


def page_prefix(keys: list[str], page: int = 1000) -> str:
    """The longest prefix of the key three quarters in that still matches >= ``page`` keys."""
    mid = keys[len(keys) * 3 // 4]
    for n in range(len(mid), 2, -1):
        if sum(1 for k in keys if k.startswith(mid[:n])) >= page:
            return mid[:n]
    return "b/"


def listing(ep: Endpoint, res: TargetResult, plan: Plan, gen: LoadGenerator) -> None:
    s3 = boto(ep)
    s3.create_bucket(Bucket="bench-list")
    keys = [f"a/{i:06d}" for i in range(plan.list_small)] + [f"b/{i:06d}" for i in range(plan.list_small, plan.list_big)]
    fill = res.figure("list_fill_ops", "populate: 0-byte PUT c32", "ops/s", "higher", "populate")
    r = gen.run(ep, "PUT", "bench-list", keys, 32, body_size=0, max_seconds=plan.populate_seconds)
    fill.runs.append(r["ops_per_s"])
    fill.extra = {"errors": r["errors"], "first_error": r["first_error"], "seconds": round(r["seconds"])}
    try:
        have = list_all(ep, "bench-list")
    except (OSError, RuntimeError) as exc:  # TimeoutError is an OSError
        have, fill.error = 0, f"could not count the keys written: {exc}"
    if have < len(keys) and not fill.error:
        fill.error = f"only {have:,}/{len(keys):,} keys written in the {plan.populate_seconds:.0f} s budget"
    prefix = page_prefix(keys[plan.list_small: plan.list_small + (plan.list_big - plan.list_small) // 4])
    cases = [("list_small_s", f"list {plan.list_small:,} keys (prefix a/)", "a/", plan.list_small, None, plan.runs),
             ("list_big_s", f"list {plan.list_big:,} keys (whole bucket)", "", plan.list_big, None, plan.runs_big),
             ("list_page_s", f"list 1 page of 1000 under {prefix}", prefix, 1000, 1, plan.runs)]
    for fid, label, pre, want, pages, runs in cases:
        fig = res.figure(fid, label, "s", "lower", "list")
        if have < len(keys) and (fid == "list_big_s" or have < plan.list_small):
            fig.error = f"not measured: {fill.error}"
            continue
        for _ in range(runs):
            try:
                t = time.perf_counter()
                got = list_all(ep, "bench-list", pre, pages)
                took = time.perf_counter() - t
            except Exception as exc:
                fig.error = f"{type(exc).__name__}: {exc}"[:300]
                break
            if got != want:
                fig.error = f"listed {got} keys, expected {want}"
                break
            fig.runs.append(took)
