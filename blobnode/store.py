"""The chunk store: all of a blob node's disk layout behind one boundary.

Layout under the data directory:
  node_id                    this node's identity, made once
  chunks/ab/cd/<id>          one file per chunk: a 64-byte header, then the bytes
  tmp/                       writes in progress (emptied at start-up)

A chunk file's header is ``b"CAIRNCK1" | u64 size | sha256 (32 bytes) | 16 zero bytes``,
so a chunk can be verified at rest (the scrubber) without asking raftmeta.

Durability: a put is acknowledged only after its bytes matched the SHA-256 the writer
sent, were fsynced in a temp file, renamed into place and the directory fsynced.
Chunk files are written with O_DIRECT from page-aligned buffers that the payload was
received into: the bytes go from the socket to the disk with no copy into the page
cache (that copy was the largest single CPU cost of a replicated PUT). A filesystem that
refuses O_DIRECT (tmpfs) gets ordinary buffered writes.
A full disk is refused up front: a put that would leave less than ``reserve`` bytes
free gets NoSpace before a byte is written (room stays for the directory fsyncs, the
quarantine and the filesystem's own metadata), and an ENOSPC met mid-write also becomes
NoSpace with the temp file removed. Either way nothing partial is left behind and the
writer places the replica elsewhere.
Chunk ids are 32 lowercase hex digits chosen by the frontend, never user input; any
other id is refused before it touches a path.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import re
import shutil
import struct
import threading
import uuid

MAGIC = b"CAIRNCK1"
HEADER = struct.Struct(">8sQ32s16x")
HEADER_SIZE = HEADER.size  # 64
_ID = re.compile(r"^[0-9a-f]{32}$")
ALIGN = 4096  # O_DIRECT wants buffer address, file offset and length aligned to the block size
O_DIRECT = getattr(os, "O_DIRECT", 0)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


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


class StoreError(Exception):
    def __init__(self, code: str, msg: str = "") -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_id(chunk_id: str) -> str:
    if not isinstance(chunk_id, str) or not _ID.fullmatch(chunk_id):
        raise StoreError("BadRequest", "invalid chunk id")
    return chunk_id


def _no_space(exc: OSError) -> StoreError:
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return StoreError("NoSpace" if full else "Internal", str(exc))


class ChunkStore:
    def __init__(self, root: str, reserve: int = 0) -> None:
        self.root = os.path.abspath(root)
        self.reserve = reserve
        self.chunk_dir = os.path.join(self.root, "chunks")
        self.tmp_dir = os.path.join(self.root, "tmp")
        os.makedirs(self.chunk_dir, exist_ok=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        os.makedirs(self.tmp_dir)
        self.node_id = self._load_node_id()
        self._lock = threading.Lock()
        self.used, self.count = self._scan()
        self.buffers = ChunkBuffers()
        self.direct = bool(O_DIRECT)  # cleared the first time the filesystem refuses it

    def _load_node_id(self) -> str:
        path = os.path.join(self.root, "node_id")
        try:
            with open(path) as f:
                return f.read().strip()
        except FileNotFoundError:
            node_id = uuid.uuid4().hex[:12]
            with open(path + ".tmp", "w") as f:
                f.write(node_id)
                f.flush()
                os.fsync(f.fileno())
            os.replace(path + ".tmp", path)
            _fsync_dir(self.root)
            return node_id

    def _scan(self) -> tuple[int, int]:
        used = count = 0
        for dirpath, _dirs, files in os.walk(self.chunk_dir):
            for name in files:
                used += max(0, os.path.getsize(os.path.join(dirpath, name)) - HEADER_SIZE)
                count += 1
        return used, count

    def path(self, chunk_id: str) -> str:
        check_id(chunk_id)
        return os.path.join(self.chunk_dir, chunk_id[:2], chunk_id[2:4], chunk_id)

    def capacity(self) -> tuple[int, int]:
        """(total bytes of the disk, bytes free on it)."""
        usage = shutil.disk_usage(self.root)
        return usage.total, usage.free

    # ------------------------------------------------------------------ writes

    def put(self, chunk_id: str, sha256_hex: str, data: bytes | bytearray | memoryview) -> bool:
        """Store a chunk durably. Returns False if an identical chunk was already there."""
        buf = self.buffers.take(len(data))
        try:
            buf[HEADER_SIZE : HEADER_SIZE + len(data)] = data
            return self.put_buffer(chunk_id, sha256_hex, buf, len(data))
        finally:
            self.buffers.give(buf)

    def put_buffer(self, chunk_id: str, sha256_hex: str, buf: mmap.mmap, size: int) -> bool:
        """``put`` of a payload already in ``buf[HEADER_SIZE : HEADER_SIZE + size]`` (a
        buffer from ``self.buffers``, received straight into it). The first HEADER_SIZE
        bytes and the padding to the block size are overwritten."""
        final = self.path(chunk_id)
        data = memoryview(buf)[HEADER_SIZE : HEADER_SIZE + size]
        try:
            digest = hashlib.sha256(data).digest()
        finally:
            data.release()
        if digest.hex() != sha256_hex:
            raise StoreError("ChecksumMismatch", "chunk does not match its sha256")
        if os.path.exists(final) and self._intact(final, digest, size):
            return False  # an intact copy is already there; a damaged one is replaced below
        if self.capacity()[1] - size - HEADER_SIZE < self.reserve:
            raise StoreError("NoSpace", f"disk full: fewer than {self.reserve} bytes would stay free")
        tmp = os.path.join(self.tmp_dir, f"{chunk_id}.{uuid.uuid4().hex[:8]}")
        fd, direct = self._create(tmp)
        try:
            buf[:HEADER_SIZE] = HEADER.pack(MAGIC, size, digest)
            _write_file(fd, buf, HEADER_SIZE + size, direct)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            os.unlink(tmp)
            raise _no_space(exc) from exc
        os.close(fd)
        try:
            self._make_parents(final)
        except OSError as exc:
            os.unlink(tmp)
            raise _no_space(exc) from exc
        with self._lock:  # the accounting must see whether the rename replaced a file
            try:
                replaced = os.path.getsize(final) - HEADER_SIZE
            except FileNotFoundError:
                replaced = None
            os.rename(tmp, final)
            self.used += size - (replaced or 0)
            self.count += replaced is None
        _fsync_dir(os.path.dirname(final))
        return True

    def _create(self, tmp: str) -> tuple[int, bool]:
        """A new temp file: (fd, opened with O_DIRECT)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            if self.direct:
                try:
                    return os.open(tmp, flags | O_DIRECT, 0o644), True
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self.direct = False  # e.g. tmpfs: buffered writes from now on
            return os.open(tmp, flags, 0o644), False
        except OSError as exc:
            raise _no_space(exc) from exc

    def _intact(self, path: str, digest: bytes, size: int) -> bool:
        try:
            stored_size, stored_sha, data = self.read(os.path.basename(path))
        except (StoreError, OSError):
            return False
        return stored_size == size and bytes.fromhex(stored_sha) == digest and hashlib.sha256(data).digest() == digest

    def _make_parents(self, final: str) -> None:
        leaf = os.path.dirname(final)
        if os.path.isdir(leaf):
            return
        mid = os.path.dirname(leaf)
        if not os.path.isdir(mid):
            os.makedirs(mid, exist_ok=True)
            _fsync_dir(self.chunk_dir)
        os.makedirs(leaf, exist_ok=True)
        _fsync_dir(mid)

    def delete(self, chunk_id: str) -> bool:
        path = self.path(chunk_id)
        try:
            size = os.path.getsize(path) - HEADER_SIZE
            os.unlink(path)
        except FileNotFoundError:
            return False
        with self._lock:
            self.used -= size
            self.count -= 1
        return True

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _parse_header(raw: bytes) -> tuple[int, bytes]:
        if len(raw) != HEADER_SIZE:
            raise StoreError("ChecksumMismatch", "chunk file shorter than its header")
        magic, size, sha = HEADER.unpack(raw)
        if magic != MAGIC:
            raise StoreError("ChecksumMismatch", "bad chunk header")
        return size, sha

    def _read_header(self, path: str) -> tuple[int, bytes]:
        with open(path, "rb") as f:
            return self._parse_header(f.read(HEADER_SIZE))

    def stat(self, chunk_id: str) -> tuple[int, str]:
        try:
            size, sha = self._read_header(self.path(chunk_id))
        except FileNotFoundError:
            raise StoreError("NotFound", chunk_id) from None
        return size, sha.hex()

    def read(self, chunk_id: str, offset: int = 0, length: int | None = None) -> tuple[int, str, bytearray]:
        """(chunk size, stored sha256, the bytes [offset, offset+length)). Not verified here:
        the reader checks the SHA-256 of what it receives end to end."""
        fd, size, sha, at, length = self.open_range(chunk_id, offset, length)
        try:
            buf = bytearray(length)
            view = memoryview(buf)
            pos = 0
            while pos < length:
                got = os.preadv(fd, [view[pos:]], at + pos)
                if got == 0:
                    raise StoreError("ChecksumMismatch", "chunk file truncated")
                pos += got
            return size, sha, buf
        finally:
            os.close(fd)

    def open_range(self, chunk_id: str, offset: int = 0, length: int | None = None) -> tuple[int, int, str, int, int]:
        """For reading bytes [offset, offset+length) of a chunk: (open fd, chunk size,
        stored sha256, file offset, length). The caller closes the fd. A file that ends
        before the range does is refused here, before anything is sent."""
        try:
            fd = os.open(self.path(chunk_id), os.O_RDONLY)
        except FileNotFoundError:
            raise StoreError("NotFound", chunk_id) from None
        try:
            size, sha = self._parse_header(os.pread(fd, HEADER_SIZE, 0))
            offset = max(0, min(offset, size))
            length = size - offset if length is None else max(0, min(length, size - offset))
            if os.fstat(fd).st_size < HEADER_SIZE + offset + length:
                raise StoreError("ChecksumMismatch", "chunk file truncated")
            return fd, size, sha.hex(), HEADER_SIZE + offset, length
        except BaseException:
            os.close(fd)
            raise

    def verify(self, chunk_id: str) -> tuple[bool, int]:
        """Re-read a chunk and check it against its header: (intact, bytes read)."""
        try:
            size, sha, data = self.read(chunk_id)
        except StoreError as exc:
            return exc.code == "NotFound", 0
        return len(data) == size and hashlib.sha256(data).hexdigest() == sha, len(data)

    def quarantine(self, chunk_id: str) -> None:
        """Move a corrupt chunk out of the way (kept for inspection, never served)."""
        path = self.path(chunk_id)
        qdir = os.path.join(self.root, "quarantine")
        os.makedirs(qdir, exist_ok=True)
        try:
            size = max(0, os.path.getsize(path) - HEADER_SIZE)
            os.replace(path, os.path.join(qdir, chunk_id))
        except FileNotFoundError:
            return
        _fsync_dir(os.path.dirname(path))
        with self._lock:
            self.used -= size
            self.count -= 1

    def list(self, after: str = "", limit: int = 1000, older_than: float | None = None) -> tuple[list[str], bool]:
        """Chunk ids in order, after ``after``; (ids, more). With ``older_than`` (a Unix
        time), only chunks whose file was last written before it."""
        ids: list[str] = []
        for a in sorted(os.listdir(self.chunk_dir)):
            if a < after[:2]:
                continue
            for b in sorted(os.listdir(os.path.join(self.chunk_dir, a))):
                if a + b < after[:4]:
                    continue
                for name in sorted(os.listdir(os.path.join(self.chunk_dir, a, b))):
                    if name > after:
                        if older_than is not None:
                            try:
                                if os.stat(os.path.join(self.chunk_dir, a, b, name)).st_mtime >= older_than:
                                    continue
                            except FileNotFoundError:
                                continue
                        ids.append(name)
                        if len(ids) > limit:
                            return ids[:limit], True
        return ids, False
