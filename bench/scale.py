"""Metadata at scale: a cluster filled with many small objects through the S3 API, and
what that costs at each checkpoint.

    python -m bench.scale [--checkpoints 100000,1000000,10000000] [--buckets 200] [--out DIR]

Starts a real cluster (3 raftmeta, 3 blob nodes, 2 frontends, fsync on) on free
127.0.0.1 ports and fills it with the light client of ``bench.load`` at high concurrency,
through both frontends: half of the objects 0 bytes, half 1 KiB (inline in their Raft
entries); half of them in bucket ``scale-big`` under the prefix ``p/`` (the listing
case), the rest spread over ``--buckets`` buckets of ten prefixes each. At every
checkpoint it measures, in this order:

- SQLite bytes per object (database and WAL of one replica) and each raftmeta's RSS;
- 4 KiB PUT (new keys) and 1 KiB GET / HEAD (existing keys) for ``--seconds`` at
  concurrency 1: ops/s, p50, p99, and how the raftmeta nodes served the reads (under the
  leader's lease or behind a barrier); then the same GETs again (``get_again``): the
  first ones read rows no request has touched since the start, these the same rows;
- a ListObjectsV2 walk of the first 1,000 pages of ``scale-big``'s ``p/``
  (``list_first_1m``: 1M keys once it holds them), then of all of it (1000 a page);
- leader failover: SIGKILL of the Raft leader -> the next successful PUT (then restarted);
- a follower's catch-up: SIGKILL of a follower, ``--catchup`` objects written without
  it (through S3, or with ``--catchup-direct`` as put_object commands through the
  metadata RPC, which is faster here), restart -> its applied index reaches the leader's
  commit index; ``snapshot_needed`` says whether the leader's log had been compacted past
  what the follower held, so it had to install a snapshot.

``--seed N`` starts from N objects applied to the stopped replicas' databases by their
own state machine (``bench.scale_seed``), not through S3; checkpoints above N are filled
through S3 as usual. Say which when you report a figure.

Results are printed as they come and written to DIR/scale.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import trio

from bench.load import Endpoint, Job, LoadGenerator, list_all, run_job
from bench.scale_seed import command as seed_command
from bench.scale_seed import seed, templates
from chaos.cluster import ACCESS_KEY, SECRET, SECRET_KEY, Cluster
from raftmeta.client import MetaClient

BIG = "scale-big"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def layout(first: int, last: int, buckets: int) -> dict[str, list[str]]:
    """Keys ``first`` .. ``last - 1`` by bucket: even numbers under BIG's ``p/``, odd
    ones over the other buckets (ten prefixes each)."""
    out: dict[str, list[str]] = {}
    for i in range(first, last):
        if i % 2 == 0:
            out.setdefault(BIG, []).append(f"p/{i:09d}")
        else:
            b = (i // 2) % buckets
            out.setdefault(f"scale-{b:03d}", []).append(f"q{(i // 2 // buckets) % 10}/{i:09d}")
    return out


def cpu_seconds(cluster: Cluster, gen: LoadGenerator) -> dict[str, float]:
    """CPU time (user + system) so far of each cluster process (with its children) and of
    the load generator's workers."""
    def of(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                for proc in (psutil.Process(pid), *psutil.Process(pid).children(recursive=True)):
                    times = proc.cpu_times()
                    total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    out = {name: of([proc.pid]) for name, proc in cluster.procs.items() if proc.pid}
    out["client"] = of(gen.pids)
    return out


def fill(gen: LoadGenerator, eps: list[Endpoint], keys: dict[str, list[str]], threads: int,
         budget: float, cluster: Cluster | None = None) -> dict[str, Any]:
    """PUT every key once: one job per (bucket, frontend, size), ``threads`` threads each.
    With ``cluster``: also the CPU microseconds per PUT of each role."""
    before = cpu_seconds(cluster, gen) if cluster is not None else {}
    start = time.time() + 0.5
    jobs = []
    for b, names in keys.items():
        for i, ep in enumerate(eps):
            share = names[i::len(eps)]
            for size, part in ((0, share[0::2]), (1024, share[1::2])):
                if part:
                    jobs.append(Job(ep, "PUT", b, part, threads, start, body_size=size, proc=len(jobs),
                                    max_seconds=budget))
    results = gen.pool.map(run_job, jobs, chunksize=1)
    ok, errors = sum(len(r.latencies) for r in results), sum(r.errors for r in results)
    wall = max(r.ended for r in results) - start
    out = {"puts": ok, "errors": errors, "seconds": round(wall, 1), "ops_per_s": round(ok / wall, 1),
           "first_error": next((r.first_error for r in results if r.first_error), "")}
    if cluster is not None and ok:
        after = cpu_seconds(cluster, gen)
        roles: dict[str, float] = {}
        for name, seconds in after.items():
            role = name.rstrip("0123456789")
            roles[role] = roles.get(role, 0.0) + seconds - before.get(name, seconds)
        out["cpu_us_per_put"] = {role: round(1e6 * seconds / ok) for role, seconds in sorted(roles.items())}
    return out


def latency(gen: LoadGenerator, ep: Endpoint, method: str, bucket: str, keys: list[str], seconds: float,
            body: int = 4096) -> dict[str, Any]:
    r = gen.run(ep, method, bucket, keys, 1, seconds, body_size=body, unique=method == "PUT")
    lat = sorted(r["latencies"])
    if not lat:
        return {"error": r["first_error"] or "no request succeeded"}
    return {"ops_per_s": round(r["ops_per_s"], 1), "p50_ms": round(1000 * statistics.median(lat), 2),
            "p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 2), "errors": r["errors"]}


def footprint(cluster: Cluster, objects: int) -> dict[str, Any]:
    db = sum(p.stat().st_size for p in (cluster.root / "raftmeta1").glob("meta.sqlite*"))
    rss = {}
    for name, proc in cluster.procs.items():
        if name.startswith("raftmeta") and proc.pid:
            with_children = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            rss[name] = round(sum(p.memory_info().rss for p in with_children) / 2**20, 1)
    return {"sqlite_bytes": db, "sqlite_bytes_per_object": round(db / max(objects, 1), 1), "raftmeta_rss_mib": rss}


async def _statuses(rpc: list[str]) -> list[dict[str, Any] | None]:
    client = MetaClient(rpc, SECRET)
    out: list[dict[str, Any] | None] = []
    for addr in rpc:
        try:
            with trio.fail_after(2):
                out.append(await client.status(addr))
        except Exception:
            out.append(None)
    return out


def _reads(cluster: Cluster) -> dict[str, int]:
    """Linearizable reads served so far by all raftmeta nodes, by how: under the leader's
    lease (no Raft round) or behind a barrier (one)."""
    total: dict[str, int] = {}
    for status in trio.run(_statuses, cluster.rpc):
        for how, count in ((status or {}).get("reads") or {}).items():
            total[how] = total.get(how, 0) + count
    return total


def failover(cluster: Cluster) -> dict[str, Any]:
    s3 = cluster.s3(0, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=15)
    leader = cluster.leader()
    if leader is None:
        return {"error": "no leader"}
    t = time.perf_counter()
    cluster.kill(leader)
    took = None
    while time.perf_counter() - t < 60:
        try:
            s3.put_object(Bucket=BIG, Key=f"failover/{time.time()}", Body=b"x" * 4096)
            took = time.perf_counter() - t
            break
        except Exception:
            time.sleep(0.02)
    cluster.start(leader)
    cluster.wait_healthy(120)
    return {"killed": leader, "seconds": None if took is None else round(took, 3)}


def write_direct(cluster: Cluster, count: int, in_flight: int = 64) -> dict[str, Any]:
    """``count`` put_object commands of the 1 KiB template through the metadata RPC (as a
    frontend commits them), ``in_flight`` at once: faster than S3 on this machine."""
    objects = templates(cluster, BIG)

    async def run() -> float:
        client = MetaClient(cluster.rpc, SECRET)
        limit = trio.Semaphore(in_flight)
        started = time.perf_counter()

        async def one(n: int) -> None:
            async with limit:
                reply = await client.write(seed_command(BIG, f"direct/{n:09d}", objects[1024], time.time()))
                if not reply.get("ok"):
                    raise RuntimeError(f"direct write failed: {reply}")

        async with trio.open_nursery() as nursery:
            for n in range(count):
                await limit.acquire()
                limit.release()
                nursery.start_soon(one, n)
        return time.perf_counter() - started

    seconds = trio.run(run)
    return {"commands": count, "seconds": round(seconds, 1), "per_s": round(count / seconds, 1)}


def catchup(cluster: Cluster, gen: LoadGenerator, eps: list[Endpoint], first: int, count: int,
            buckets: int, direct: bool = False) -> dict[str, Any]:
    leader = cluster.leader()
    follower = next(n for n in cluster.procs if n.startswith("raftmeta") and n != leader)
    index = int(follower.removeprefix("raftmeta")) - 1
    was = (trio.run(_statuses, [cluster.rpc[index]])[0] or {}).get("last_applied", 0)
    cluster.kill(follower)
    if direct:
        written = write_direct(cluster, count)
    else:
        written = fill(gen, eps, layout(first, first + count, buckets), 8, 1800)
    statuses = trio.run(_statuses, cluster.rpc)
    target = max((s or {}).get("commit_index", 0) for s in statuses)
    log_start = min((s or {}).get("commit_index", 0) - (s or {}).get("log_size", 0) for s in statuses if s)
    t = time.perf_counter()
    cluster.start(follower)
    took = None
    while time.perf_counter() - t < 600:
        status = trio.run(_statuses, [cluster.rpc[index]])[0]
        if status and status.get("last_applied", 0) >= target:
            took = time.perf_counter() - t
            break
        time.sleep(0.2)
    return {"follower": follower, "written_while_down": written, "entries_behind": target - was,
            # the leader's log no longer holds what the follower lacks: it gets a snapshot
            "snapshot_needed": log_start > was, "seconds": None if took is None else round(took, 2)}


def checkpoint(cluster: Cluster, gen: LoadGenerator, eps: list[Endpoint], n: int, args: argparse.Namespace,
               sample: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"objects": n, **footprint(cluster, n)}
    out["put"] = latency(gen, eps[0], "PUT", BIG, ["probe/"], args.seconds)
    for name, method in (("get", "GET"), ("head", "HEAD"), ("get_again", "GET")):  # again: the rows cached now
        before = _reads(cluster)
        out[name] = latency(gen, eps[0], method, BIG, sample, args.seconds)
        out[name]["reads"] = {how: after - before.get(how, 0) for how, after in _reads(cluster).items()}
    t = time.perf_counter()
    listed = list_all(eps[0], BIG, prefix="p/", max_pages=1000, max_seconds=600)
    out["list_first_1m"] = {"keys": listed, "seconds": round(time.perf_counter() - t, 2)}
    t = time.perf_counter()
    listed = list_all(eps[0], BIG, prefix="p/", max_seconds=600)
    out["list"] = {"keys": listed, "seconds": round(time.perf_counter() - t, 2)}
    say(f"{n:,}: {out}")
    out["failover"] = failover(cluster)
    say(f"  failover {out['failover']}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", default="100000,1000000,10000000")
    ap.add_argument("--buckets", type=int, default=200)
    ap.add_argument("--threads", type=int, default=8, help="fill threads per job (jobs: bucket x frontend x size)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--catchup", type=int, default=0, help="objects written while a follower is down (0: 10%% of the last checkpoint, at most 1,000,000)")
    ap.add_argument("--catchup-direct", action="store_true",
                    help="write the catch-up's objects as put_object commands through the metadata RPC, not S3")
    ap.add_argument("--fill-budget", type=float, default=4 * 3600)
    ap.add_argument("--seed", type=int, default=0,
                    help="objects applied straight to the stopped replicas' databases before any S3 fill (bench.scale_seed)")
    ap.add_argument("--out", default="bench-out-scale")
    args = ap.parse_args(argv)
    points = sorted(int(x) for x in args.checkpoints.split(","))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(args),
                              "checkpoints": []}
    with tempfile.TemporaryDirectory() as root, LoadGenerator(2) as gen:
        cluster = Cluster(Path(root), gc_grace=3600.0)
        cluster.start()
        try:
            cluster.wait_healthy(60)
            eps = [Endpoint(e, ACCESS_KEY, SECRET_KEY) for e in cluster.endpoints]
            s3 = cluster.s3()
            s3.create_bucket(Bucket=BIG)
            for b in range(args.buckets):
                s3.create_bucket(Bucket=f"scale-{b:03d}")
            done = 0
            if args.seed:
                objects = templates(cluster, BIG)
                cluster.stop()
                slices = (layout(first, min(first + 100_000, args.seed), args.buckets)
                          for first in range(0, args.seed, 100_000))
                result["seed"] = seed(cluster, slices, objects)
                say(f"seeded {result['seed']}")
                cluster.start()
                cluster.wait_healthy(600)
                done = args.seed
            for n in points:
                started = time.perf_counter()
                fills = []
                while done < n:  # in slices, so progress shows and one slice's failure stops early
                    step = min(n - done, 100_000)
                    fills.append(fill(gen, eps, layout(done, done + step, args.buckets), args.threads, args.fill_budget, cluster))
                    done += step
                    say(f"filled {done:,} ({fills[-1]})")
                    if fills[-1]["errors"]:
                        raise SystemExit(f"fill errors: {fills[-1]}")
                sample = layout(max(0, n - 4000), n, args.buckets)[BIG]
                point = checkpoint(cluster, gen, eps, n, args, sample)
                point["fill"] = {"seconds": round(time.perf_counter() - started, 1),
                                 "ops_per_s": round(sum(f["puts"] for f in fills) / max(sum(f["seconds"] for f in fills), 1e-9), 1)}
                result["checkpoints"].append(point)
                (out_dir / "scale.json").write_text(json.dumps(result, indent=1))
            count = args.catchup or min(max(points[-1] // 10, 1000), 1_000_000)
            result["catchup"] = catchup(cluster, gen, eps, done, count, args.buckets, args.catchup_direct)
            say(f"catch-up {result['catchup']}")
            result["ended"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            (out_dir / "scale.json").write_text(json.dumps(result, indent=1))
        finally:
            cluster.stop()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
