"""What the Raft commit path costs: commit latency and throughput of the metadata group
with commit batching off (every command its own entry) and on (``--commit-in-flight``
1, 2, 4 batch entries in flight), and with the journal not synced (unsafe, for
comparison).

    python -m bench.raft_commit [--writes 2000] [--inflight 32,64] [--variants off,1,2,4,unsafe]

Starts three raftmeta processes on this machine for each variant; clients write through
the RPC (as frontends do) one at a time, then with each --inflight count of writes in
flight. Commands are 4 KiB inline object PUTs (as a frontend's small PUT commits them).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
import uuid
from typing import Any

import trio

from chaos.cluster import SECRET, Cluster
from raftmeta.client import MetaClient

BODY = b"x" * 4096


def put(key: str) -> dict[str, Any]:
    """A 4 KiB object committed inline, as ``frontend.writes`` writes it."""
    sha = hashlib.sha256(BODY).hexdigest()
    obj = {"size": len(BODY), "etag": hashlib.md5(BODY).hexdigest(), "sha256": sha, "content_type": "",
           "created": time.time(), "meta": {}, "chunks": [[uuid.uuid4().hex, len(BODY), sha, [], BODY]]}
    return {"op": "put_object", "bucket": "bench", "key": key, "obj": obj, "ts": time.time()}


async def ready(client: MetaClient, rpc: list[str], batching: bool) -> None:
    """Wait for a leader, the bucket, and (batching on) every member's recorded level."""
    with trio.fail_after(60):
        while True:
            try:
                await client.write({"op": "create_bucket", "bucket": "bench", "owner": "b", "ts": 0.0}, deadline=2)
                break
            except Exception:
                await trio.sleep(0.2)
        while batching and not all([(await client.status(a)).get("batches", {}).get("allowed") for a in rpc]):
            await trio.sleep(0.2)


async def measure(rpc: list[str], writes: int, inflights: list[int], batching: bool) -> dict[str, Any]:
    client = MetaClient(rpc, SECRET)
    await ready(client, rpc, batching)
    lat = []
    for i in range(min(writes, 1000)):
        t = time.perf_counter()
        await client.write(put(f"c1/{i}"))
        lat.append(time.perf_counter() - t)
    lat.sort()
    out: dict[str, Any] = {"p50": statistics.median(lat) * 1000, "p99": lat[int(0.99 * (len(lat) - 1))] * 1000}
    for inflight in inflights:
        done = 0
        clat: list[float] = []

        async def worker(n: int, inflight: int = inflight, clat: list[float] = clat) -> None:
            nonlocal done
            own = MetaClient(rpc, SECRET)
            for i in range(writes // inflight):
                t = time.perf_counter()
                await own.write(put(f"c{inflight}/{n}/{i}"))
                clat.append(time.perf_counter() - t)
                done += 1

        t = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for n in range(inflight):
                nursery.start_soon(worker, n)
        out[f"rate{inflight}"] = done / (time.perf_counter() - t)
        clat.sort()
        out[f"p50_{inflight}"] = statistics.median(clat) * 1000
    statuses = [await client.status(a) for a in rpc]
    out["batches"] = next((s["batches"] for s in statuses if s.get("is_leader")), {})
    return out


VARIANTS = {
    "off": ("batching off", ["--commit-in-flight", "0"]),
    "1": ("batching, 1 entry in flight", ["--commit-in-flight", "1"]),
    "2": ("batching, 2 in flight (default)", ["--commit-in-flight", "2"]),
    "4": ("batching, 4 in flight", ["--commit-in-flight", "4"]),
    "unsafe": ("batching off, journal not synced", ["--commit-in-flight", "0", "--unsafe-no-journal-sync"]),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=2000)
    ap.add_argument("--inflight", default="32,64")
    ap.add_argument("--variants", default="off,1,2,4,unsafe")
    args = ap.parse_args()
    inflights = [int(n) for n in args.inflight.split(",")]
    print("| variant | c1 p50 ms | c1 p99 ms | " + " | ".join(f"c{n} commits/s | c{n} p50 ms" for n in inflights)
          + " | commands per batch entry |")
    print("|---" * (4 + 2 * len(inflights)) + "|")
    for name in args.variants.split(","):
        label, flags = VARIANTS[name]
        with tempfile.TemporaryDirectory() as root:
            cluster = Cluster(root, blobs=0, frontends=0, raftmeta_flags=flags)
            cluster.start()
            try:
                r = trio.run(measure, cluster.rpc, args.writes, inflights, name not in ("off", "unsafe"))
            finally:
                cluster.stop()
        b = r["batches"]
        per = f"{b['commands'] / b['entries']:.1f} (largest {b['largest']})" if b.get("entries") else "-"
        cells = " | ".join(f"{r[f'rate{n}']:,.0f} | {r[f'p50_{n}']:.2f}" for n in inflights)
        print(f"| {label} | {r['p50']:.2f} | {r['p99']:.2f} | {cells} | {per} |", flush=True)


if __name__ == "__main__":
    main()
