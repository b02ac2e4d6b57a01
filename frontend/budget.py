"""The frontend's chunk buffers: their budget, shared fairly between principals, and
the idle buffers kept for reuse.

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
import logging

import trio

from frontend.errors import S3Error

log = logging.getLogger("frontend.datapath")

BUFFER_WAIT = 30.0  # seconds a request waits for a chunk buffer before SlowDown
SPARE_BUFFERS = 2  # idle chunk buffers a frontend keeps for reuse (one stream cycles through two)

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


class ChunkBuffers:
    """All chunk buffers of a frontend, reads and writes: at most ``buffer_count`` held
    at once (the permits of ``buffers``), and the idle ones kept for reuse. The base of
    ``DataPath``."""

    def __init__(self, chunk_size: int, budget: int) -> None:
        self.chunk_size = chunk_size
        # A frontend-wide budget of chunk buffers: past it, new chunks wait (and their
        # clients with them) instead of growing memory. Writers never need a second
        # buffer to finish a held one, so holders always make progress.
        self.buffer_count = max(3, budget // chunk_size)
        self.buffers = ChunkBudget(self.buffer_count)
        # Chunk-sized buffers kept for reuse: a new 8 MiB bytearray is a fresh mmap, zeroed
        # and faulted in page by page. Only the budget's permits bound buffers in use.
        self._spare: list[bytearray] = []

    def new_buffer(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes (contents undefined): a spare one if ``size`` is a
        whole chunk."""
        if size == self.chunk_size and self._spare:
            return self._spare.pop()
        return bytearray(size)

    def recycle(self, buffer: bytearray) -> None:
        """Take back a buffer from ``new_buffer`` that nothing references any more."""
        if len(buffer) == self.chunk_size and len(self._spare) < SPARE_BUFFERS:
            self._spare.append(buffer)

    async def take_buffer(self) -> str:
        """One chunk buffer from the frontend's budget, for this request's owner (returned,
        for ``buffers.release``); past BUFFER_WAIT, SlowDown."""
        with trio.move_on_after(BUFFER_WAIT):
            return await self.buffers.acquire()
        log.warning("no chunk buffer free for %.0fs: answering SlowDown", BUFFER_WAIT)
        raise S3Error("SlowDown")
