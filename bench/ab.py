"""A/B of Cairn configurations on 4 KiB operations, with the bench's light load generator.

    python -m bench.ab [--seconds 4] [--runs 3] [--only default] [--as-user]

Each variant is a fresh cluster (3 raftmeta, 3 blob nodes, 1 frontend) started with the
variant's frontend flags; it reports 4 KiB PUT p50 at concurrency 1 and PUT/GET ops/s at
concurrency 16, the median of ``--runs``. Used to record what each change gave in
BENCHMARKS.md: inline small objects (``--inline-max 0`` turns them off) and frontend
worker processes (``--workers``). ``--as-user`` signs with a user's key (its own bucket)
instead of root's: the path whose authorization reads, or rides in the commit, per request.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import boto3

from bench.load import Endpoint, LoadGenerator
from chaos.cluster import ACCESS_KEY, SECRET_KEY, Cluster

VARIANTS = {
    "no inline (--inline-max 0)": ["--inline-max", "0"],
    "default (inline <= 16 KiB, 1 worker)": [],
    "2 frontend workers": ["--workers", "2"],
}


def _user_endpoint(cluster: Cluster) -> Endpoint:
    """A user's key, and its bucket ``abtest``."""
    status, _ = cluster.admin("POST", "users", body={"name": "bench"})
    assert status == 201, status
    status, key = cluster.admin("POST", "users/bench/keys")
    assert status == 201, (status, key)
    ep = Endpoint(cluster.endpoints[0], key["access_key"], key["secret_key"])
    boto3.client("s3", endpoint_url=ep.url, aws_access_key_id=ep.access_key, aws_secret_access_key=ep.secret_key,
                 region_name="us-east-1").create_bucket(Bucket="abtest")
    return ep


def measure(flags: list[str], gen: LoadGenerator, seconds: float, as_user: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="cairn-ab-") as root, \
            Cluster(root, frontends=1, frontend_flags=flags) as cluster:
        if as_user:
            ep = _user_endpoint(cluster)
        else:
            cluster.s3(0).create_bucket(Bucket="abtest")
            ep = Endpoint(cluster.endpoints[0], ACCESS_KEY, SECRET_KEY)
        keys = [f"k{i:05d}" for i in range(2000)]
        gen.run(ep, "PUT", "abtest", keys, 16)  # the GET pool, and a warm-up
        one = gen.run(ep, "PUT", "abtest", ["c1/"], 1, duration=seconds, unique=True)
        put = gen.run(ep, "PUT", "abtest", ["c16/"], 16, duration=seconds, unique=True)
        get = gen.run(ep, "GET", "abtest", keys, 16, duration=seconds)
        return {"put_c1_p50_ms": 1000 * statistics.median(one["latencies"]),
                "put_c16_ops": put["ops_per_s"], "get_c16_ops": get["ops_per_s"],
                "errors": one["errors"] + put["errors"] + get["errors"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="run only the variants whose name contains this")
    ap.add_argument("--as-user", action="store_true", help="sign with a user's key, not root's")
    args = ap.parse_args()
    print("| variant | 4 KiB PUT c1 p50 (ms) | 4 KiB PUT c16 (ops/s) | 4 KiB GET c16 (ops/s) | errors |")
    print("|---|---|---|---|---|")
    with LoadGenerator(2) as gen:
        for name, flags in VARIANTS.items():
            if args.only not in name:
                continue
            runs = [measure(flags, gen, args.seconds, args.as_user) for _ in range(args.runs)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"| {name} | {med['put_c1_p50_ms']:.2f} | {med['put_c16_ops']:.0f} | {med['get_c16_ops']:.0f} "
                  f"| {sum(r['errors'] for r in runs)} |", flush=True)


if __name__ == "__main__":
    main()
