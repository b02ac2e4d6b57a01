"""Tests of the leader's chores (``raftmeta.chores``) against a real ``MetaState``: a fake
``Leader`` applies proposals to it directly and records what a blob-node client was asked
to do, so each pass can be checked without Raft or sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from core.nodes import UNAVAILABLE_AFTER
from raftmeta import state as state_module
from raftmeta.chores import ChoreRunner, Leader
from raftmeta.chores.expiry import UploadExpiry
from raftmeta.chores.gc import GarbageCollector
from raftmeta.chores.orphans import OrphanSweep
from raftmeta.chores.repair import Repair
from tests.unit.metastate import Replica, chunk, create, obj, put, replica

DEAD_AFTER = 600.0


class FakeBlobs:
    """What the chores ask blob nodes to do; every node holds ``files`` (id → age)."""

    def __init__(self, files: dict[str, float] | None = None) -> None:
        self.files = files or {}
        self.pulls: list[tuple[str, str, str]] = []  # (target addr, chunk, source addr)
        self.deletes: list[tuple[str, list[str]]] = []
        self.listed: list[str] = []

    async def pull(self, addr: str, chunk_id: str, sha256: str, source: str) -> None:
        self.pulls.append((addr, chunk_id, source))

    async def delete(self, addr: str, ids: list[str]) -> int:
        self.deletes.append((addr, list(ids)))
        return len(ids)

    async def list(self, addr: str, after: str, limit: int, older_than: float | None = None) -> tuple[list[str], bool]:
        self.listed.append(addr)
        ids = sorted(i for i, mtime in self.files.items() if i > after and (older_than is None or mtime < older_than))
        return ids[:limit], len(ids) > limit


class Harness:
    def __init__(self, rep: Replica, leading: bool = True) -> None:
        self.rep = rep
        self.leading = leading
        self.proposed: list[dict[str, Any]] = []
        self.query_threads: set[int] = set()
        self.blobs = FakeBlobs()
        self.leader = Leader(lambda: self.leading, self.propose, self.query_here, self.blobs)  # type: ignore[arg-type]

    async def propose(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.proposed.append(cmd)
        return self.rep.apply(cmd)

    def query_here(self, q: dict[str, Any]) -> dict[str, Any]:
        self.query_threads.add(threading.get_ident())
        return self.rep.state.query(q)

    def heartbeat(self, node_id: str, age: float, capacity: int = 10**9, used: int = 0) -> None:
        assert self.rep.apply({"op": "node_heartbeat", "node_id": node_id, "addr": f"addr-{node_id}",
                               "capacity": capacity, "used": used, "ts": time.time() - age})["ok"]


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


def runner(h: Harness) -> ChoreRunner:
    return ChoreRunner(h.leader, [
        UploadExpiry(h.leader, 60.0, 86400.0),
        Repair(h.leader, 10.0, 3, DEAD_AFTER, 1e6),
        OrphanSweep(h.leader, 600.0, 3600.0),
        GarbageCollector(h.leader, 1.0, 0.0),
    ])


async def test_status_keeps_the_chore_reply_shape(rep: Replica) -> None:
    status = await runner(Harness(rep)).status()
    assert list(status) == ["uploads", "expired_waiting", "expiry", "repair", "orphans", "gc"]
    assert set(status["expiry"]) == {"ttl", "interval", "last_run", "last_aborted", "aborted_total"}
    assert set(status["orphans"]) == {"grace", "interval", "last_run", "deleted_total", "missing_total"}
    assert set(status["repair"]) == {
        "replicas", "dead_after", "interval", "rate_mb_s", "last_run", "last_under_replicated", "repaired_total",
        "bytes_total", "dead_nodes", "backlog_chunks", "backlog_bytes", "pass_bytes", "pass_started",
        "rate_bytes_s", "eta_s"}
    assert status["gc"] == {"grace": 0.0, "queued": 0, "deleted_total": 0}
    assert status["uploads"] == 0 and status["expired_waiting"] == 0


async def test_scans_run_in_a_worker_thread(rep: Replica) -> None:
    h = Harness(rep)
    await runner(h).status()
    assert h.query_threads and threading.get_ident() not in h.query_threads


async def test_a_follower_does_nothing(rep: Replica) -> None:
    h = Harness(rep, leading=False)
    h.heartbeat("n1", 0)
    assert rep.apply(create())["ok"]
    assert rep.apply(put("k", obj([chunk("c1", ("n1",))])))["ok"]
    chores = runner(h)
    for name in ("expire_uploads", "repair", "orphans", "gc"):
        await chores.run_now(name)
    assert h.proposed == [] and h.blobs.pulls == [] and h.blobs.deletes == [] and h.blobs.listed == []


async def test_repair_counts_targets_and_sources_by_core_nodes_liveness(rep: Replica) -> None:
    h = Harness(rep)
    h.heartbeat("up1", 0)
    h.heartbeat("up2", 0, used=10**8)  # less room than spare: the second choice
    h.heartbeat("spare", 0)
    h.heartbeat("silent", UNAVAILABLE_AFTER + 30)  # unavailable: its copies count, it takes no new ones
    h.heartbeat("gone", DEAD_AFTER + 1)  # dead: its copies are re-created
    h.heartbeat("draining", 0)
    assert rep.apply({"op": "set_node_state", "node_id": "draining", "state": "draining"})["ok"]
    assert rep.apply(create())["ok"]
    assert rep.apply(put("a", obj([chunk("ca", ("up1", "gone"))])))["ok"]  # one healthy copy
    assert rep.apply(put("b", obj([chunk("cb", ("silent", "up1", "up2"))])))["ok"]  # fully replicated
    assert rep.apply(put("d", obj([chunk("cd", ("draining",))])))["ok"]  # only a draining copy
    repair = Repair(h.leader, 10.0, 3, DEAD_AFTER, 1e6)
    assert await repair.run_pass() == 2
    targets = {c: sorted(t for t, cc, _s in h.blobs.pulls if cc == c) for c in ("ca", "cb", "cd")}
    assert targets == {"ca": ["addr-spare", "addr-up2"], "cb": [], "cd": ["addr-spare", "addr-up1", "addr-up2"]}
    assert {s for _t, c, s in h.blobs.pulls if c == "cd"} == {"addr-draining"}
    manifests = {k: rep.q(q="object", bucket="b", key=k) for k in ("a", "d")}
    assert sorted(manifests["a"]["obj"]["chunks"][0][3]) == ["spare", "up1", "up2"]
    assert sorted(manifests["d"]["obj"]["chunks"][0][3]) == ["spare", "up1", "up2"]  # the draining copy left
    status = (await repair.status())["repair"]
    assert status["dead_nodes"] == ["gone"]
    assert status["repaired_total"] == 2 and status["backlog_chunks"] == 2 and status["bytes_total"] == 500


async def test_orphan_sweep_skips_nodes_that_are_not_up(rep: Replica) -> None:
    h = Harness(rep)
    h.heartbeat("n1", 0)
    h.heartbeat("n2", UNAVAILABLE_AFTER + 1)
    assert rep.apply(create())["ok"]
    assert rep.apply(put("k", obj([chunk("kept", ("n1", "n2"))])))["ok"]
    old = time.time() - 7200
    h.blobs.files = {"kept": old, "orphan": old, "young": time.time()}
    sweep = OrphanSweep(h.leader, 600.0, 3600.0)
    assert await sweep.run_pass() == 1
    # listed twice (every file, for replicas gone; old files, for orphans), only the node that is up
    assert h.blobs.listed == ["addr-n1", "addr-n1"] and h.blobs.deletes == [("addr-n1", ["orphan"])]
    assert (await sweep.status())["orphans"]["deleted_total"] == 1
    assert (await sweep.status())["orphans"]["missing_total"] == 0


async def test_orphan_sweep_reports_replicas_missing_from_disk(rep: Replica) -> None:
    h = Harness(rep)
    h.heartbeat("n1", 0)
    h.heartbeat("n2", 0)
    assert rep.apply(create())["ok"]
    assert rep.apply(put("k", obj([chunk("here", ("n1", "n2")), chunk("gone", ("n1", "n2"))])))["ok"]
    h.blobs.files = {"here": time.time() - 7200}  # both "nodes" show the same files: "gone" is on neither
    sweep = OrphanSweep(h.leader, 600.0, 3600.0)
    await sweep.run_pass()
    lost = [c for c in h.proposed if c["op"] == "replicas_lost"]
    assert [(c["node"], c["chunks"]) for c in lost] == [("n1", ["gone"]), ("n2", ["gone"])]
    assert (await sweep.status())["orphans"]["missing_total"] == 2
    # the last replica is never dropped: the manifest still names one node, repair has a source
    replicas = rep.q(q="object", bucket="b", key="k")["obj"]["chunks"][1][3]
    assert len(replicas) == 1


async def test_gc_deletes_queued_chunks_and_records_it(rep: Replica) -> None:
    h = Harness(rep)
    h.heartbeat("n1", 0)
    assert rep.apply(create())["ok"]
    assert rep.apply(put("k", obj([chunk("c1", ("n1",))])))["ok"]
    assert rep.apply({"op": "delete_object", "bucket": "b", "key": "k", "ts": 3.0})["ok"]
    gc = GarbageCollector(h.leader, 1.0, 0.0)
    assert await gc.run_pass() == 1
    assert h.blobs.deletes == [("addr-n1", ["c1"])] and gc.deleted == 1
    assert [c["op"] for c in h.proposed] == ["gc_done"]
    assert (await gc.status())["gc"] == {"grace": 0.0, "queued": 0, "deleted_total": 1}


async def test_runner_runs_each_chore_on_its_interval_on_the_leader_only(rep: Replica) -> None:
    h = Harness(rep, leading=False)
    passes: list[str] = []

    class Counting(GarbageCollector):
        async def run_pass(self) -> int:
            passes.append(self.name)
            return 0

    chores = ChoreRunner(h.leader, [Counting(h.leader, 0.01, 0.0)])
    with trio.move_on_after(0.1):
        await chores.run()
    assert passes == []
    h.leading = True
    with trio.move_on_after(0.1):
        await chores.run({"gc"})
    assert passes and set(passes) == {"gc"}
    assert "gc" in chores and "nope" not in chores


def test_a_name_declared_by_two_modules_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from raftmeta.sm import buckets

    monkeypatch.setattr(state_module, "MODULES", (*state_module.MODULES, buckets))
    with pytest.raises(RuntimeError, match="declared twice"):
        state_module._register("COMMANDS")
