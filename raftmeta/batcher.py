"""Commit batching: clients' commands that arrive while earlier ones are being committed
ride together in one Raft entry (``{"op": "batch", "cmds": [...]}``), which the state
machine applies in one SQLite transaction with a savepoint per command
(``MetaState._apply_batch``): one log entry, one journal sync, one AppendEntries per
follower and one transaction for all of them.

The wait is bounded by the commit itself, never by a timer: a command that finds fewer
than ``in_flight`` entries being committed is proposed at once (alone when the server
is idle: no added latency); otherwise it waits for one of them to finish and goes with
whatever queued meanwhile (at most ``MAX_COMMANDS`` commands and ``MAX_BYTES`` of them).
Each command is packed once, when it arrives; the batch entry is their concatenation.

Only commands the state machine accepts in a batch (``state.BATCHABLE``) are batched,
and only once every voting member has recorded that it applies batch entries
(``allowed``, from ``raftmeta.sm.members``); else, or with ``in_flight`` 0, each is
proposed alone, as before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import trio

from core import wire
from raftmeta.state import BATCHABLE

MAX_COMMANDS = 256  # below versions.SEQ_SPAN: each command writes versions at its own position
MAX_BYTES = wire.MAX_HEADER  # a command alone can be this large: an entry stays under 2 MiB
IN_FLIGHT = 2  # batch entries being committed at once
ALLOWED_TTL = 1.0  # seconds a "every member applies batch entries" answer is trusted


def _batch_entry(packed: list[bytes]) -> bytes:
    """``{"op": "batch", "cmds": [...]}`` from already packed commands."""
    packer = msgpack.Packer(use_bin_type=True)
    return b"".join([b"\x82", packer.pack("op"), packer.pack("batch"), packer.pack("cmds"),
                     packer.pack_array_header(len(packed)), *packed])


@dataclass
class _Waiting:
    packed: bytes
    done: trio.Event = field(default_factory=trio.Event)
    result: dict[str, Any] | None = None


class CommitBatcher:
    """Turns concurrent ``submit`` calls into batch entries (see the module docstring).
    ``propose(data)`` proposes one packed entry and returns the state machine's reply."""

    def __init__(self, propose: Callable[[bytes], Awaitable[dict[str, Any]]], allowed: Callable[[], bool],
                 timeout: float, in_flight: int = IN_FLIGHT) -> None:
        self._propose = propose
        self._allowed = allowed
        self._allowed_until = 0.0  # ``allowed`` is asked again after ALLOWED_TTL
        self._timeout = timeout
        self._queue: deque[_Waiting] = deque()
        self._wake = trio.Event()
        self._off = in_flight < 1  # every command its own entry
        self._slots = trio.Semaphore(max(1, in_flight))
        self.stats = {"entries": 0, "commands": 0, "largest": 0}  # batch entries only

    async def submit(self, cmd: dict[str, Any]) -> dict[str, Any]:
        packed = msgpack.packb(cmd, use_bin_type=True)
        if self._off or cmd.get("op") not in BATCHABLE or len(packed) >= MAX_BYTES or not self._may_batch():
            return await self._propose(packed)
        waiting = _Waiting(packed)
        self._queue.append(waiting)
        self._wake.set()
        with trio.move_on_after(self._timeout + 1.0):  # propose itself gives up after timeout
            await waiting.done.wait()
        return waiting.result or {"ok": False, "err": wire.ERR_UNAVAILABLE, "msg": "commit timed out"}

    def _may_batch(self) -> bool:
        now = trio.current_time()
        if now >= self._allowed_until:
            if not self._allowed():
                return False
            self._allowed_until = now + ALLOWED_TTL
        return True

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._queue:
                    await self._slots.acquire()
                    nursery.start_soon(self._commit, self._take())

    def _take(self) -> list[_Waiting]:
        taken = [self._queue.popleft()]
        size = len(taken[0].packed)
        while self._queue and len(taken) < MAX_COMMANDS and size + len(self._queue[0].packed) <= MAX_BYTES:
            taken.append(self._queue.popleft())
            size += len(taken[-1].packed)
        return taken

    async def _commit(self, taken: list[_Waiting]) -> None:
        results = [{"ok": False, "err": wire.ERR_UNAVAILABLE, "msg": "commit failed"}] * len(taken)
        try:
            if len(taken) == 1:
                results = [await self._propose(taken[0].packed)]
            else:
                reply = await self._propose(_batch_entry([w.packed for w in taken]))
                results = reply.get("results") if reply.get("ok") else None
                if not isinstance(results, list) or len(results) != len(taken):
                    results = [reply] * len(taken)  # the entry's fate is unknown: every client retries
                self.stats["entries"] += 1
                self.stats["commands"] += len(taken)
                self.stats["largest"] = max(self.stats["largest"], len(taken))
        finally:
            for waiting, result in zip(taken, results, strict=True):
                waiting.result = result
                waiting.done.set()
            self._slots.release()
