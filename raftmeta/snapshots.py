"""Raft snapshots of the SQLite state machine that never hold up the Raft thread.

``Snapshots`` stands in for PySyncObj 0.3.17's ``Serializer`` (same methods, installed by
``raftmeta.node``). A snapshot file is a SQLite database with one extra table,
``raft_snapshot``, holding PySyncObj's pickled ``(last entry, entry before, cluster)``.

- production (``serialize``): PySyncObj calls it on the Raft thread right after applying
  every entry up to the index the snapshot claims, so a read transaction begun there on a
  connection of our own sees all of them (and nothing later: the Raft thread is the only
  writer). A background thread copies that read transaction with SQLite's backup API
  (WAL: the writer goes on), fsyncs the copy, renames it into place and fsyncs the
  directory; only then does ``checkSerializing`` answer SUCCESS, after which PySyncObj
  drops the log up to the snapshot. Until then it answers SERIALIZING.
- transmission (``getTransmissionData``): a background reader per follower reads the file
  ahead in parts of ``batch_bytes`` (a bounded queue); the Raft thread takes what is ready
  and never reads the file itself.
- install (``setTransmissionData`` + ``deserialize``): the parts are written to a file,
  fsynced in the background as they come; once complete, the file is renamed into place
  as the live database (``MetaState.replace_with``), no copy. A fresh snapshot of it is
  then produced in the background, as this node's own snapshot file; a marker records the
  install until then, so a crash in between still leaves a snapshot at start-up.
- restart: the local snapshot is restored only when newer than the live database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from pysyncobj.config import SERIALIZER_STATE

from raftmeta.state import MetaState

log = logging.getLogger("raftmeta")

BACKUP_STEP_PAGES = 1024  # pages copied per backup step (the job checks for cancellation between)
FLUSH_EVERY = 64 << 20  # a snapshot being written is flushed to disk every this many bytes
BACKGROUND_NICE = 19  # the snapshot thread's own scheduling priority (Linux: per thread)
READ_AHEAD_PARTS = 64  # parts a transmission reads ahead of the Raft thread
FSYNC_EVERY = 8 << 20  # a received snapshot is fsynced in the background every this many bytes


def fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_snapshot(src: sqlite3.Connection, dst_path: str, raft_data: Any,
                   cancelled: Callable[[], bool] = lambda: False) -> None:
    """Copy ``src``'s database as its open read transaction sees it into ``dst_path`` (a
    new file, self-contained: rollback journal mode), add ``raft_data``, fsync it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dst_path)

    flush_pages = max(1, FLUSH_EVERY // (src.execute("PRAGMA page_size").fetchone()[0] or 4096))
    flushed, fd = 0, -1  # pages copied at the last flush; the copy's fd, opened at the first

    def progress(status: int, remaining: int, total: int) -> None:
        nonlocal fd, flushed
        if cancelled():
            raise InterruptedError("snapshot cancelled")
        if total - remaining - flushed >= flush_pages:
            # written back in steps: one fsync of the whole copy at the end would put
            # hundreds of MB of dirty pages ahead of the journal's own syncs
            if fd < 0:
                fd = os.open(dst_path, os.O_RDONLY)
            os.fdatasync(fd)
            flushed = total - remaining

    dst = sqlite3.connect(dst_path, isolation_level=None)
    try:
        src.backup(dst, pages=BACKUP_STEP_PAGES, progress=progress)
        dst.execute("PRAGMA journal_mode=DELETE")
        dst.execute("CREATE TABLE raft_snapshot (data BLOB)")
        dst.execute("INSERT INTO raft_snapshot VALUES (?)", (pickle.dumps(raft_data),))
    finally:
        dst.close()
        if fd >= 0:
            os.close(fd)
    _fsync_file(dst_path)


def background_priority() -> None:
    """Lower the calling thread's CPU priority (Linux schedules threads one by one): the
    snapshot copy then takes the cores the Raft, RPC and apply threads leave idle."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


def staggered_threshold(first_index: int, every: int, position: int, members: int) -> int:
    """How many log entries this replica lets grow before its next snapshot, so that the
    replicas of a group take theirs at different moments (PySyncObj starts one once the
    log holds ``logCompactionMinEntries``; with one value for all, every replica copies
    its database at the same index, and a commit then waits for replicas that all
    compete for disk and CPU). The replica at ``position`` of ``members`` (sorted by
    address) snapshots at indexes congruent to ``position * every // members`` modulo
    ``every``: the next such index at least ``every // 2`` past ``first_index`` (its log's
    first entry, the last snapshot's). So the answer is within [every/2, 3*every/2), every
    replica still snapshots once per ``every`` entries on average, and a replica that
    restarted or joined falls back into its own phase by itself."""
    if members <= 1 or every < 2:
        return every
    phase = (position % members) * every // members
    earliest = first_index + every // 2
    return every // 2 + (phase - earliest) % every


def read_snapshot(path: str) -> tuple[Any, int]:
    """(PySyncObj's raft data, the applied index stored in the state) of a snapshot file."""
    snap = sqlite3.connect(path, isolation_level=None)
    try:
        raft_data = pickle.loads(snap.execute("SELECT data FROM raft_snapshot").fetchone()[0])
        row = snap.execute("SELECT v FROM meta WHERE k='applied'").fetchone()
    finally:
        snap.close()
    return raft_data, int(row[0]) if row else 0


def begin_read(db_path: str) -> sqlite3.Connection:
    """A new connection with a read transaction open on ``db_path``'s current content."""
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN")
    conn.execute("SELECT v FROM meta WHERE k='applied'").fetchone()  # the transaction's snapshot starts here
    return conn


class _Job:
    """One snapshot being produced in the background from an open read transaction."""

    def __init__(self, owner: Snapshots, conn: sqlite3.Connection, raft_data: Any, claim: int) -> None:
        self.owner, self.conn, self.raft_data, self.claim = owner, conn, raft_data, claim
        self.cancel = False
        self.renaming = False  # set (under owner.lock) just before the file is renamed into place
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="raftmeta-snapshot", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        owner, tmp = self.owner, self.owner.path + ".tmp"
        background_priority()
        try:
            try:
                write_snapshot(self.conn, tmp, self.raft_data, lambda: self.cancel)
            finally:
                self.conn.close()  # ends the read transaction
            with owner.lock:
                if self.cancel:
                    raise InterruptedError("snapshot cancelled")
                self.renaming = True
            os.replace(tmp, owner.path)
            fsync_dir(os.path.dirname(os.path.abspath(owner.path)))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(owner.marker)  # an install's own snapshot is durable now
        except BaseException as exc:  # noqa: BLE001 (reported to PySyncObj as FAILED)
            self.error = exc
            if not self.cancel:
                log.exception("snapshot at index %d failed", self.claim)


class _Sender:
    """Reads one snapshot file ahead for one follower: parts ``(data, first, last)``, the
    last one empty (PySyncObj's framing)."""

    def __init__(self, path: str, batch: int) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 (closed by the reader thread)
        self.batch = batch
        self.parts: queue.Queue[Any] = queue.Queue(READ_AHEAD_PARTS)
        self.stop = False
        threading.Thread(target=self._run, name="raftmeta-snapshot-send", daemon=True).start()

    def _run(self) -> None:
        first = True
        try:
            with self.file:
                while not self.stop:
                    data = self.file.read(self.batch)
                    part: Any = (data, first, not data)
                    first = False
                    while not self.stop:
                        try:
                            self.parts.put(part, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if not data:
                        return
        except OSError as exc:
            self.parts.put(exc)


class Snapshots:
    """PySyncObj's ``Serializer`` interface over the live SQLite database (see module doc).
    Every method but ``close`` is called on the Raft thread."""

    def __init__(self, path: str, batch_bytes: int, state: MetaState,
                 on_installed: Callable[[], None] = lambda: None) -> None:
        self.path = path  # PySyncObj's fullDumpFile
        self.marker = path + ".installed"
        self.batch = batch_bytes
        self.state = state
        self.on_installed = on_installed
        self.lock = threading.Lock()
        self.job: _Job | None = None
        self.senders: dict[Any, _Sender] = {}
        self.incoming: Any = None  # the file a snapshot being received is written to
        self.incoming_bytes = 0
        self.fsyncer: threading.Thread | None = None
        self.received: str | None = None  # a complete received snapshot, for ``deserialize``
        self._recover_install()

    def _recover_install(self) -> None:
        """A crash after an install and before its own snapshot was durable: write it now
        (start-up, before Raft runs) from the installed database, if it is in place."""
        if not os.path.exists(self.marker):
            return
        with open(self.marker, "rb") as f:
            raft_data, applied = pickle.load(f)
        if self.state.applied_index() >= applied:
            log.info("writing the snapshot of the database installed at index %d", applied)
            conn = begin_read(self.state.path)
            try:
                write_snapshot(conn, self.path + ".tmp", raft_data)
            finally:
                conn.close()
            os.replace(self.path + ".tmp", self.path)
            fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        os.unlink(self.marker)

    # ---------------------------------------------------------------- production

    def checkSerializing(self) -> tuple[int, int | None]:  # noqa: N802 (PySyncObj's names)
        job = self.job
        if job is None:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        if job.thread.is_alive():
            return SERIALIZER_STATE.SERIALIZING, job.claim
        self.job = None
        if job.error is not None:
            return SERIALIZER_STATE.FAILED, job.claim
        self._drop_senders()  # they send the previous file: start again with the new one
        return SERIALIZER_STATE.SUCCESS, job.claim

    def serialize(self, data: Any, claim: int) -> None:
        """Start a snapshot of everything applied so far (PySyncObj calls it right after
        applying the entries up to ``data[1]``, the last it claims)."""
        if self.job is not None:
            return
        self._start(data[1:], claim)

    def _start(self, raft_data: Any, claim: int) -> None:
        self.job = _Job(self, begin_read(self.state.path), raft_data, claim)

    def cancel_job(self) -> None:
        job = self.job
        if job is not None:
            with self.lock:
                job.cancel = True
            job.thread.join()
            self.job = None

    # ------------------------------------------------------------ transmission

    def getTransmissionData(self, node: Any) -> tuple[bytes, bool, bool] | None:  # noqa: N802
        sender = self.senders.get(node)
        if sender is None:
            with self.lock:
                if self.job is not None and self.job.renaming:
                    return None  # the file is being replaced: wait for SUCCESS
                if not os.path.exists(self.path):
                    return None
                try:
                    sender = self.senders[node] = _Sender(self.path, self.batch)
                except OSError:
                    log.exception("cannot open the snapshot to send")
                    return None
        try:
            part = sender.parts.get_nowait()
        except queue.Empty:
            return None
        if isinstance(part, BaseException):
            log.error("reading the snapshot to send failed: %r", part)
            self.cancelTransmisstion(node)
            return None
        if part[2]:
            self.senders.pop(node, None)
        return part

    def cancelTransmisstion(self, node: Any) -> None:  # noqa: N802 (PySyncObj's spelling)
        sender = self.senders.pop(node, None)
        if sender is not None:
            sender.stop = True

    def _drop_senders(self) -> None:
        for node in list(self.senders):
            self.cancelTransmisstion(node)

    # ----------------------------------------------------------------- install

    def setTransmissionData(self, data: Any) -> bool:  # noqa: N802
        """Write one received part; True once the whole snapshot is durable on disk."""
        if data is None:
            return False
        part, first, last = data
        tmp = self.path + ".1.tmp"
        if first:
            self._close_incoming()
            self.incoming = open(tmp, "wb", buffering=0)  # noqa: SIM115
            self.incoming_bytes = 0
        elif self.incoming is None:
            return False
        try:
            self.incoming.write(part)
            self.incoming_bytes += len(part)
            if self.incoming_bytes >= FSYNC_EVERY and (self.fsyncer is None or not self.fsyncer.is_alive()):
                self.incoming_bytes = 0
                self.fsyncer = threading.Thread(target=os.fsync, args=(self.incoming.fileno(),), daemon=True)
                self.fsyncer.start()
            if not last:
                return False
            self._join_fsyncer()
            os.fsync(self.incoming.fileno())  # what the background fsyncs left: at most a few MiB
        except OSError:
            log.exception("writing a received snapshot failed")
            self._close_incoming()
            return False
        self._close_incoming()
        self.received = tmp
        return True

    def _join_fsyncer(self) -> None:
        if self.fsyncer is not None:
            self.fsyncer.join()
            self.fsyncer = None

    def _close_incoming(self) -> None:
        self._join_fsyncer()
        if self.incoming is not None:
            self.incoming.close()
            self.incoming = None

    def deserialize(self) -> tuple[Any, ...]:
        """PySyncObj's snapshot load: a received one (install), or ours at start-up."""
        received, self.received = self.received, None
        if received is not None:
            return (None, *self._install(received))
        raft_data, applied = read_snapshot(self.path)
        if applied > self.state.applied_index():  # keep whichever is newer
            log.info("restoring state from snapshot at index %d", applied)
            snap = sqlite3.connect(self.path, isolation_level=None)
            try:
                self.state.restore_from(snap)
            finally:
                snap.close()
        return (None, *raft_data)

    def _install(self, received: str) -> Any:
        self.cancel_job()  # it reads the database about to be replaced
        raft_data, applied = read_snapshot(received)
        with open(self.marker + ".tmp", "wb") as f:
            pickle.dump((raft_data, applied), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(self.marker + ".tmp", self.marker)
        if applied > self.state.applied_index():
            log.info("installing the leader's snapshot at index %d", applied)
            snap = sqlite3.connect(received, isolation_level=None)
            try:
                snap.execute("DROP TABLE raft_snapshot")
            finally:
                snap.close()
            _fsync_file(received)
            self.state.replace_with(received)  # fsyncs the directory: the marker too
        else:  # ours is as new: keep it (it still gets a snapshot file claiming this index)
            os.unlink(received)
            fsync_dir(os.path.dirname(os.path.abspath(self.marker)))
        self._start(raft_data, raft_data[1][1])  # this node's own snapshot of what it installed
        self.on_installed()
        return raft_data

    def close(self) -> None:
        """Stop every background thread (any thread; after the Raft thread stopped)."""
        self.cancel_job()
        self._drop_senders()
        self._close_incoming()
