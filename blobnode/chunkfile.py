"""One chunk file: its header format, writing it durably, reading and sending a range.

A chunk file is a 64-byte header, then the chunk's bytes. The header holds the chunk's
checksum (``core.chunksum``), so a chunk can be verified at rest (the scrubber) without
asking raftmeta. Two versions, both read, each chunk verified with its own algorithm:

  v2 (written now)  ``b"CAIRNCK2" | u64 size | u8 algorithm | 7 zero bytes |
                    digest (32 bytes: XXH3-128's 16 then 16 zero, or SHA-256's 32) | 8 zero bytes``
  v1 (before)       ``b"CAIRNCK1" | u64 size | sha256 (32 bytes) | 16 zero bytes``

A v1 file is never rewritten: it keeps its SHA-256 for life. The algorithm of a new
file is the one its writer's checksum names (XXH3-128 from current frontends, SHA-256
from older ones and for repairs of v1-era chunks).

Chunk files are written with O_DIRECT from page-aligned buffers that the payload was
received into (``ChunkBuffers``): the bytes go from the socket to the disk with no copy
into the page cache (that copy was the largest single CPU cost of a replicated PUT). A
filesystem that refuses O_DIRECT (tmpfs) gets ordinary buffered writes.

A range bigger than ``SENDFILE_MIN`` is sent with sendfile(2) from a worker thread
(``ChunkReader.send_to``); a smaller one is read and sent in one piece.

Where chunk files live, their names and the space they take: ``blobnode.store``.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import struct
from types import TracebackType

from core.chunksum import DIGEST_SIZE, Algorithm, ChunkSum, compute

MAGIC_V1 = b"CAIRNCK1"
MAGIC_V2 = b"CAIRNCK2"
MAGIC = MAGIC_V2  # what new chunk files carry
HEADER_V1 = struct.Struct(">8sQ32s16x")
HEADER_V2 = struct.Struct(">8sQB7x32s8x")
HEADER_SIZE = HEADER_V2.size  # 64, as v1's: offsets never moved
assert HEADER_V1.size == HEADER_SIZE
ALIGN = 4096  # O_DIRECT wants buffer address, file offset and length aligned to the block size
O_DIRECT = getattr(os, "O_DIRECT", 0)
SENDFILE_MIN = 64 * 1024  # chunk reads bigger than this are sent with sendfile(2)
SEND_STALL = 30.0  # seconds a sendfile waits for a reader that takes nothing


class StoreError(Exception):
    def __init__(self, code: str, msg: str = "") -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


def no_space(exc: OSError) -> StoreError:
    """An OSError met while writing, as the StoreError a writer sees."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return StoreError("NoSpace" if full else "Internal", str(exc))


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# ---------------------------------------------------------------------- writing


class ChunkBuffers:
    """Page-aligned buffers for chunk files (header + payload), reused: a fresh 8 MiB
    buffer costs thousands of page faults, a pooled one none. At most ``keep`` idle
    buffers are kept; more concurrent puts than that allocate and free their own."""

    def __init__(self, keep: int = 6) -> None:
        self.keep = keep
        self._idle: list[mmap.mmap] = []

    def take(self, payload: int) -> mmap.mmap:
        need = _aligned(HEADER_SIZE + payload)
        try:
            buf = self._idle.pop()  # list.pop is atomic: callers may be worker threads
        except IndexError:
            return mmap.mmap(-1, need)
        if len(buf) >= need:
            return buf
        return mmap.mmap(-1, need)  # a bigger chunk than usual; the small one is dropped

    def give(self, buf: mmap.mmap) -> None:
        if len(self._idle) < self.keep:
            self._idle.append(buf)


class ChunkImage:
    """A chunk file being made in a pooled buffer: ``payload`` is where its bytes go
    (received straight into it); the header and the padding to the block size are
    written around them. A context manager: leaving it gives the buffer back."""

    def __init__(self, buffers: ChunkBuffers, size: int) -> None:
        self.size = size
        self._buffers = buffers
        self._buf: mmap.mmap | None = buffers.take(size)
        self._view = memoryview(self._buf)
        self.payload = self._view[HEADER_SIZE : HEADER_SIZE + size]

    def checksum(self, algorithm: Algorithm) -> ChunkSum:
        """The payload's checksum with ``algorithm``."""
        return compute(self.payload, algorithm)

    def write(self, path: str, checksum: ChunkSum, direct: bool) -> bool:
        """Write the chunk file ``path`` (a new temp file) and fsync it; True if that was
        with O_DIRECT (False: buffered, because it was not asked for or the filesystem
        refused it). On an error the file is removed and a StoreError raised."""
        assert self._buf is not None
        fd, direct = _create(path, direct)
        try:
            self._buf[:HEADER_SIZE] = pack_header(self.size, checksum)
            _write_file(fd, self._buf, HEADER_SIZE + self.size, direct)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            os.unlink(path)
            raise no_space(exc) from exc
        os.close(fd)
        return direct

    def close(self) -> None:
        if self._buf is None:
            return
        self.payload.release()
        self._view.release()
        self._buffers.give(self._buf)
        self._buf = None

    def __enter__(self) -> ChunkImage:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _create(path: str, direct: bool) -> tuple[int, bool]:
    """A new file: (fd, opened with O_DIRECT)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        if direct:
            try:
                return os.open(path, flags | O_DIRECT, 0o644), True
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise  # EINVAL: the filesystem refuses O_DIRECT (e.g. tmpfs)
        return os.open(path, flags, 0o644), False
    except OSError as exc:
        raise no_space(exc) from exc


def _write_file(fd: int, buf: mmap.mmap, length: int, direct: bool) -> None:
    """Write buf[:length] at offset 0. With O_DIRECT the write is rounded up to the block
    size (the padding zeroed) and the file then cut back to ``length``."""
    end = _aligned(length) if direct else length
    if end > length:
        buf[length:end] = bytes(end - length)
    view = memoryview(buf)
    try:
        pos = 0
        while pos < end:
            pos += os.pwrite(fd, view[pos:end], pos)
    finally:
        view.release()
    if end > length:
        os.ftruncate(fd, length)


# ---------------------------------------------------------------------- reading


def pack_header(size: int, checksum: ChunkSum) -> bytes:
    """A v2 header: the only kind written."""
    return HEADER_V2.pack(MAGIC_V2, size, checksum.algorithm, checksum.digest)


def parse_header(raw: bytes) -> tuple[int, ChunkSum]:
    """(chunk size, checksum) from a v1 or v2 header. StoreError(ChecksumMismatch) for
    anything else: too short, an unknown magic or algorithm (an unreadable header is a
    damaged chunk)."""
    if len(raw) != HEADER_SIZE:
        raise StoreError("ChecksumMismatch", "chunk file shorter than its header")
    magic = raw[:8]
    if magic == MAGIC_V2:
        _magic, size, algorithm, digest = HEADER_V2.unpack(raw)
        return size, _checksum(algorithm, digest)
    if magic == MAGIC_V1:
        _magic, size, sha = HEADER_V1.unpack(raw)
        return size, ChunkSum(Algorithm.SHA256, sha)
    raise StoreError("ChecksumMismatch", "bad chunk header")


def _checksum(algorithm: int, digest: bytes) -> ChunkSum:
    try:
        algo = Algorithm(algorithm)
        return ChunkSum(algo, digest[: DIGEST_SIZE[algo]])
    except ValueError:
        raise StoreError("ChecksumMismatch", f"unknown checksum algorithm {algorithm} in chunk header") from None


def read_header(path: str) -> tuple[int, ChunkSum]:
    """(chunk size, checksum) from a chunk file's header. FileNotFoundError if none."""
    with open(path, "rb") as f:
        return parse_header(f.read(HEADER_SIZE))


def payload_size(path: str) -> int:
    """The bytes of chunk a file holds (its size less the header), from its length."""
    return max(0, os.path.getsize(path) - HEADER_SIZE)


class ChunkReader:
    """Bytes [offset, offset+length) of a chunk file, open: ``size`` and ``checksum`` are
    the whole chunk's (from its header), ``length`` the range's, clamped to the chunk.
    A file that ends before the range does is refused on opening, before anything is
    sent. A context manager: leaving it closes the file."""

    def __init__(self, path: str, offset: int = 0, length: int | None = None) -> None:
        self._fd = os.open(path, os.O_RDONLY)  # FileNotFoundError for the caller
        try:
            size, checksum = parse_header(os.pread(self._fd, HEADER_SIZE, 0))
            offset = max(0, min(offset, size))
            length = size - offset if length is None else max(0, min(length, size - offset))
            if os.fstat(self._fd).st_size < HEADER_SIZE + offset + length:
                raise StoreError("ChecksumMismatch", "chunk file truncated")
        except BaseException:
            self.close()
            raise
        self.size, self.checksum = size, checksum
        self.length = length
        self._at = HEADER_SIZE + offset
        self.data: bytes | None = None  # see ``prepare_send``

    def read(self) -> bytearray:
        """The range's bytes. Not verified here: the reader checks the checksum of what
        it receives end to end."""
        buf = bytearray(self.length)
        view = memoryview(buf)
        pos = 0
        while pos < self.length:
            got = os.preadv(self._fd, [view[pos:]], self._at + pos)
            if got == 0:
                raise StoreError("ChecksumMismatch", "chunk file truncated")
            pos += got
        return buf

    def prepare_send(self) -> None:
        """In a worker thread, before the range is sent: one up to SENDFILE_MIN is read
        at once into ``data`` (and the file closed); a larger one is left for
        ``send_to`` (``data`` None), its whole range already asked of the disk: chunks
        are written with O_DIRECT, so a first read is cold, and one deep read beats
        sendfile's page-by-page readahead (a 64 MiB GET right after its PUT: ~400 ->
        ~650 MB/s)."""
        if self.length > SENDFILE_MIN:
            try:
                os.posix_fadvise(self._fd, self._at, self.length, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass  # only a hint
            return
        try:
            self.data = os.pread(self._fd, self.length, self._at)
        finally:
            self.close()

    def send_to(self, sock_fd: int) -> None:
        """Send the range on a non-blocking socket, in a worker thread (a cold file
        blocks on the disk). The request owns the connection, so nothing else touches
        the socket meanwhile. A file that ends early or a reader that stalls for
        SEND_STALL raises OSError: the connection is then closed, and the reader sees a
        payload cut short, never wrong bytes."""
        poller = select.poll()
        poller.register(sock_fd, select.POLLOUT)
        offset, length = self._at, self.length
        while length > 0:
            try:
                sent = os.sendfile(sock_fd, self._fd, offset, length)
            except BlockingIOError:
                if not poller.poll(SEND_STALL * 1000):
                    raise TimeoutError("reader took nothing for 30 s") from None
                continue
            if sent == 0:
                raise OSError("chunk file ended early")
            offset += sent
            length -= sent

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
