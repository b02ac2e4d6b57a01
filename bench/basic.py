"""Single-stream PUT/GET throughput and small-object latency against a fresh local cluster.

    python -m bench.basic [--size-mib 256] [--runs 3] [--small 200] [--multipart-mib 1024]

Starts a real cluster (3 raftmeta, 3 blob nodes, 1 frontend; replication 3, write
quorum 2, fsync on every chunk and Raft entry) in a temp dir, drives it with boto3 with
default settings, prints the figures and the frontend's peak RSS, then stops it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import tempfile
import time

import psutil

from bench.suites import Monitor
from chaos.cluster import Cluster


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small", type=int, default=200, help="4 KiB PUTs and GETs for the latency figures")
    ap.add_argument("--multipart-mib", type=int, default=1024, help="size of the boto3 upload_file run (0: skip)")
    args = ap.parse_args()
    size = args.size_mib * 1024 * 1024
    print(f"machine: {platform.node()} {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as root, Cluster(root, frontends=1) as cluster:
        s3 = cluster.s3()
        s3.create_bucket(Bucket="bench")
        src = os.path.join(root, "src.bin")
        with open(src, "wb") as f:
            for _ in range(size // (1 << 20)):
                f.write(os.urandom(1 << 20))
        frontend = Monitor({"frontend": cluster.procs["frontend1"].pid})
        put, get = [], []
        with frontend:
            for _ in range(args.runs):
                with open(src, "rb") as f:
                    t = time.perf_counter()
                    s3.put_object(Bucket="bench", Key="big", Body=f)
                    put.append(size / (time.perf_counter() - t) / 1e6)
                t = time.perf_counter()
                body = s3.get_object(Bucket="bench", Key="big")["Body"]
                h = hashlib.md5()
                while block := body.read(1 << 20):
                    h.update(block)
                get.append(size / (time.perf_counter() - t) / 1e6)
        print(f"PUT {args.size_mib} MiB single stream: median {statistics.median(put):.0f} MB/s  runs {[round(x) for x in put]}")
        print(f"GET {args.size_mib} MiB single stream: median {statistics.median(get):.0f} MB/s  runs {[round(x) for x in get]}"
              " (client also MD5s the body)")
        print(f"frontend peak RSS during the large transfers: {frontend.peak['frontend'] / 2**20:.0f} MiB")
        if args.multipart_mib:
            mp = os.path.join(root, "multipart.bin")
            with open(mp, "wb") as f:
                block = os.urandom(64 << 20)
                for i in range(args.multipart_mib // 64):
                    f.write(i.to_bytes(8, "big") + block[8:])
            frontend = Monitor({"frontend": cluster.procs["frontend1"].pid})
            with frontend:
                t = time.perf_counter()
                s3.upload_file(mp, "bench", "multipart")  # boto3's default TransferConfig
                took = time.perf_counter() - t
            print(f"multipart upload_file {args.multipart_mib} MiB, boto3 defaults (8 MiB parts, 10 threads): "
                  f"{args.multipart_mib * 2**20 / took / 1e6:.0f} MB/s, frontend peak RSS {frontend.peak['frontend'] / 2**20:.0f} MiB")
            os.unlink(mp)
        small = os.urandom(4096)
        lat_put, lat_get = [], []
        for i in range(args.small):
            t = time.perf_counter()
            s3.put_object(Bucket="bench", Key=f"small/{i}", Body=small)
            lat_put.append(time.perf_counter() - t)
        for i in range(args.small):
            t = time.perf_counter()
            s3.get_object(Bucket="bench", Key=f"small/{i}")["Body"].read()
            lat_get.append(time.perf_counter() - t)
        q = lambda xs, p: sorted(xs)[int(p * (len(xs) - 1))] * 1000  # noqa: E731
        print(f"4 KiB PUT latency: p50 {q(lat_put, .5):.1f} ms  p99 {q(lat_put, .99):.1f} ms  (n={args.small}, one client thread)")
        print(f"4 KiB GET latency: p50 {q(lat_get, .5):.1f} ms  p99 {q(lat_get, .99):.1f} ms")


if __name__ == "__main__":
    main()
