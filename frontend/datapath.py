"""The byte path of the frontend: chunks in (quorum writes), chunks out (verified reads).

PUT: the body is cut into chunks as it streams in; each chunk is hashed (SHA-256 for the
chunk, MD5 and SHA-256 for the object, in worker threads so hashing overlaps network
I/O) and written to ``replicas`` distinct blob nodes in parallel. A chunk counts once
``write_quorum`` nodes acknowledged it durable; nodes that do not answer in time are left
out of its manifest entry (repair re-replicates later). At most five chunks are held
in memory at once (filling, queued, hashing, two replicating), whatever the object's size.

GET: chunks are read in order from the fastest live replica; every chunk's SHA-256 is
checked before a byte of it is sent, and on an error or a mismatch the next replica is
tried. A corrupt replica is never served.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from quart.wrappers.response import ResponseBody

from blobnode.client import BlobClient
from core import wire
from frontend import placement
from frontend.budget import OWNER, ChunkBudget
from frontend.errors import S3Error
from raftmeta.client import MetaClient

log = logging.getLogger("frontend.datapath")

NODES_REFRESH = 2.0
NODES_WAIT = 5.0  # how long a write waits for enough live blob nodes before failing
NODE_BACKOFF = 5.0  # seconds a node that failed an operation is tried last
READ_TIMEOUT = 5.0
REPLICATIONS_IN_FLIGHT = 2
BUFFER_WAIT = 30.0  # seconds a request waits for a chunk buffer before SlowDown


@dataclass
class Settings:
    chunk_size: int = 8 * 1024 * 1024
    replicas: int = 3
    write_quorum: int = 2
    write_timeout: float = 30.0
    buffer_budget: int = 64 * 1024 * 1024  # all chunk buffers of this frontend, reads and writes
    inline_max: int = 16 * 1024  # a body this small (one chunk) lives in its manifest, replicated by Raft


class NodeDirectory:
    """The blob-node registry as this frontend last read it, plus local health marks."""

    def __init__(self, meta: MetaClient) -> None:
        self.meta = meta
        self.nodes: dict[str, placement.Node] = {}
        self.failed_at: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self.fresh = trio.Event()
        self.refreshed_at = 0.0

    async def refresh(self) -> None:
        self.refreshed_at = time.monotonic()
        reply = await self.meta.read({"q": "nodes"}, linear=False, deadline=5.0)
        if reply.get("ok"):
            self.nodes = {
                n["node_id"]: placement.Node(n["node_id"], n["addr"], n["capacity"], n["used"], n["heartbeat"],
                                             n.get("state", "active"))
                for n in reply["nodes"]
            }
            self.fresh.set()

    async def refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except wire.WireError as exc:
                log.warning("cannot refresh the blob-node registry: %s", exc)
            await trio.sleep(NODES_REFRESH)

    def writable(self, room: int = 0) -> list[placement.Node]:
        """Active nodes that heartbeat and (as last reported) have ``room`` bytes free
        above their reserve; nodes that failed a moment ago only if nothing else is left."""
        now = time.time()
        mono = time.monotonic()
        alive = [n for n in self.nodes.values()
                 if n.alive(now) and n.state == "active" and (not n.capacity or n.free >= room)]
        healthy = [n for n in alive if mono - self.failed_at.get(n.node_id, -1e9) > NODE_BACKOFF]
        return healthy if healthy else alive

    def read_order(self, node_ids: list[str]) -> list[str]:
        mono = time.monotonic()

        def key(node_id: str) -> tuple[bool, float]:
            recently_failed = mono - self.failed_at.get(node_id, -1e9) < NODE_BACKOFF
            return recently_failed, self.latency.get(node_id, 0.0)

        return sorted(node_ids, key=key)

    def mark_failed(self, node_id: str) -> None:
        self.failed_at[node_id] = time.monotonic()

    def observe(self, node_id: str, seconds: float) -> None:
        old = self.latency.get(node_id)
        self.latency[node_id] = seconds if old is None else 0.8 * old + 0.2 * seconds
        self.failed_at.pop(node_id, None)


SMALL_BODY = 64 * 1024  # a one-chunk object up to this size is answered from memory in one piece
# Bytes of a GET handed to the HTTP server at a time. The server copies each to a bytes
# object: at 1 MiB that is a fresh mmap (and its page faults) per slice, at 256 KiB the
# heap reuses memory (single-stream 64 MiB GET ~420 -> ~520 MB/s on this machine).
SEND_SLICE = 256 * 1024
SMALL_HASH = 64 * 1024  # bytes hashed on the event loop rather than in worker threads
SPARE_BUFFERS = 2  # idle chunk buffers a frontend keeps for reuse (one stream cycles through two)


@dataclass
class Stored:
    """What a streamed write produced: the manifest and the whole-object digests."""

    chunks: list[list[Any]] = field(default_factory=list)  # [id, size, sha256, [node_ids]]
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


class DataPath:
    def __init__(self, meta: MetaClient, blobs: BlobClient, settings: Settings) -> None:
        self.meta = meta
        self.blobs = blobs
        self.settings = settings
        self.directory = NodeDirectory(meta)
        # A frontend-wide budget of chunk buffers: past it, new chunks wait (and their
        # clients with them) instead of growing memory. Writers never need a second
        # buffer to finish a held one, so holders always make progress.
        self._bad, self._bad_recv = trio.open_memory_channel[tuple](256)  # read repair reports
        self.buffer_count = max(3, settings.buffer_budget // settings.chunk_size)
        self.buffers = ChunkBudget(self.buffer_count)
        # Chunk-sized buffers kept for reuse: a new 8 MiB bytearray is a fresh mmap, zeroed
        # and faulted in page by page. Only the budget's permits bound buffers in use.
        self._spare: list[bytearray] = []

    def new_buffer(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes (contents undefined): a spare one if ``size`` is a
        whole chunk."""
        if size == self.settings.chunk_size and self._spare:
            return self._spare.pop()
        return bytearray(size)

    def recycle(self, buffer: bytearray) -> None:
        """Take back a buffer from ``new_buffer`` that nothing references any more."""
        if len(buffer) == self.settings.chunk_size and len(self._spare) < SPARE_BUFFERS:
            self._spare.append(buffer)

    async def take_buffer(self) -> str:
        """One chunk buffer from the frontend's budget, for this request's owner (returned,
        for ``buffers.release``); past BUFFER_WAIT, SlowDown."""
        with trio.move_on_after(BUFFER_WAIT):
            return await self.buffers.acquire()
        log.warning("no chunk buffer free for %.0fs: answering SlowDown", BUFFER_WAIT)
        raise S3Error("SlowDown")

    # ------------------------------------------------------------------ writes

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
        """MD5 (+ the S3 checksum), the chunk's SHA-256 and the object's SHA-256, each in
        its own worker thread (hashlib releases the GIL). The first chunk's SHA-256 is
        the object hash's state at that point: those bytes are hashed once."""
        first = not stored.chunks
        entry: list[Any] = [uuid.uuid4().hex, len(chunk), "", []]
        stored.chunks.append(entry)

        def md5_work() -> None:
            stored.md5.update(chunk)
            if on_chunk is not None:
                on_chunk(chunk)

        def object_sha_work() -> None:
            stored.sha256.update(chunk)
            if first:
                entry[2] = stored.sha256.copy().hexdigest()

        def chunk_sha_work() -> None:
            entry[2] = hashlib.sha256(chunk).hexdigest()

        if len(chunk) <= SMALL_HASH:  # a thread hop costs more than hashing this little
            md5_work()
            object_sha_work()
            if not first:
                chunk_sha_work()
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, md5_work)
                nursery.start_soon(trio.to_thread.run_sync, object_sha_work)
                if not first:
                    nursery.start_soon(trio.to_thread.run_sync, chunk_sha_work)
        stored.size += len(chunk)
        return entry

    async def replicate(self, chunk_id: str, sha256: str, data: memoryview, acked: list[str]) -> None:
        """Write one chunk to ``replicas`` distinct nodes; node ids that acknowledged go to
        ``acked``. Raises QuorumError when fewer than ``write_quorum`` did."""
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

        async def attempt(node: placement.Node | None) -> None:
            nonlocal pending
            while node is not None:
                t0 = time.monotonic()
                current = node.node_id
                in_flight.add(current)
                try:
                    await self.blobs.put(node.addr, chunk_id, sha256, data)
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

    # ------------------------------------------------------------------ reads

    async def read_chunk(
        self, chunk: list[Any], on_bad: Callable[[str, str], None] | None = None, buffer: bytearray | None = None,
    ) -> bytearray | memoryview:
        """The whole chunk, verified against its SHA-256, from the first good replica
        (received into ``buffer`` if it is big enough). ``on_bad(chunk_id, node_id)``
        hears of every replica found missing or corrupt (not of one merely
        unreachable): read repair."""
        chunk_id, size, sha256, node_ids = chunk[:4]
        if len(chunk) > 4:  # inline: the bytes came with the manifest; checked all the same
            data = bytearray(chunk[4])
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
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
                data, digest = await self._fetch(node.addr, chunk_id, size, buffer)
            except wire.WireError as exc:
                log.warning("chunk %s: read from %s failed: %s", chunk_id, node.addr, exc)
                if exc.code in (wire.ERR_NOT_FOUND, wire.ERR_CHECKSUM) and on_bad is not None:
                    on_bad(chunk_id, node_id)
                else:
                    self.directory.mark_failed(node_id)
                continue
            if len(data) != size or digest != sha256:
                log.error("chunk %s on node %s is corrupt (size %d, sha %s): not served", chunk_id, node_id, len(data), digest)
                if on_bad is not None:
                    on_bad(chunk_id, node_id)
                continue
            self.directory.observe(node_id, time.monotonic() - t0)
            return data
        raise S3Error("ServiceUnavailable", "No intact replica of a chunk of this object is reachable. Please retry.")

    async def _fetch(
        self, addr: str, chunk_id: str, size: int, buffer: bytearray | None,
    ) -> tuple[bytearray | memoryview, str]:
        """One replica's bytes and their SHA-256 (hex). A chunk over SMALL_BODY is received
        by a worker thread that hashes it as it lands, into ``buffer`` if that is big
        enough: the event loop only sends, and the hash adds little to the receipt."""
        if size <= SMALL_BODY:
            _reply, data = await self.blobs.get(addr, chunk_id, timeout=READ_TIMEOUT)
            if len(data) <= SMALL_HASH:
                return data, hashlib.sha256(data).hexdigest()
            return data, await trio.to_thread.run_sync(lambda: hashlib.sha256(data).hexdigest())

        def into(n: int) -> memoryview:
            return memoryview(buffer if buffer is not None and len(buffer) >= n else bytearray(n))[:n]

        sha = hashlib.sha256()
        _reply, data = await self.blobs.get(addr, chunk_id, timeout=READ_TIMEOUT, into=into, consume=sha.update)
        return data, sha.hexdigest()

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

    def report_bad(self, bucket: str, key: str, version: int, chunk_id: str, node_id: str) -> None:
        """Queue a replica that a read found missing or corrupt (never blocks a GET)."""
        try:
            self._bad.send_nowait((bucket, key, version, chunk_id, node_id))
        except trio.WouldBlock:
            log.warning("read-repair queue full: chunk %s on %s left to the repair scan", chunk_id, node_id)

    async def read_repair_loop(self) -> None:
        """Drop reported bad replicas from their manifests through Raft; the leader's
        repair then re-creates them from a good copy."""
        async for bucket, key, version, chunk_id, node_id in self._bad_recv:
            try:
                reply = await self.meta.write({"op": "drop_replica", "bucket": bucket, "key": key, "version": version,
                                               "chunk": chunk_id, "node": node_id}, deadline=10)
                if reply.get("ok"):
                    log.info("read repair: replica of chunk %s on %s dropped, repair will re-create it", chunk_id, node_id)
            except wire.WireError as exc:
                log.warning("read repair of chunk %s not recorded: %s", chunk_id, exc)

    async def discard(self, chunks: list[list[Any]]) -> None:
        """Hand chunks of a failed upload to the garbage collector (best effort)."""
        written = [c for c in chunks if c[3]]
        if not written:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            try:
                await self.meta.write({"op": "discard_chunks", "chunks": written, "ts": time.time()}, deadline=10)
            except wire.WireError as exc:
                log.warning("could not queue %d orphan chunks for gc: %s", len(written), exc)


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
