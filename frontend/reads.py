"""The read side of the byte path: chunks out, verified.

Chunks are read in order from the fastest live replica; every chunk's checksum is
checked before a byte of it is sent, with the algorithm its manifest entry names
(``core.chunksum.parse``: XXH3-128, or SHA-256 for chunks written before it, inline ones
included), and on an error or a mismatch the next replica is tried. A corrupt replica is never served. ``PrefetchingBody`` is a GET's response body:
it reads the next chunk while the current one is being sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from quart.wrappers.response import ResponseBody

from core import chunksum, wire
from core.chunksum import ChunkSum
from frontend.budget import OWNER, ChunkBuffers
from frontend.errors import S3Error
from frontend.nodedir import NodeDirectory
from frontend.writes import SMALL_HASH

if TYPE_CHECKING:
    from blobnode.client import BlobClient
    from frontend.datapath import DataPath

log = logging.getLogger("frontend.datapath")

READ_TIMEOUT = 5.0
SMALL_BODY = 64 * 1024  # a one-chunk object up to this size is answered from memory in one piece
# Bytes of a GET handed to the HTTP server at a time. The server copies each to a bytes
# object: at 1 MiB that is a fresh mmap (and its page faults) per slice, at 256 KiB the
# heap reuses memory (single-stream 64 MiB GET ~420 -> ~520 MB/s on this machine).
SEND_SLICE = 256 * 1024


def _expected(chunk_id: str, value: object) -> ChunkSum:
    """A manifest entry's checksum; one this frontend cannot verify is never served."""
    try:
        return chunksum.parse(value)
    except ValueError:
        log.error("chunk %s has a checksum this frontend cannot verify (%.80r): not served", chunk_id, value)
        raise S3Error("InternalError", "A chunk of this object has an unknown checksum.") from None


class ChunkReads(ChunkBuffers):
    """The read half of ``DataPath`` (which mixes it in and sets these):"""

    blobs: BlobClient
    directory: NodeDirectory

    async def read_chunk(
        self, chunk: list[Any], on_bad: Callable[[str, str], None] | None = None, buffer: bytearray | None = None,
    ) -> bytearray | memoryview:
        """The whole chunk, verified against its checksum, from the first good replica
        (received into ``buffer`` if it is big enough). ``on_bad(chunk_id, node_id)``
        hears of every replica found missing or corrupt (not of one merely
        unreachable): read repair."""
        chunk_id, size, value, node_ids = chunk[:4]
        expected = _expected(chunk_id, value)
        if len(chunk) > 4:  # inline: the bytes came with the manifest; checked all the same
            data = bytearray(chunk[4])
            if len(data) != size or not expected.matches(data):
                log.error("inline chunk %s is corrupt: not served", chunk_id)
                raise S3Error("InternalError", "An inline object failed its checksum.")
            return data
        if not self.directory.fresh.is_set():
            await self.directory.refresh()
        for node_id in self.directory.read_order(node_ids):
            node = self.directory.nodes.get(node_id)
            if node is None:
                continue
            t0 = time.monotonic()
            try:
                data, intact = await self._fetch(node.addr, chunk_id, size, buffer, expected)
            except wire.WireError as exc:
                log.warning("chunk %s: read from %s failed: %s", chunk_id, node.addr, exc)
                if exc.code in (wire.ERR_NOT_FOUND, wire.ERR_CHECKSUM) and on_bad is not None:
                    on_bad(chunk_id, node_id)
                else:
                    self.directory.mark_failed(node_id)
                continue
            if len(data) != size or not intact:
                log.error("chunk %s on node %s is corrupt (size %d of %d, %s %s): not served", chunk_id, node_id,
                          len(data), size, expected.algorithm.name, "matches" if intact else "mismatch")
                if on_bad is not None:
                    on_bad(chunk_id, node_id)
                continue
            self.directory.observe(node_id, time.monotonic() - t0)
            return data
        raise S3Error("ServiceUnavailable", "No intact replica of a chunk of this object is reachable. Please retry.")

    async def _fetch(
        self, addr: str, chunk_id: str, size: int, buffer: bytearray | None, expected: ChunkSum,
    ) -> tuple[bytearray | memoryview, bool]:
        """One replica's bytes and whether they match ``expected``. A chunk over
        SMALL_BODY is received by a worker thread that hashes it (with ``expected``'s
        algorithm) as it lands, into ``buffer`` if that is big enough: the event loop
        only sends, and the hash adds little to the receipt."""
        if size <= SMALL_BODY:
            _reply, data = await self.blobs.get(addr, chunk_id, timeout=READ_TIMEOUT)
            if len(data) <= SMALL_HASH:
                return data, expected.matches(data)
            return data, await trio.to_thread.run_sync(expected.matches, data)

        def into(n: int) -> memoryview:
            return memoryview(buffer if buffer is not None and len(buffer) >= n else bytearray(n))[:n]

        hasher = expected.hasher()
        _reply, data = await self.blobs.get(addr, chunk_id, timeout=READ_TIMEOUT, into=into, consume=hasher.update)
        return data, expected.matched(hasher)

    async def stream(
        self, chunks: list[list[Any]], start: int, end: int, *,
        before_chunk: Callable[[int], Awaitable[None]] | None = None,
        on_bad: Callable[[str, str], None] | None = None, reuse: bool = False,
    ) -> AsyncIterator[bytes | bytearray | memoryview]:
        """Bytes [start, end] (inclusive) of the object made of ``chunks``, a chunk at a
        time. ``before_chunk(size)`` runs before each chunk is read (the GET body takes
        a buffer from the budget there; a copy into a new upload holds a write buffer).
        With ``reuse``, whole chunks come as memoryviews of buffers from ``new_buffer``
        that the consumer hands to ``recycle`` once it is done with them."""
        offset = 0
        for chunk in chunks:
            size = chunk[1]
            lo, hi = offset, offset + size - 1
            offset += size
            if hi < start:
                continue
            if lo > end:
                break
            if before_chunk is not None:
                await before_chunk(size)
            buffer = self.new_buffer(size) if reuse and size > SMALL_BODY else None
            data = await self.read_chunk(chunk, on_bad, buffer)
            a, b = max(start, lo) - lo, min(end, hi) - lo + 1
            if (a, b) == (0, size):
                yield data
            else:
                piece = bytes(memoryview(data)[a:b])
                if buffer is not None:
                    self.recycle(buffer)
                yield piece
            del data, buffer


class PrefetchingBody(ResponseBody):
    """A GET response body that fetches and verifies the next chunk while the current
    one is being sent. The fetching task lives exactly as long as the response is
    being sent (Quart enters and exits this body in the task that sends it). If no
    intact replica of a chunk can be read, sending fails: the client sees a cut
    connection short of Content-Length, never a complete-looking response."""

    def __init__(self, data: DataPath, chunks: list[list[Any]], start: int, end: int,
                 on_bad: Callable[[str, str], None] | None = None) -> None:
        self.data, self.chunks, self.start, self.end, self.on_bad = data, chunks, start, end, on_bad
        self._for = OWNER.get()  # whose budget share the chunks count against

    async def __aenter__(self) -> PrefetchingBody:
        self._held = 0  # budget permits this response holds: the chunk being sent, the next
        self._owner = ""
        self._unsent = False  # the producer holds a permit for a chunk not handed over yet
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        # Unbuffered: the next chunk waits in the producer's hands, so one response holds at
        # most two chunks, both counted in the frontend's buffer budget until fully sent.
        send, self._recv = trio.open_memory_channel[Any](0)
        self._nursery.start_soon(self._produce, send)
        return self

    async def _before_chunk(self, size: int) -> None:
        if size > SMALL_BODY:  # a small chunk per connection needs no permit (as in get_object)
            self._owner = await self.data.take_buffer()
            self._held += 1
            self._unsent = True

    def _give_back(self) -> None:
        self._held -= 1
        self.data.buffers.release(self._owner)

    async def _produce(self, send: trio.MemorySendChannel[Any]) -> None:
        OWNER.set(self._for)
        pieces = self.data.stream(self.chunks, self.start, self.end, before_chunk=self._before_chunk,
                                  on_bad=self.on_bad, reuse=True)
        async with send:
            try:
                async for piece in pieces:
                    budgeted, self._unsent = self._unsent, False
                    try:
                        await send.send((piece, budgeted))
                    except BaseException:
                        if budgeted:
                            self._give_back()
                        raise
                    del piece
            except Exception as exc:  # handed to the sender, which fails the response
                await send.send((exc, False))
            finally:  # a client gone mid-GET: close the reader now
                if self._unsent:
                    self._unsent = False
                    self._give_back()
                with trio.CancelScope(shield=True):
                    await pieces.aclose()

    def __aiter__(self) -> AsyncIterator[bytes | bytearray]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes | bytearray | memoryview]:
        async for piece, budgeted in self._recv:
            if isinstance(piece, Exception):
                raise piece
            # The server copies what it is given to bytes: hand it bytes, a slice at a time,
            # so that copy is the only one, stays small however large a chunk is, and nothing
            # downstream keeps the chunk alive (Quart holds the last piece it was given until
            # the next one comes). When the last slice's send returns, the bytes are in the
            # kernel and the permit goes back.
            view = memoryview(piece)
            for at in range(0, len(view), SEND_SLICE):
                yield bytes(view[at : at + SEND_SLICE])
            owner = piece.obj if isinstance(piece, memoryview) else None
            del view, piece
            if isinstance(owner, bytearray):  # every slice was copied out: the buffer is free
                self.data.recycle(owner)
            if budgeted:
                self._give_back()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        self._nursery.cancel_scope.cancel()
        try:
            return await self._nursery_manager.__aexit__(exc_type, exc, tb)
        finally:
            while self._held > 0:  # a chunk the client never took all of
                self._give_back()
