"""Cairn only: how long a failure costs.

- Leader failover: SIGKILL the Raft leader, then PUT a small object until one succeeds.
- Re-replication: on a 4-blob-node cluster whose raftmeta declares a node dead after 8 s
  and repairs every second, write the "1 GiB" data set, SIGKILL one blob node and wait
  until no chunk has fewer than 3 replicas on the surviving nodes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.peers import Cairn
from bench.report import TargetResult
from bench.suites import MiB, Plan, boto, make_file, size_word
from core.nodes import BlobNode

DEAD_AFTER = 8.0  # blob nodes heartbeat every 3 s; less than ~2 beats makes live nodes look dead
REPAIR_FLAGS = ["--dead-after", str(DEAD_AFTER), "--repair-interval", "1", "--repair-rate", "10000"]


def leader_failover(target: Cairn, res: TargetResult, runs: int) -> None:
    cluster = target.cluster
    assert cluster is not None
    fig = res.figure("failover_leader_s", "leader SIGKILL -> next PUT", "s", "lower", "failover")
    s3 = cluster.s3(0, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=15)
    s3.create_bucket(Bucket="bench-failover")
    for run in range(runs):
        leader = _wait_leader(cluster, 30)
        if leader is None:
            fig.error = "no Raft leader within 30 s"
            return
        s3.put_object(Bucket="bench-failover", Key="warm", Body=b"x")
        t = time.perf_counter()
        cluster.kill(leader)
        done = None
        for attempt in range(2000):
            if time.perf_counter() - t > 60:
                break
            try:
                s3.put_object(Bucket="bench-failover", Key=f"after/{run}/{attempt}", Body=b"x" * 4096)
                done = time.perf_counter() - t
                break
            except Exception:
                time.sleep(0.02)
        cluster.start(leader)
        cluster.wait_healthy(60)
        if done is None:
            fig.error = "no successful PUT within 60 s of the leader's death"
            return
        fig.runs.append(done)
        fig.extra.setdefault("killed", []).append(leader)
        time.sleep(2)  # let the restarted node catch up before the next kill


def _wait_leader(cluster: Any, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = cluster.leader()
        if leader:
            return leader
        time.sleep(0.2)
    return None


def _under_replicated(cluster: Any, dead_addr: str, want: int = 3) -> tuple[int, float | None]:
    """(chunks with fewer than ``want`` replicas on live nodes other than ``dead_addr``,
    the dead node's last heartbeat). Like Cluster.under_replicated, but the dead node is
    named rather than guessed from its heartbeat's age."""
    import trio

    from chaos.cluster import SECRET, under_replicated_chunks
    from raftmeta.client import MetaClient

    async def ask() -> tuple[int, float | None]:
        client = MetaClient(cluster.rpc, SECRET)
        nodes = (await client.read({"q": "nodes"}))["nodes"]
        now = time.time()
        alive = [n["node_id"] for n in nodes if n["addr"] != dead_addr and BlobNode.from_record(n).is_up(now)]
        last = next((n["heartbeat"] for n in nodes if n["addr"] == dead_addr), None)
        count = len(await under_replicated_chunks(client, alive, want))
        return count, last

    return trio.run(ask)


def rereplication(root: Path, res: TargetResult, plan: Plan, files: Path) -> None:
    """One run: kill a blob node holding about 3/4 of the data, time the repair."""
    secs = res.figure("rerepl_s", f"blob node SIGKILL -> {size_word(plan.huge)} fully re-replicated", "s", "lower",
                      "failover")
    rate = res.figure("rerepl_MBps", "re-replication rate after the node is declared dead", "MB/s", "higher",
                      "failover")
    target = Cairn(raftmeta_flags=REPAIR_FLAGS, blobs=4)
    try:
        ep = target.start(root)
        cluster = target.cluster
        s3 = boto(ep)
        s3.create_bucket(Bucket="bench-repair")
        src = make_file(files / "large.bin", plan.large)
        count = max(1, plan.huge // plan.large)

        def put(i: int) -> None:
            with open(src, "rb") as f:
                s3.put_object(Bucket="bench-repair", Key=f"obj/{i}", Body=f)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(put, range(count)))
        victim = "blobnode1"
        addr = cluster.procs[victim].args[cluster.procs[victim].args.index("--listen") + 1]
        for _ in range(240):  # W=2: let stragglers finish their third copy first
            if _under_replicated(cluster, "none")[0] == 0:
                break
            time.sleep(0.5)
        lost = sum(p.stat().st_size - 64 for p in (cluster.root / victim / "chunks").rglob("*") if p.is_file())
        t0 = time.time()
        cluster.kill(victim)
        pending, last = _under_replicated(cluster, addr)
        done = None
        while time.time() - t0 < 900:
            pending, last = _under_replicated(cluster, addr)
            if pending == 0 and time.time() - t0 > DEAD_AFTER:
                done = time.time()
                break
            time.sleep(0.5)
        if done is None:
            secs.error = rate.error = f"{pending} chunks still under-replicated after 900 s"
            return
        declared = (last or t0) + DEAD_AFTER
        secs.runs.append(done - t0)
        secs.extra = {"replica_bytes_recreated": lost, "dead_after_s": DEAD_AFTER, "objects": count}
        rate.runs.append(lost / max(done - declared, 0.5) / 1e6)
        rate.extra = {"seconds_after_declared_dead": done - declared, "replica_MiB": lost / MiB}
    except Exception as exc:
        secs.error = rate.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        target.stop()
