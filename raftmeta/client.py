"""Client of the raftmeta RPC, used by frontends and blob nodes.

Any raftmeta node answers (followers forward writes to the leader inside Raft). A
write carries a request id (``rid``) that stays the same across retries, so a command
retried after a timeout or a leader change applies once.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import trio

from cairn import wire

log = logging.getLogger("raftmeta.client")


class MetaClient:
    def __init__(self, addrs: list[str], secret: str, *, attempt_timeout: float = 6.0) -> None:
        if not addrs:
            raise ValueError("at least one raftmeta address is needed")
        self.addrs = list(addrs)
        self.pool = wire.ConnectionPool(secret)
        self.attempt_timeout = attempt_timeout
        self._preferred = random.randrange(len(self.addrs))

    async def _call_once(self, addr: str, request: dict[str, Any]) -> dict[str, Any]:
        reply, _ = await self.pool.request(addr, request, None, self.attempt_timeout)
        return reply

    async def call(self, request: dict[str, Any], deadline: float = 20.0) -> dict[str, Any]:
        """Send to one node after another until one answers, within ``deadline`` seconds.

        Returns the reply (``ok`` True or an application error such as NoSuchBucket);
        raises WireError(ERR_UNAVAILABLE) when no node could answer in time.
        """
        last: Exception | None = None
        delay = 0.02
        with trio.move_on_after(deadline):
            while True:
                for step in range(len(self.addrs)):
                    index = (self._preferred + step) % len(self.addrs)
                    addr = self.addrs[index]
                    try:
                        reply = await self._call_once(addr, request)
                    except wire.WireError as exc:
                        last = exc
                        self.pool.discard(addr)
                        continue
                    if not reply.get("ok") and reply.get("err") == wire.ERR_UNAVAILABLE:
                        last = wire.WireError(wire.ERR_UNAVAILABLE, f"{addr}: {reply.get('msg', '')}")
                        continue
                    self._preferred = index
                    return reply
                await trio.sleep(delay)
                delay = min(delay * 2, 0.5)
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

    async def status(self, addr: str) -> dict[str, Any]:
        return await self._call_once(addr, {"op": "status"})
