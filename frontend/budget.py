"""The frontend's chunk-buffer budget, shared fairly between principals.

Every chunk a request holds in memory (a PUT filling or replicating one, a GET sending
one) takes a permit. Permits are few (64 MiB of 8 MiB chunks by default), so a plain
semaphore let one user who opens a few uploads and stalls hold them all: everyone else
waited, then got SlowDown. Here the last ``reserve`` permits go only to owners that hold
fewer than ``share`` permits, so whatever one owner does, another always finds a permit
soon. An owner is a user (or, for anonymous requests, a client address), taken from
``OWNER`` in the request's context.
"""

from __future__ import annotations

import contextvars

import trio

OWNER: contextvars.ContextVar[str] = contextvars.ContextVar("chunk_buffer_owner", default="")


class ChunkBudget:
    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        # The last quarter of the permits is kept for owners holding fewer than ``share``
        # (one permit is enough for an upload or a download to make progress): one owner
        # may use three quarters of the budget, and never starves the others.
        self.reserve = max(1, total // 4)
        self.share = max(1, self.reserve // 2)
        self.held: dict[str, int] = {}
        self._lot = trio.lowlevel.ParkingLot()

    @property
    def value(self) -> int:
        """Permits free now (for metrics and health)."""
        return self.free

    def _may_take(self, owner: str) -> bool:
        return self.free > self.reserve or (self.free > 0 and self.held.get(owner, 0) < self.share)

    async def acquire(self) -> str:
        """Take a permit for this request's owner (waiting for one); returns the owner,
        which ``release`` needs."""
        owner = OWNER.get()
        while not self._may_take(owner):
            await self._lot.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        self.free -= 1
        self.held[owner] = self.held.get(owner, 0) + 1
        return owner

    def release(self, owner: str) -> None:
        self.free += 1
        left = self.held.get(owner, 0) - 1
        if left > 0:
            self.held[owner] = left
        else:
            self.held.pop(owner, None)
        self._lot.unpark_all()  # each waiter re-checks its own rule
