"""What S3 versioning costs: listing a bucket full of noncurrent versions, and PUT.

    python -m bench.versioning [--keys 10000] [--noncurrent 10] [--rounds 3] [--out DIR]

Starts a real cluster (3 raftmeta, 3 blob nodes, 2 frontends, fsync on) on free
127.0.0.1 ports in a temp dir and stops it when done.

Listing: bucket ``list-a`` (unversioned) and ``list-v0`` (versioned, one version per
key) hold N keys of 100 bytes; ``list-b`` (versioned) holds the same N keys, each
written 1 + ``--noncurrent`` times, so it carries N x noncurrent noncurrent versions.
Full ListObjectsV2 walks (1000 keys a page, every page) are timed in the order A, V0,
B, A, V0, B, ... after one untimed walk of each.

PUT: 4 KiB and 1 MiB bodies overwrite the same 64 keys of an unversioned and of a
versioned bucket for ``--seconds`` at concurrency 1 and 8; the two buckets alternate
within each round and swap places every other round.

Both use the light client of bench.load (raw http.client, SigV4 per request), so the
client's CPU is not what is measured. Results are printed and written to DIR/versioning.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine
from bench.load import Endpoint, Job, LoadGenerator, list_all, run_job
from bench.suites import OtherLoad
from chaos.cluster import ACCESS_KEY, SECRET_KEY, Cluster

MiB = 1 << 20


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summary(runs: list[float]) -> dict[str, Any]:
    """Median and half the (max - min) spread, as the rest of BENCHMARKS.md reports."""
    return {"median": statistics.median(runs), "spread": (max(runs) - min(runs)) / 2, "runs": runs}


def fill(gen: LoadGenerator, eps: list[Endpoint], bucket: str, keys: list[str], writes: int, body: int,
         budget: float) -> dict[str, Any]:
    """PUT every key ``writes`` times, half the keys through each frontend, 16 threads each
    (one thread rewrites its own keys in order). Bounded by ``budget`` seconds."""
    start = time.time() + 0.5
    jobs = [Job(ep, "PUT", bucket, keys[i::len(eps)] * writes, 16, start, body_size=body, proc=i, max_seconds=budget)
            for i, ep in enumerate(eps)]
    results = gen.pool.map(run_job, jobs, chunksize=1)
    ok, errors = sum(len(r.latencies) for r in results), sum(r.errors for r in results)
    wall = max(r.ended for r in results) - start
    first = next((r.first_error for r in results if r.first_error), "")
    return {"puts": ok, "wanted": len(keys) * writes, "errors": errors, "first_error": first,
            "seconds": round(wall, 1), "ops_per_s": round(ok / wall, 1) if wall > 0 else 0.0}


def populate(cluster: Cluster, gen: LoadGenerator, eps: list[Endpoint], args: argparse.Namespace) -> dict[str, Any]:
    """Fill the three listing buckets. The first 2,000 PUTs into list-a measure the PUT
    rate; if all the PUTs would not fit in ``--fill-budget`` at that rate, fewer keys
    (a multiple of 1,000) are used in all three buckets, and the result says so."""
    s3 = cluster.s3()
    for b in ("list-a", "list-v0", "list-b"):
        s3.create_bucket(Bucket=b)
        if b != "list-a":
            s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    keys = [f"k/{i:06d}" for i in range(args.keys)]
    head = min(2000, len(keys))
    out: dict[str, Any] = {"keys_requested": args.keys, "sample": fill(gen, eps, "list-a", keys[:head], 1, 100, 300)}
    rate, per_key = max(out["sample"]["ops_per_s"], 1.0), 3 + args.noncurrent  # A, V0, B: 1 + 1 + (1 + k)
    fits = int((args.fill_budget * rate + head) / per_key) // 1000 * 1000
    if fits < len(keys):
        keys = keys[:max(fits, head)]
        say(f"at {rate:.0f} PUT/s only {len(keys):,} keys x {per_key} PUTs fit in {args.fill_budget:.0f} s")
    out["keys"] = args.keys = len(keys)
    for b, todo, writes in (("list-a", keys[head:], 1), ("list-v0", keys, 1), ("list-b", keys, 1 + args.noncurrent)):
        say(f"fill {b}: {len(todo):,} keys x {writes} PUTs of 100 B")
        out[b] = fill(gen, eps, b, todo, writes, 100, args.fill_budget * 1.5)
        say(f"  {out[b]}")
        if out[b]["puts"] < out[b]["wanted"] or out[b]["errors"]:
            raise SystemExit(f"{b}: {out[b]['puts']:,}/{out[b]['wanted']:,} PUTs done, {out[b]['errors']} errors")
    for b in ("list-a", "list-v0", "list-b"):
        n = list_all(eps[0], b)
        if n != args.keys:
            raise SystemExit(f"{b} lists {n:,} keys, expected {args.keys:,}")
    sample = s3.list_object_versions(Bucket="list-b", Prefix=keys[len(keys) // 2])
    out["versions_of_one_key_in_list-b"] = len(sample.get("Versions", []))
    if out["versions_of_one_key_in_list-b"] != 1 + args.noncurrent:
        raise SystemExit(f"list-b: {out['versions_of_one_key_in_list-b']} versions of a key, "
                         f"expected {1 + args.noncurrent}")
    return out


def listing(ep: Endpoint, args: argparse.Namespace) -> dict[str, Any]:
    buckets = ("list-a", "list-v0", "list-b")
    for b in buckets:
        list_all(ep, b)  # untimed: warms the frontend's and raftmeta's caches
    times: dict[str, list[float]] = {b: [] for b in buckets}
    deadline = time.monotonic() + args.list_budget
    for _ in range(args.list_walks):
        if time.monotonic() > deadline:
            break
        for b in buckets:
            t = time.perf_counter()
            n = list_all(ep, b, max_seconds=120)
            times[b].append(time.perf_counter() - t)
            if n != args.keys:
                raise RuntimeError(f"{b}: listed {n} keys, expected {args.keys}")
    out: dict[str, Any] = {b: summary(v) for b, v in times.items()}
    a, v0, b = (statistics.median(times[x]) for x in buckets)
    out["ratio_b_over_a"], out["ratio_b_over_v0"] = b / a, b / v0
    out["paired_ratio_b_over_a"] = [y / x for x, y in zip(times["list-a"], times["list-b"], strict=True)]
    return out


def put_cost(cluster: Cluster, gen: LoadGenerator, ep: Endpoint, args: argparse.Namespace) -> dict[str, Any]:
    s3 = cluster.s3()
    s3.create_bucket(Bucket="put-u")
    s3.create_bucket(Bucket="put-v")
    s3.put_bucket_versioning(Bucket="put-v", VersioningConfiguration={"Status": "Enabled"})
    keys = [f"p/{i:03d}" for i in range(64)]
    sizes = [int(x) for x in args.sizes.split(",")]
    res: dict[str, Any] = {}
    for size in sizes:  # untimed first write of every key: every timed PUT is an overwrite
        for b in ("put-u", "put-v"):
            gen.run(ep, "PUT", b, keys, 8, body_size=size, max_seconds=120)
    for r in range(args.rounds):
        for size in sizes:
            for c in (1, 8):
                for b in ("put-u", "put-v") if r % 2 == 0 else ("put-v", "put-u"):
                    got = gen.run(ep, "PUT", b, keys, c, args.seconds, body_size=size, max_seconds=60)
                    case = res.setdefault(f"{size // 1024}KiB_c{c}", {"put-u": [], "put-v": [], "errors": 0})
                    case[b].append(got["ops_per_s"])
                    case["errors"] += got["errors"]
                    say(f"  round {r + 1} {size // 1024} KiB c{c} {b}: {got['ops_per_s']:.1f} ops/s"
                        + (f" ({got['errors']} errors: {got['first_error']})" if got["errors"] else ""))
    for case in res.values():
        u, v = case.pop("put-u"), case.pop("put-v")
        case["unversioned"], case["versioned"] = summary(u), summary(v)
        case["ratio_v_over_u"] = statistics.median(v) / statistics.median(u)
        case["paired_ratio_v_over_u"] = [y / x for x, y in zip(u, v, strict=True)]
    pages = s3.get_paginator("list_object_versions").paginate(Bucket="put-v", PaginationConfig={"MaxItems": 500_000})
    res["noncurrent_versions_in_put-v"] = sum(not v["IsLatest"] for p in pages for v in p.get("Versions", []))
    return res


def table(data: dict[str, Any]) -> str:
    li, pu = data["listing"], data["put"]
    n, k = data["fill"]["keys"], data["meta"]["noncurrent"]
    lines = ["| case | median | ± spread | ratio |", "|---|---|---|---|"]
    names = {"list-a": f"list {n:,} keys, unversioned bucket", "list-v0": f"list {n:,} keys, versioned, no noncurrent",
             "list-b": f"list {n:,} keys, versioned, {k} noncurrent each ({n * k:,})"}
    for b, label in names.items():
        ratio = {"list-b": f"B/A {li['ratio_b_over_a']:.2f}x, B/V0 {li['ratio_b_over_v0']:.2f}x"}.get(b, "")
        lines.append(f"| {label} | {li[b]['median'] * 1000:.0f} ms | {li[b]['spread'] * 1000:.0f} ms | {ratio} |")
    for name, case in pu.items():
        if not isinstance(case, dict):
            continue
        for kind in ("unversioned", "versioned"):
            s = case[kind]
            ratio = f"V/U {case['ratio_v_over_u']:.2f}x" if kind == "versioned" else ""
            lines.append(f"| PUT {name.replace('_c', ' c')}, {kind} | {s['median']:.1f} ops/s | {s['spread']:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m bench.versioning", description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--noncurrent", type=int, default=10, help="noncurrent versions per key in list-b")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the PUT cases")
    ap.add_argument("--list-walks", type=int, default=15, help="timed walks of each listing bucket")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each PUT measurement")
    ap.add_argument("--sizes", default=f"4096,{MiB}", help="PUT body sizes, comma separated")
    ap.add_argument("--fill-budget", type=float, default=900.0, help="seconds for all the listing buckets' PUTs at the sampled rate")
    ap.add_argument("--list-budget", type=float, default=300.0)
    ap.add_argument("--out", default="bench-out-versioning")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join(["python -m bench.versioning", *argv]),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "keys_requested": args.keys,
            "noncurrent": args.noncurrent, "rounds": args.rounds, "seconds": args.seconds,
            "loadavg_before": os.getloadavg()}
    data: dict[str, Any] = {"meta": meta, "machine": machine.info()}
    started = time.monotonic()
    # gc_grace an hour: no chunk of an overwritten unversioned object is deleted during the run
    with tempfile.TemporaryDirectory(prefix="cairn-bench-ver-") as root, OtherLoad() as other, \
            Cluster(root, frontends=2, gc_grace=3600.0) as cluster, LoadGenerator(2) as gen:
        eps = [Endpoint(u, ACCESS_KEY, SECRET_KEY) for u in cluster.endpoints]
        say(f"cluster up: {cluster.endpoints}")
        data["fill"] = populate(cluster, gen, eps, args)
        meta["keys"] = args.keys  # fewer than --keys when the fill would not fit in --fill-budget
        say("listing walks")
        data["listing"] = listing(eps[0], args)
        say("PUT cost")
        data["put"] = put_cost(cluster, gen, eps[0], args)
        data["meta"]["other_cores"] = other.cores  # sampled so far; the sampler stops on exit
    data["meta"]["loadavg_after"] = os.getloadavg()
    data["meta"]["wall_seconds"] = round(time.monotonic() - started)
    data["meta"]["other_cores"] = other.cores
    (out / "versioning.json").write_text(json.dumps(data, indent=1))
    text = table(data)
    print(text)
    print(f"\nload average before {data['meta']['loadavg_before']}, after {data['meta']['loadavg_after']}; "
          f"other processes used {other.cores} cores on average; {data['meta']['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
