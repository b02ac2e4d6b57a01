"""Client of the raftmeta RPC, used by frontends and blob nodes.

Any raftmeta node answers (followers forward writes to the leader inside Raft). A
write carries a request id (``rid``) that stays the same across retries, so a command
retried after a timeout or a leader change applies once.
"""

from __future__ import annotations

import logging
import os
import random
from contextvars import ContextVar
from typing import Any

import trio

from core import wire

log = logging.getLogger("raftmeta.client")
# Metadata round trips of the current request: a caller sets a fresh [0] (a frontend, per
# S3 request) and every ``call`` in that context (reads, read_manys, writes) adds one,
# however many nodes it tried.
ROUND_TRIPS: ContextVar[list[int] | None] = ContextVar("round_trips", default=None)

DOWN_DEADLINE = 3.0  # seconds a call waits while the previous one found every node unreachable


class MetaClient:
    def __init__(self, addrs: list[str], secret: str, *, attempt_timeout: float = 6.0) -> None:
        if not addrs:
            raise ValueError("at least one raftmeta address is needed")
        self.addrs = list(addrs)
        self.pool = wire.ConnectionPool(secret)
        self.attempt_timeout = attempt_timeout
        self._preferred = random.randrange(len(self.addrs))
        self._down = False  # the last call found no node: fail the next ones fast until one answers

    async def _call_once(self, addr: str, request: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        reply, _ = await self.pool.request(addr, request, None, timeout or self.attempt_timeout)
        return reply

    async def call(self, request: dict[str, Any], deadline: float = 20.0) -> dict[str, Any]:
        """Send to one node after another until one answers, within ``deadline`` seconds.

        Returns the reply (``ok`` True or an application error such as NoSuchBucket);
        raises WireError(ERR_UNAVAILABLE) when no node could answer in time.
        """
        tally = ROUND_TRIPS.get()
        if tally is not None:
            tally[0] += 1
        last: Exception | None = None
        delay = 0.02
        if self._down:
            deadline = min(deadline, DOWN_DEADLINE)
        give_up = trio.current_time() + deadline
        with trio.move_on_after(deadline):
            while True:
                for step in range(len(self.addrs)):
                    index = (self._preferred + step) % len(self.addrs)
                    addr = self.addrs[index]
                    # one node that accepts but never answers must not eat the whole deadline
                    timeout = min(self.attempt_timeout, max(1.0, (give_up - trio.current_time()) / 2))
                    try:
                        reply = await self._call_once(addr, request, timeout)
                    except wire.WireError as exc:
                        last = exc
                        self.pool.discard(addr)
                        continue
                    if not reply.get("ok") and reply.get("err") == wire.ERR_UNAVAILABLE:
                        last = wire.WireError(wire.ERR_UNAVAILABLE, f"{addr}: {reply.get('msg', '')}")
                        continue
                    self._preferred = index
                    self._down = False
                    return reply
                await trio.sleep(delay)
                delay = min(delay * 2, 0.1)  # a new leader is usually there within a second: look often
        self._down = True
        raise wire.WireError(wire.ERR_UNAVAILABLE, f"no raftmeta node answered: {last}")

    async def write(self, cmd: dict[str, Any], deadline: float = 20.0) -> dict[str, Any]:
        return await self.call({"op": "write", "cmd": cmd, "rid": os.urandom(16)}, deadline)

    async def read(self, q: dict[str, Any], *, linear: bool = True, deadline: float = 20.0) -> dict[str, Any]:
        return await self.call({"op": "read", "q": q, "linear": linear}, deadline)

    async def read_many(self, queries: list[dict[str, Any]], *, deadline: float = 20.0) -> list[dict[str, Any]]:
        """Several linearizable reads behind one Raft barrier."""
        reply = await self.call({"op": "read_many", "qs": queries}, deadline)
        if not reply.get("ok"):
            raise wire.WireError(reply.get("err", wire.ERR_INTERNAL), reply.get("msg", ""))
        return reply["results"]

    async def refresh_members(self) -> list[str]:
        """Learn the RPC addresses of the current Raft members (after a member was added,
        removed or replaced) and use those from now on, the leader first: it answers
        reads from its lease and takes writes without a forwarding hop. Returns the
        addresses in use."""
        reply = await self.call({"op": "members"}, deadline=5.0)
        rpcs = [m.get("rpc") for m in reply.get("members", [])]
        if reply.get("ok") and rpcs and all(rpcs) and set(rpcs) != set(self.addrs):
            log.info("raftmeta members now %s (were %s)", ",".join(rpcs), ",".join(self.addrs))
            preferred = self.addrs[self._preferred]
            self.addrs = rpcs
            self._preferred = rpcs.index(preferred) if preferred in rpcs else 0
        leader = reply.get("leader_rpc")
        if leader in self.addrs and leader != self.addrs[self._preferred]:
            try:  # a leader this client cannot reach (a partial partition) is not preferred
                await self._call_once(leader, {"op": "status"}, timeout=1.0)
            except wire.WireError:
                return self.addrs
            self._preferred = self.addrs.index(leader)
        return self.addrs

    async def follow_members(self, interval: float = 3.0, first: float = 1.0) -> None:
        """``refresh_members`` forever: after ``first`` seconds, then every ``interval``."""
        delay = first
        while True:
            await trio.sleep(delay)
            delay = interval
            try:
                await self.refresh_members()
            except wire.WireError as exc:
                log.debug("cannot refresh raftmeta members: %s", exc)

    async def status(self, addr: str) -> dict[str, Any]:
        return await self._call_once(addr, {"op": "status"})
