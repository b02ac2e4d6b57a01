"""The chunk store: a blob node's disk behind one boundary. The server and the scrubber
ask it for chunks by id; the files, their headers (``blobnode.chunkfile``), descriptors,
offsets and buffers stay in here.

Layout under the data directory:
  node_id                    this node's identity, made once
  chunks/ab/cd/<id>          one chunk file per chunk (``blobnode.chunkfile``)
  tmp/                       writes in progress (emptied at start-up)
  quarantine/<id>            corrupt chunks the scrubber moved out of ``chunks/``

Durability: a put is acknowledged only after its bytes matched the checksum the writer
sent (``core.chunksum``: XXH3-128, or SHA-256 from older writers and for chunks written
before XXH3-128; the file's header records which), were fsynced in a temp file, renamed into place and the directory fsynced.
A writer (``ChunkStore.writer``) hands out the page-aligned pooled memory the payload is
received into, from which the chunk file is written with O_DIRECT.
A full disk is refused up front: a put that would leave less than ``reserve`` bytes
free gets NoSpace before a byte is written (room stays for the directory fsyncs, the
quarantine and the filesystem's own metadata), and an ENOSPC met mid-write also becomes
NoSpace with the temp file removed. Either way nothing partial is left behind and the
writer places the replica elsewhere.
Chunk ids are 32 lowercase hex digits chosen by the frontend, never user input; any
other id is refused before it touches a path.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from types import TracebackType

from blobnode.chunkfile import (
    HEADER_SIZE,
    O_DIRECT,
    ChunkBuffers,
    ChunkImage,
    ChunkReader,
    StoreError,
    fsync_dir,
    no_space,
    payload_size,
    read_header,
)
from core import chunksum
from core.chunksum import ChunkSum

__all__ = ["ChunkReader", "ChunkStore", "ChunkWriter", "StoreError", "check_id"]

_ID = re.compile(r"^[0-9a-f]{32}$")


def _verifier(checksum: object) -> ChunkSum:
    """The writer's checksum value, parsed; one this node cannot verify is refused as a
    mismatch (nothing unverified is ever stored)."""
    try:
        return chunksum.parse(checksum)
    except ValueError as exc:
        raise StoreError("ChecksumMismatch", str(exc)) from None


def check_id(chunk_id: str) -> str:
    if not isinstance(chunk_id, str) or not _ID.fullmatch(chunk_id):
        raise StoreError("BadRequest", "invalid chunk id")
    return chunk_id


class ChunkWriter:
    """A chunk of ``size`` bytes on its way in: receive them into ``memory``, then
    ``commit`` (in a worker thread). A context manager: leaving it returns the memory
    to the store's pool, committed or not."""

    def __init__(self, store: ChunkStore, size: int) -> None:
        self._store = store
        self._image = ChunkImage(store.buffers, size)
        self.memory: memoryview = self._image.payload

    def commit(self, chunk_id: str, checksum: str) -> bool:
        """Store the chunk durably (see ``ChunkStore.put``)."""
        return self._store._commit(self._image, chunk_id, checksum)

    def close(self) -> None:
        self._image.close()

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ChunkStore:
    def __init__(self, root: str, reserve: int = 0) -> None:
        self.root = os.path.abspath(root)
        self.reserve = reserve
        self.chunk_dir = os.path.join(self.root, "chunks")
        self.tmp_dir = os.path.join(self.root, "tmp")
        self.quarantine_dir = os.path.join(self.root, "quarantine")
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
            fsync_dir(self.root)
            return node_id

    def _scan(self) -> tuple[int, int]:
        used = count = 0
        for dirpath, _dirs, files in os.walk(self.chunk_dir):
            for name in files:
                used += max(0, payload_size(os.path.join(dirpath, name)))
                count += 1
        return used, count

    def path(self, chunk_id: str) -> str:
        check_id(chunk_id)
        return os.path.join(self.chunk_dir, chunk_id[:2], chunk_id[2:4], chunk_id)

    def holds(self, chunk_id: str) -> bool:
        """A chunk file of this id is in place (intact or not)."""
        return os.path.exists(self.path(chunk_id))

    def capacity(self) -> tuple[int, int]:
        """(total bytes of the disk, bytes free on it)."""
        usage = shutil.disk_usage(self.root)
        return usage.total, usage.free

    # ------------------------------------------------------------------ writes

    def writer(self, size: int) -> ChunkWriter:
        """The way in for a chunk of ``size`` bytes (received straight into
        ``writer.memory``, then ``writer.commit(chunk_id, checksum)``)."""
        return ChunkWriter(self, size)

    def put(self, chunk_id: str, checksum: str, data: bytes | bytearray | memoryview) -> bool:
        """Store a chunk durably, verified against ``checksum`` (a ``core.chunksum``
        value, whose algorithm the file's header records). Returns False if an identical
        chunk was already there."""
        with self.writer(len(data)) as writer:
            writer.memory[:] = data
            return writer.commit(chunk_id, checksum)

    def _commit(self, image: ChunkImage, chunk_id: str, checksum: str) -> bool:
        final = self.path(chunk_id)
        size = image.size
        expected = _verifier(checksum)
        if image.checksum(expected.algorithm) != expected:
            raise StoreError("ChecksumMismatch", f"chunk does not match its {expected.algorithm.name} checksum")
        if os.path.exists(final) and self._intact(chunk_id, expected, size):
            return False  # an intact copy is already there; a damaged one is replaced below
        if self.capacity()[1] - size - HEADER_SIZE < self.reserve:
            raise StoreError("NoSpace", f"disk full: fewer than {self.reserve} bytes would stay free")
        tmp = os.path.join(self.tmp_dir, f"{chunk_id}.{uuid.uuid4().hex[:8]}")
        if not image.write(tmp, expected, self.direct):
            self.direct = False  # off, or refused (e.g. tmpfs): buffered writes from now on
        try:
            self._make_parents(final)
        except OSError as exc:
            os.unlink(tmp)
            raise no_space(exc) from exc
        with self._lock:  # the accounting must see whether the rename replaced a file
            try:
                replaced = payload_size(final)
            except FileNotFoundError:
                replaced = None
            os.rename(tmp, final)
            self.used += size - (replaced or 0)
            self.count += replaced is None
        fsync_dir(os.path.dirname(final))
        return True

    def _intact(self, chunk_id: str, expected: ChunkSum, size: int) -> bool:
        """The file in place is this chunk, undamaged, under this very checksum."""
        try:
            with self.reader(chunk_id) as reader:
                stored_size, stored, data = reader.size, reader.checksum, reader.read()
        except (StoreError, OSError):
            return False
        return stored_size == size and stored == expected and expected.matches(data)

    def _make_parents(self, final: str) -> None:
        leaf = os.path.dirname(final)
        if os.path.isdir(leaf):
            return
        mid = os.path.dirname(leaf)
        if not os.path.isdir(mid):
            os.makedirs(mid, exist_ok=True)
            fsync_dir(self.chunk_dir)
        os.makedirs(leaf, exist_ok=True)
        fsync_dir(mid)

    def delete(self, chunk_id: str) -> bool:
        path = self.path(chunk_id)
        try:
            size = payload_size(path)
            os.unlink(path)
        except FileNotFoundError:
            return False
        with self._lock:
            self.used -= size
            self.count -= 1
        return True

    # ------------------------------------------------------------------ reads

    def stat(self, chunk_id: str) -> tuple[int, str]:
        """(chunk size, its checksum's value) from the header."""
        try:
            size, checksum = read_header(self.path(chunk_id))
        except FileNotFoundError:
            raise StoreError("NotFound", chunk_id) from None
        return size, checksum.value

    def reader(self, chunk_id: str, offset: int = 0, length: int | None = None) -> ChunkReader:
        """Bytes [offset, offset+length) of a chunk, open (a ``ChunkReader``: close it,
        or use it as a context manager). A file that ends before the range does is
        refused here, before anything is sent."""
        path = self.path(chunk_id)
        try:
            return ChunkReader(path, offset, length)
        except FileNotFoundError:
            raise StoreError("NotFound", chunk_id) from None

    def open_for_send(self, chunk_id: str, offset: int = 0, length: int | None = None) -> ChunkReader:
        """In a worker thread: ``reader`` made ready to send (``ChunkReader.prepare_send``):
        a small range is in its ``data``, a large one waits for ``send_to``."""
        reader = self.reader(chunk_id, offset, length)
        try:
            reader.prepare_send()
        except BaseException:
            reader.close()
            raise
        return reader

    def read(self, chunk_id: str, offset: int = 0, length: int | None = None) -> tuple[int, str, bytearray]:
        """(chunk size, stored checksum's value, the bytes [offset, offset+length)). Not
        verified here: the reader checks the checksum of what it receives end to end."""
        with self.reader(chunk_id, offset, length) as reader:
            return reader.size, reader.checksum.value, reader.read()

    def verify(self, chunk_id: str) -> tuple[bool, int]:
        """Re-read a chunk and check it with its header's algorithm: (intact, bytes read)."""
        try:
            with self.reader(chunk_id) as reader:
                size, checksum, data = reader.size, reader.checksum, reader.read()
        except StoreError as exc:
            return exc.code == "NotFound", 0
        return len(data) == size and checksum.matches(data), len(data)

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

    # ------------------------------------------------------------------ quarantine

    def quarantine(self, chunk_id: str) -> None:
        """Move a corrupt chunk out of the way (kept for inspection, never served)."""
        path = self.path(chunk_id)
        os.makedirs(self.quarantine_dir, exist_ok=True)
        try:
            size = max(0, payload_size(path))
            os.replace(path, os.path.join(self.quarantine_dir, chunk_id))
        except FileNotFoundError:
            return
        fsync_dir(os.path.dirname(path))
        with self._lock:
            self.used -= size
            self.count -= 1

    def quarantined(self) -> list[str]:
        """The ids of the chunks in ``quarantine/``, in order (other files are ignored)."""
        try:
            names = sorted(os.listdir(self.quarantine_dir))
        except FileNotFoundError:
            return []
        return [name for name in names if _ID.fullmatch(name)]

    def quarantine_stamp(self, chunk_id: str) -> tuple[int, int] | None:
        """(inode, mtime in ns) of a quarantined chunk's file: the same chunk quarantined
        again is another file. None if there is none (or it cannot be stat'ed)."""
        try:
            st = os.stat(os.path.join(self.quarantine_dir, chunk_id))
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns
