"""What the durable Raft journal costs: commit latency and throughput of the metadata
group with the journal synced (the default) and without (unsafe, for comparison).

    python -m bench.raft_commit [--writes 500] [--inflight 32]

Starts three raftmeta processes on this machine each time; a client writes through
the RPC (as frontends do) one at a time, then with --inflight writes in flight.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import trio

from chaos.cluster import SECRET, Cluster
from raftmeta.client import MetaClient


async def measure(rpc: list[str], writes: int, inflight: int) -> tuple[float, float, float]:
    client = MetaClient(rpc, SECRET)
    while True:  # wait for a leader
        try:
            await client.write({"op": "create_bucket", "bucket": "bench", "owner": "b", "ts": 0.0}, deadline=2)
            break
        except Exception:
            await trio.sleep(0.2)
    lat = []
    for i in range(writes):
        t = time.perf_counter()
        await client.write({"op": "node_heartbeat", "node_id": f"n{i % 7}", "addr": "x:1", "capacity": 1,
                            "used": 0, "ts": float(i)})
        lat.append(time.perf_counter() - t)
    lat.sort()
    done = 0

    async def worker(n: int) -> None:
        nonlocal done
        own = MetaClient(rpc, SECRET)
        for i in range(writes // inflight):
            await own.write({"op": "node_heartbeat", "node_id": f"w{n}", "addr": "x:1", "capacity": 1,
                             "used": i, "ts": float(i)})
            done += 1

    t = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for n in range(inflight):
            nursery.start_soon(worker, n)
    rate = done / (time.perf_counter() - t)
    return statistics.median(lat) * 1000, lat[int(0.99 * (len(lat) - 1))] * 1000, rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=500)
    ap.add_argument("--inflight", type=int, default=32)
    args = ap.parse_args()
    for label, flags in (("journal synced (default)", []), ("journal not synced (unsafe)", ["--unsafe-no-journal-sync"])):
        with tempfile.TemporaryDirectory() as root:
            cluster = Cluster(root, blobs=0, frontends=0, raftmeta_flags=flags)
            cluster.start()
            try:
                p50, p99, rate = trio.run(measure, cluster.rpc, args.writes, args.inflight)
            finally:
                cluster.stop()
        print(f"{label:28s} commit p50 {p50:.2f} ms  p99 {p99:.2f} ms  |  {args.inflight} in flight: {rate:.0f} commits/s")


if __name__ == "__main__":
    main()
