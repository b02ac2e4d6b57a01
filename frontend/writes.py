"""The write side of the byte path: chunks in, with quorum writes.

The body is cut into chunks as it streams in; each chunk is hashed (XXH3-128 for the
chunk, a ``core.chunksum`` value that the blob nodes verify; MD5 and SHA-256 for the
object, in worker threads so hashing overlaps network I/O) and written to ``replicas`` distinct blob nodes in parallel. A chunk counts once
``write_quorum`` nodes acknowledged it durable; nodes that do not answer in time are left
out of its manifest entry (repair re-replicates later). At most five chunks are held
in memory at once (filling, queued, hashing, two replicating), whatever the object's size.
A whole body of at most ``inline_max`` bytes goes into its manifest entry instead.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from core import chunksum, wire
from core.nodes import BlobNode
from frontend import placement
from frontend.budget import ChunkBuffers
from frontend.errors import S3Error
from frontend.nodedir import NodeDirectory

if TYPE_CHECKING:
    from blobnode.client import BlobClient
    from frontend.datapath import Settings

log = logging.getLogger("frontend.datapath")

NODES_WAIT = 5.0  # how long a write waits for enough live blob nodes before failing
REPLICATIONS_IN_FLIGHT = 2
SMALL_HASH = 64 * 1024  # bytes hashed on the event loop rather than in worker threads


@dataclass
class Stored:
    """What a streamed write produced: the manifest and the whole-object digests."""

    chunks: list[list[Any]] = field(default_factory=list)  # [id, size, checksum, [node_ids]]
    size: int = 0
    md5: Any = field(default_factory=hashlib.md5)
    sha256: Any = field(default_factory=hashlib.sha256)
    error: BaseException | None = None

    def written(self) -> list[list[Any]]:
        return [c for c in self.chunks if c[3]]


class QuorumError(S3Error):
    def __init__(self, acked: list[str]) -> None:
        super().__init__("ServiceUnavailable", "Not enough blob nodes acknowledged the write. Please retry.")
        self.acked = acked


class ChunkWrites(ChunkBuffers):
    """The write half of ``DataPath`` (which mixes it in and sets these):"""

    settings: Settings
    blobs: BlobClient
    directory: NodeDirectory

    async def store(
        self, pieces: AsyncIterator[bytes | bytearray | memoryview], stored: Stored,
        on_chunk: Callable[[memoryview], None] | None = None, size_hint: int | None = None,
    ) -> None:
        """Stream ``pieces`` into replicated chunks, recording them in ``stored``.

        ``on_chunk`` sees every chunk's bytes in order, in a worker thread (for the
        S3 additional checksums). On any failure, ``stored.chunks`` still lists what was
        written so the caller can reclaim it.
        """
        size = self.settings.chunk_size
        send, recv = trio.open_memory_channel[memoryview](1)
        held = 0  # buffer permits this upload holds
        owner = ""

        def done_with_buffer() -> None:
            nonlocal held
            held -= 1
            self.buffers.release(owner)

        received = 0
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, recv, stored, on_chunk, nursery.cancel_scope, done_with_buffer)
                try:
                    async with send:
                        buf: bytearray | None = None  # allocated when bytes arrive for it
                        fill = 0
                        sent = False
                        small: memoryview | None = None  # a whole body that may go inline
                        async for piece in pieces:
                            view = memoryview(piece)
                            while view:
                                if buf is None:
                                    if small is not None:  # more came after all: a chunk like any other
                                        await send.send(small)
                                        small, sent = None, True
                                    owner = await self.take_buffer()
                                    held += 1
                                    left = size_hint - received if size_hint is not None else 0
                                    buf = self.new_buffer(min(size, left) if left > 0 else size)
                                take = min(len(view), len(buf) - fill)
                                buf[fill : fill + take] = view[:take]
                                fill += take
                                received += take
                                view = view[take:]
                                if fill == len(buf):
                                    if not sent and fill <= self.settings.inline_max:
                                        small = memoryview(buf)  # decided when the body ends
                                    else:
                                        await send.send(memoryview(buf))
                                        sent = True
                                    buf, fill = None, 0
                        if buf is not None and fill:
                            if not sent and fill <= self.settings.inline_max:
                                small = memoryview(buf)[:fill]
                            else:
                                await send.send(memoryview(buf)[:fill])
                        elif buf is not None:
                            done_with_buffer()
                        if small is not None:
                            # Small and whole: the bytes go into the manifest, replicated and
                            # fsynced by Raft with the commit. No blob write, no chunk to GC.
                            entry = await self._hash_chunk(small, stored, on_chunk)
                            entry.append(bytes(small))
                            done_with_buffer()
                except Exception as exc:  # judged after the nursery: never an ExceptionGroup
                    stored.error = stored.error or exc
                    nursery.cancel_scope.cancel()
        finally:
            for _ in range(held):  # buffers of chunks that never finished replicating
                self.buffers.release(owner)
        if stored.error is not None:
            raise stored.error

    async def _writer(
        self, recv: trio.MemoryReceiveChannel[memoryview], stored: Stored,
        on_chunk: Callable[[memoryview], None] | None, scope: trio.CancelScope,
        done_with_buffer: Callable[[], None],
    ) -> None:
        """Hash chunks in order; replicate up to REPLICATIONS_IN_FLIGHT of them at once,
        so one chunk's fsyncs on the blob nodes overlap the next chunk's hashing."""
        slots = trio.Semaphore(REPLICATIONS_IN_FLIGHT)

        async def replicate(entry: list[Any], chunk: memoryview) -> None:
            try:
                await self.replicate(entry[0], entry[2], chunk, entry[3])
            except Exception as exc:  # judged once by store(); never an ExceptionGroup
                stored.error = stored.error or exc
                scope.cancel()
            else:
                done_with_buffer()
                if isinstance(chunk.obj, bytearray):  # every send of it has returned
                    self.recycle(chunk.obj)
            finally:
                slots.release()

        async with recv, trio.open_nursery() as replications:
            async for chunk in recv:
                entry = await self._hash_chunk(chunk, stored, on_chunk)
                await slots.acquire()
                replications.start_soon(replicate, entry, chunk)
                # The task owns the chunk now: a reference kept here while waiting for the
                # next one would outlive its budget permit (16 uploads held 16 such buffers).
                del chunk, entry

    async def _hash_chunk(
        self, chunk: memoryview, stored: Stored, on_chunk: Callable[[memoryview], None] | None,
    ) -> list[Any]:
        """The object's MD5 (+ the S3 checksum) in one worker thread; the object's SHA-256
        and the chunk's checksum (XXH3-128, ~1/6 of the SHA-256's time) in another
        (hashlib and xxhash release the GIL)."""
        entry: list[Any] = [uuid.uuid4().hex, len(chunk), "", []]
        stored.chunks.append(entry)

        def md5_work() -> None:
            stored.md5.update(chunk)
            if on_chunk is not None:
                on_chunk(chunk)

        def sha_work() -> None:
            stored.sha256.update(chunk)
            entry[2] = chunksum.compute(chunk).value

        if len(chunk) <= SMALL_HASH:  # a thread hop costs more than hashing this little
            md5_work()
            sha_work()
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, md5_work)
                nursery.start_soon(trio.to_thread.run_sync, sha_work)
        stored.size += len(chunk)
        return entry

    async def replicate(self, chunk_id: str, checksum: str, data: memoryview, acked: list[str]) -> None:
        """Write one chunk to ``replicas`` distinct nodes, each verifying ``checksum``
        before its fsync; node ids that acknowledged go to ``acked``. Raises QuorumError
        when fewer than ``write_quorum`` did."""
        s = self.settings
        if not self.directory.fresh.is_set():
            await self.directory.refresh()
        ranked = placement.rank(chunk_id, self.directory.writable(len(data)))
        if len(ranked) < s.replicas and time.monotonic() - self.directory.refreshed_at > 0.5:
            await self.directory.refresh()  # a node may have joined since the last refresh
            ranked = placement.rank(chunk_id, self.directory.writable(len(data)))
        with trio.move_on_after(NODES_WAIT):  # e.g. a cluster still starting: nodes register
            while len(ranked) < s.write_quorum:
                await trio.sleep(0.25)
                await self.directory.refresh()
                ranked = placement.rank(chunk_id, self.directory.writable(len(data)))
        if len(ranked) < s.write_quorum:
            raise QuorumError(acked)
        targets, spares = ranked[: s.replicas], ranked[s.replicas :]
        pending = len(targets)
        all_done = trio.Event()
        quorum_or_done = trio.Event()
        started = time.monotonic()
        in_flight: set[str] = set()

        async def attempt(node: BlobNode | None) -> None:
            nonlocal pending
            while node is not None:
                t0 = time.monotonic()
                current = node.node_id
                in_flight.add(current)
                try:
                    await self.blobs.put(node.addr, chunk_id, checksum, data)
                    self.directory.observe(node.node_id, time.monotonic() - t0)
                    acked.append(node.node_id)
                    if len(acked) >= s.write_quorum:
                        quorum_or_done.set()
                    break
                except wire.WireError as exc:
                    log.warning("chunk %s: write to %s failed: %s", chunk_id, node.addr, exc)
                    self.directory.mark_failed(node.node_id)
                    node = spares.pop(0) if spares else None
                finally:
                    in_flight.discard(current)
            pending -= 1
            if pending == 0:
                all_done.set()
                quorum_or_done.set()

        async def straggler_cutoff(scope: trio.CancelScope) -> None:
            # Once a quorum holds the chunk, give slow replicas a bounded extra time.
            await quorum_or_done.wait()
            if not all_done.is_set():
                with trio.move_on_after(max(1.0, 2 * (time.monotonic() - started))):
                    await all_done.wait()
            for node_id in in_flight:  # too slow: place the next chunks elsewhere for a while
                log.warning("chunk %s: node %s too slow, left out of this chunk", chunk_id, node_id)
                self.directory.mark_failed(node_id)
            scope.cancel()

        with trio.move_on_after(s.write_timeout):
            async with trio.open_nursery() as nursery:
                for node in targets:
                    nursery.start_soon(attempt, node)
                nursery.start_soon(straggler_cutoff, nursery.cancel_scope)
        if len(acked) < s.write_quorum:
            raise QuorumError(acked)

