"""An in-process three-replica raftmeta cluster for the integration tests
(``tests/integration/test_raftmeta*.py``).

Each replica is a ``MetaState`` (SQLite under tmp_path), a ``MetaNode`` (PySyncObj with its
own tick thread, on a free loopback port) and a ``MetaServer`` whose ``serve_conn``,
``_barrier_loop`` and the GC chore (``chores.run``) run in the test's nursery. Clients talk
to the servers through ``raftmeta.client.MetaClient`` over real sockets.

Every test destroys its nodes (and joins their tick threads) before it returns, even when
it fails or times out, so that no PySyncObj thread outlives the trio run that its
callbacks post to.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from core import wire
from raftmeta.client import MetaClient
from raftmeta.node import MetaNode
from raftmeta.server import MetaServer
from raftmeta.state import MetaState

SECRET = "test-cluster-secret"
GC_GRACE = 0.5
GC_INTERVAL = 0.2


def free_ports(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Replica:
    name: str
    data_dir: Path
    raft_addr: str
    peers: list[str]
    compaction_entries: int
    rpc_port: int = 0
    state: MetaState | None = None
    node: MetaNode | None = None
    server: MetaServer | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event = field(default_factory=trio.Event)
    crash: BaseException | None = None

    @property
    def rpc_addr(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"

    @property
    def running(self) -> bool:
        return self.node is not None

    async def start(self, nursery: trio.Nursery) -> None:
        """Start (or restart, on the same data dir and ports) this replica."""
        assert self.node is None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state = MetaState(str(self.data_dir / "meta.sqlite"))
        self.node = MetaNode(
            self.raft_addr, self.peers, str(self.data_dir), SECRET, self.state,
            compaction_entries=self.compaction_entries,
        )
        self.server = MetaServer(self.node, self.state, SECRET, gc_grace=GC_GRACE, gc_interval=GC_INTERVAL)
        self.stopped = trio.Event()
        self.crash = None
        listeners = await nursery.start(self._run)
        self.rpc_port = listeners[0].socket.getsockname()[1]

    async def _run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        assert self.server is not None
        try:
            with trio.CancelScope() as self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.server._barrier_loop)
                    nursery.start_soon(self.server.chores.run, {"gc"})
                    listeners = await nursery.start(
                        partial(trio.serve_tcp, self.server.serve_conn, self.rpc_port, host="127.0.0.1")
                    )
                    task_status.started(listeners)
        except Exception as exc:  # something escaped a handler: this RPC server is dead
            self.crash = exc
        finally:
            self.stopped.set()

    async def stop(self) -> None:
        """Close the RPC server, destroy the Raft node (joining its thread), close SQLite."""
        if self.scope is not None:
            self.scope.cancel()
        with trio.CancelScope(shield=True):
            if self.scope is not None:
                await self.stopped.wait()
            self.kill_node()

    def kill_node(self) -> None:
        node, self.node = self.node, None
        if node is not None:
            node.destroy()
            thread = node._SyncObj__thread
            if thread is not None:
                thread.join(10)
                assert not thread.is_alive(), f"{self.name}: PySyncObj thread did not stop"
        if self.state is not None:
            self.state.close()
            self.state = None


@dataclass
class Cluster:
    replicas: list[Replica]
    nursery: trio.Nursery

    @property
    def addrs(self) -> list[str]:
        return [r.rpc_addr for r in self.replicas]

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.running]

    def client(self, *replicas: Replica) -> MetaClient:
        return MetaClient([r.rpc_addr for r in replicas or self.live()], SECRET)

    async def statuses(self, replicas: list[Replica] | None = None) -> list[dict[str, Any]]:
        out = []
        for r in replicas or self.live():
            out.append(await MetaClient([r.rpc_addr], SECRET).status(r.rpc_addr))
        return out

    async def wait_leader(self, timeout: float = 15.0) -> Replica:
        """Wait until every live replica reports the same single leader and term."""
        live = self.live()
        sts: list[dict[str, Any]] = []
        with trio.move_on_after(timeout):
            while True:
                try:
                    sts = await self.statuses(live)
                except wire.WireError:
                    sts = []
                if sts:
                    leaders = [r for r, st in zip(live, sts, strict=True) if st["is_leader"]]
                    if (
                        len(leaders) == 1
                        and len({st["term"] for st in sts}) == 1
                        and {st["leader"] for st in sts} == {leaders[0].raft_addr}
                        and all(st["ready"] for st in sts)
                    ):
                        return leaders[0]
                await trio.sleep(0.05)
        raise trio.TooSlowError(f"no single ready leader after {timeout} s: {sts}")

    def crashes(self) -> list[str]:
        return [f"{r.name}: {r.crash!r}" for r in self.replicas if r.crash is not None]


@asynccontextmanager
async def open_cluster(root: Path, *, compaction_entries: int = 50_000) -> AsyncIterator[Cluster]:
    # The RPC ports are chosen with the Raft ports, all distinct: an RPC listener bound to
    # port 0 could get a Raft port whose node had not bound it yet, and that node then
    # never listened (its peers reached the RPC server instead, and the group had no leader).
    ports = free_ports(6)
    raft = [f"127.0.0.1:{p}" for p in ports[:3]]
    replicas = [
        Replica(
            name=f"meta{i}", data_dir=root / f"meta{i}", raft_addr=raft[i],
            peers=[a for a in raft if a != raft[i]], compaction_entries=compaction_entries, rpc_port=ports[3 + i],
        )
        for i in range(3)
    ]
    async with trio.open_nursery() as nursery:
        try:
            for r in replicas:
                await r.start(nursery)
            yield Cluster(replicas, nursery)
        finally:
            with trio.CancelScope(shield=True):
                for r in replicas:  # first stop every node, so none keeps electing itself
                    if r.node is not None:
                        r.node.destroy()
                for r in replicas:
                    await r.stop()
            nursery.cancel_scope.cancel()


def obj(size: int = 0, chunks: list[list[Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "size": size, "etag": f"etag-{size}", "sha256": "0" * 64, "content_type": "application/octet-stream",
        "created": time.time(), "meta": {"user": extra}, "chunks": chunks or [],
    }


async def must(reply_awaitable: Any) -> dict[str, Any]:
    reply = await reply_awaitable
    assert reply.get("ok"), reply
    return reply


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> float:
    """Poll an async or sync predicate; return the seconds it took."""
    start = time.monotonic()
    while True:
        value = predicate()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await trio.sleep(step)
