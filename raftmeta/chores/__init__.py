"""The leader's chores: background work that only the Raft leader does, one module each
(``gc``, ``expiry``, ``repair``, ``orphans``; lifecycle, event dispatch and rebalancing
belong here too), all behind one interface and driven by one runner.

A chore gets a ``Leader`` (leadership check, proposals through Raft, reads of the local
replica in a worker thread, the blob-node client), never the RPC server. Every pass is
bounded (a batch of work, then it returns) and does nothing on a follower; ``status``
is its part of the ``chore`` RPC's reply (``/_cairn/status``, metrics, ``cairn admin``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from blobnode.client import BlobClient

log = logging.getLogger("raftmeta")


@dataclass
class Leader:
    """What a chore may use of the raftmeta node it runs beside."""

    is_leader: Callable[[], bool]
    propose: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
    query_here: Callable[[dict[str, Any]], dict[str, Any]]  # the local replica, on the caller's thread
    blobs: BlobClient

    async def query(self, q: dict[str, Any]) -> dict[str, Any]:
        """Read the local replica in a worker thread: scans never stall the RPC loop."""
        return await trio.to_thread.run_sync(self.query_here, q)


class Chore:
    """One leader chore. ``name`` is what the ``chore`` RPC calls it."""

    name = ""

    def __init__(self, leader: Leader, interval: float) -> None:
        self.leader = leader
        self.interval = interval

    async def run_pass(self) -> int:
        """One bounded pass (nothing on a follower); how much it did."""
        raise NotImplementedError

    async def status(self) -> dict[str, Any]:
        """This chore's keys of the ``chore`` RPC's reply."""
        raise NotImplementedError


class ChoreRunner:
    """Runs each chore every ``interval`` seconds beside the leader, and on request."""

    def __init__(self, leader: Leader, chores: list[Chore]) -> None:
        self.leader = leader
        self.chores = {chore.name: chore for chore in chores}

    def __contains__(self, name: object) -> bool:
        return name in self.chores

    async def run(self, only: set[str] | None = None) -> None:
        """Every chore (or those named in ``only``) on its own schedule, until cancelled."""
        async with trio.open_nursery() as nursery:
            for chore in self.chores.values():
                if only is None or chore.name in only:
                    nursery.start_soon(self._every, chore)

    async def _every(self, chore: Chore) -> None:
        while True:
            await trio.sleep(chore.interval)
            if not self.leader.is_leader():
                continue  # the pass would do nothing; a follower's chores wait
            try:
                await chore.run_pass()
            except Exception:
                log.exception("chore %s failed", chore.name)

    async def run_now(self, name: str) -> None:
        """Run one pass of the chore ``name`` (KeyError: no such chore)."""
        await self.chores[name].run_pass()

    async def status(self) -> dict[str, Any]:
        reply: dict[str, Any] = {}
        for chore in self.chores.values():
            reply.update(await chore.status())
        return reply
