"""Tests of frontend.nodedir: the blob-node registry as a frontend sees it."""

from __future__ import annotations

import time
from typing import Any

from core.nodes import UNAVAILABLE_AFTER, BlobNode, NodeState
from frontend.nodedir import NodeDirectory


class FakeMeta:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    async def read(self, q: dict[str, Any], linear: bool = True, deadline: float = 0.0) -> dict[str, Any]:
        assert q == {"q": "nodes"}
        return {"ok": True, "nodes": self.records}


def record(node_id: str, age: float = 0.0, state: str = "active", capacity: int = 0, used: int = 0) -> dict[str, Any]:
    return {"node_id": node_id, "addr": f"{node_id}:1", "capacity": capacity, "used": used, "chunks": 0,
            "heartbeat": time.time() - age, "state": state}


async def test_refresh_reads_the_registry_into_blob_nodes() -> None:
    directory = NodeDirectory(FakeMeta([record("a"), record("b", state="draining")]))  # type: ignore[arg-type]
    assert not directory.fresh.is_set()
    await directory.refresh()
    assert directory.fresh.is_set() and set(directory.nodes) == {"a", "b"}
    assert isinstance(directory.nodes["a"], BlobNode) and directory.nodes["b"].state is NodeState.DRAINING


async def test_writable_is_the_nodes_that_take_chunks() -> None:
    directory = NodeDirectory(FakeMeta([  # type: ignore[arg-type]
        record("up"), record("late", age=UNAVAILABLE_AFTER + 1), record("draining", state="draining"),
        record("full", capacity=100, used=90), record("roomy", capacity=100, used=10),
    ]))
    await directory.refresh()
    assert sorted(n.node_id for n in directory.writable()) == ["full", "roomy", "up"]
    assert sorted(n.node_id for n in directory.writable(50)) == ["roomy", "up"]


async def test_nodes_that_failed_a_moment_ago_are_a_last_resort() -> None:
    directory = NodeDirectory(FakeMeta([record("a"), record("b")]))  # type: ignore[arg-type]
    await directory.refresh()
    directory.mark_failed("a")
    assert [n.node_id for n in directory.writable()] == ["b"]
    directory.mark_failed("b")
    assert sorted(n.node_id for n in directory.writable()) == ["a", "b"]  # nothing else is left
    directory.observe("a", 0.01)  # it answered again
    assert [n.node_id for n in directory.writable()] == ["a"]


def test_read_order_is_by_latency_with_recent_failures_last() -> None:
    directory = NodeDirectory(FakeMeta([]))  # type: ignore[arg-type]
    directory.observe("slow", 0.5)
    directory.observe("fast", 0.01)
    directory.observe("failed", 0.001)
    directory.mark_failed("failed")
    assert directory.read_order(["failed", "slow", "fast"]) == ["fast", "slow", "failed"]
