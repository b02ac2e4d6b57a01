"""Raft snapshots of the SQLite state machine: the live database is the snapshot.

``Snapshots`` stands in for PySyncObj 0.3.17's ``Serializer`` (same methods, installed by
``raftmeta.node``). The database holds its applied Raft index in the same transaction as
every change (``MetaState``), so it already is a snapshot of everything up to that index;
a copy is made only when a follower needs one, as etcd sends its bbolt file.

- compaction (``serialize``): PySyncObj calls it on the Raft thread right after applying
  every entry up to the index it claims. A background thread fsyncs the database's WAL and
  file (``synchronous=NORMAL`` syncs only at checkpoints) and then writes the snapshot
  record, ``raft.snapshot``: PySyncObj's pickled ``(last entry, entry before, cluster)`` and
  the database's applied index, fsynced and renamed into place. Only then does
  ``checkSerializing`` answer SUCCESS, after which PySyncObj drops its log up to the claim.
  Nothing is copied: a compaction costs two fsyncs and one small file.
- transmission (``getTransmissionData``): a follower behind the log's start gets a copy
  of a read transaction of the live database (SQLite's backup API, a background thread at
  nice 19, written back in steps), which holds at least every entry up to the record's
  claim (possibly more: entries the follower is sent again are skipped by index on
  apply). A reader per follower sends it in parts of ``batch_bytes`` (a bounded queue);
  the Raft thread takes what is ready and never touches the file. One copy serves the
  followers that ask for it meanwhile and is deleted when the last is done; while a copy
  is being sent no compaction starts, so what it claims stays in the leader's log.
- install (``setTransmissionData`` + ``deserialize``): the parts are written to a file,
  fsynced in the background as they come; once complete, the file is renamed into place
  as the live database (``MetaState.replace_with``), no copy, and the record is written.
- restart: the record is read; a database whose applied index is below the one the record
  saw synced has lost entries that the compacted log no longer holds, and the replica
  refuses to start (``DatabaseBehind``): it must be replaced as a member, never restarted
  empty under its own address (it would vote without the log it acknowledged). Data dirs of the earlier layout (a full copy in
  ``raft.snapshot``, an install marker) are converted at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from pysyncobj.config import SERIALIZER_STATE

from raftmeta.state import MetaState

log = logging.getLogger("raftmeta")

BACKUP_STEP_PAGES = 1024  # pages copied per backup step (the job checks for cancellation between)
FLUSH_EVERY = 64 << 20  # a copy being written is flushed to disk every this many bytes
BACKGROUND_NICE = 19  # the copying thread's own scheduling priority (Linux: per thread)
READ_AHEAD_PARTS = 64  # parts a transmission reads ahead of the Raft thread
FSYNC_EVERY = 8 << 20  # a received snapshot is fsynced in the background every this many bytes
SENDER_IDLE = 30.0  # a transmission not asked for its next part this long is dropped (seconds)
SEND_SLICE = 0.005  # seconds of the Raft thread a transmission takes in one round of sends
SEND_EVERY = 0.015  # a transmission's rounds start at most this often (seconds)
COPY_RETRY = 5.0  # after a failed copy for sending, seconds before the next attempt
RECORD_MAGIC = b"cairn raft snapshot record 1\n"
SQLITE_MAGIC = b"SQLite format 3\x00"


class DatabaseBehind(RuntimeError):
    """The database lost entries that the compacted Raft log no longer holds."""


def fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def sync_database(db_path: str) -> None:
    """Make every transaction committed so far durable. A committed transaction is either
    in the WAL, or was checkpointed into the database file, which SQLite syncs before it
    reuses the WAL (``synchronous=NORMAL``): the WAL, then the file."""
    with contextlib.suppress(FileNotFoundError):
        _fsync_file(db_path + "-wal")
    _fsync_file(db_path)


def write_record(path: str, raft_data: Any, db_applied: int) -> None:
    """The snapshot record, atomically and durably: PySyncObj's raft data for the claimed
    index, and the applied index the database was synced at."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(RECORD_MAGIC + pickle.dumps({"raft": raft_data, "db_applied": db_applied}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def read_record(path: str) -> tuple[Any, int] | None:
    """(raft data, database applied index) of a record; None if ``path`` is not one."""
    with open(path, "rb") as f:
        head = f.read(len(RECORD_MAGIC))
        if head != RECORD_MAGIC:
            return None
        record = pickle.loads(f.read())
    return record["raft"], int(record["db_applied"])


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
            raise InterruptedError("snapshot copy cancelled")
        if total - remaining - flushed >= flush_pages:
            # written back in steps: hundreds of MB of dirty pages at once would queue
            # ahead of the journal's own syncs
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
    copy then takes the cores the Raft, RPC and apply threads leave idle."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


def staggered_threshold(first_index: int, every: int, position: int, members: int) -> int:
    """How many log entries this replica lets grow before its next snapshot, so that the
    replicas of a group compact at different moments (PySyncObj starts one once the log
    holds ``logCompactionMinEntries``; with one value for all, every replica syncs at the
    same index). The replica at ``position`` of ``members`` (sorted by address) snapshots
    at indexes congruent to ``position * every // members`` modulo ``every``: the next such
    index at least ``every // 2`` past ``first_index`` (its log's first entry, the last
    snapshot's). So the answer is within [every/2, 3*every/2), every replica still
    snapshots once per ``every`` entries on average, and a replica that restarted or
    joined falls back into its own phase by itself."""
    if members <= 1 or every < 2:
        return every
    phase = (position % members) * every // members
    earliest = first_index + every // 2
    return every // 2 + (phase - earliest) % every


def read_snapshot(path: str) -> tuple[Any, int]:
    """(PySyncObj's raft data, the applied index stored in the state) of a snapshot copy."""
    snap = sqlite3.connect(path, isolation_level=None)
    try:
        raft_data = pickle.loads(snap.execute("SELECT data FROM raft_snapshot").fetchone()[0])
        row = snap.execute("SELECT v FROM meta WHERE k='applied'").fetchone()
    finally:
        snap.close()
    return raft_data, int(row[0]) if row else 0


def incomplete(path: str) -> str | None:
    """Why the SQLite file at ``path`` cannot be whole, or None: a part lost on the way
    leaves it shorter than the page count its header declares."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        return f"no SQLite header in {size} bytes"
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] != head[92:96]:  # the header's page count is not current: cannot tell
        return None
    if size != pages * page:
        return f"{size} bytes, its header declares {pages} pages of {page}"
    return None


def begin_read(db_path: str) -> sqlite3.Connection:
    """A new connection with a read transaction open on ``db_path``'s current content."""
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN")
    conn.execute("SELECT v FROM meta WHERE k='applied'").fetchone()  # the transaction's snapshot starts here
    return conn


class _Thread:
    """A background step: ``run`` on its own thread; ``error`` once it ended, if it failed."""

    def __init__(self, name: str, run: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self._run_it = run
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._run_it()
        except BaseException as exc:  # noqa: BLE001 (reported by whoever polls)
            self.error = exc

    def done(self) -> bool:
        return not self.thread.is_alive()


class _Compaction(_Thread):
    """Sync the database, then write the record claiming ``claim``."""

    def __init__(self, owner: Snapshots, raft_data: Any, claim: int, db_applied: int) -> None:
        self.raft_data, self.claim, self.db_applied = raft_data, claim, db_applied

        def run() -> None:
            sync_database(owner.state.path)
            write_record(owner.path, raft_data, db_applied)

        super().__init__("raftmeta-compaction", run)


class _Copy(_Thread):
    """A copy of the live database for sending, made from a read transaction begun now."""

    def __init__(self, path: str, db_path: str, raft_data: Any) -> None:
        self.path = path
        self.cancel = False
        self.started = time.monotonic()
        self.reported = False  # its completion logged
        conn = begin_read(db_path)

        def run() -> None:
            background_priority()
            try:
                write_snapshot(conn, path, raft_data, lambda: self.cancel)
            finally:
                conn.close()  # ends the read transaction

        super().__init__("raftmeta-snapshot-copy", run)

    def discard(self) -> None:
        self.cancel = True
        self.thread.join()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class _Sender:
    """Reads one snapshot copy ahead for one follower: parts ``(data, first, last)``, the
    last one empty (PySyncObj's framing)."""

    def __init__(self, path: str, batch: int) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 (closed by the reader thread)
        self.batch = batch
        self.parts: queue.Queue[Any] = queue.Queue(READ_AHEAD_PARTS)
        self.stop = False
        self.polled = time.monotonic()
        self.burst_until = 0.0  # the end of the current round of parts sent at once
        self.next_round = 0.0  # the earliest start of the next round
        self.parts_sent = 0
        self.started = time.monotonic()
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
                 on_installed: Callable[[], None] = lambda: None,
                 window_full: Callable[[Any], bool] = lambda node: False,
                 held_back: Callable[[Any], bool] = lambda node: False) -> None:
        self.path = path  # PySyncObj's fullDumpFile: the record
        self.window_full = window_full  # whether a node's connection holds all it may queue
        self.held_back = held_back  # whether a connected node is sent nothing until the next tick
        self.copy_path = path + ".send"
        self.batch = batch_bytes
        self.state = state
        self.on_installed = on_installed
        self.job: _Compaction | None = None
        self.copy: _Copy | None = None
        self.copy_failed = 0.0  # monotonic time of the last failed copy
        self.copy_wanted = 0.0  # monotonic time a follower last asked for a copy
        self.senders: dict[Any, _Sender] = {}
        self.incoming: Any = None  # the file a snapshot being received is written to
        self.incoming_bytes = 0
        self.fsyncer: threading.Thread | None = None
        self.received: str | None = None  # a complete received snapshot, for ``deserialize``
        # for operators (raftmeta's status): copies made for followers, transfers sent whole,
        # transfers dropped after some parts (a disconnect, a step-down, an install: a follower
        # that still needs one is sent it again from its first part), snapshots installed
        self.stats = {"copies": 0, "sent": 0, "dropped": 0, "installed": 0}
        for stale in (self.copy_path, path + ".tmp", path + ".1.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        self._convert_earlier_layout()
        self.raft_data: Any = None
        self.db_applied = 0
        if os.path.exists(path):
            record = read_record(path)
            if record is None:
                raise RuntimeError(f"{path} is neither a snapshot record nor a snapshot")
            self.raft_data, self.db_applied = record
            if state.applied_index() < self.db_applied:
                raise DatabaseBehind(
                    f"{state.path} is at index {state.applied_index()}, but it was synced at index "
                    f"{self.db_applied} before the Raft log was compacted: entries in between are lost. "
                    "Replace this member: start a new raftmeta with an empty data directory at another "
                    "Raft address, then run `cairn admin raft replace OLD NEW`. Never restart it at the same "
                    "address with an empty data directory: a member that forgot its log and its vote can help "
                    "elect a leader that lacks committed entries.")

    def _convert_earlier_layout(self) -> None:
        """Data dirs written before the record: ``raft.snapshot`` was a full copy of the
        database with its raft data, and ``raft.snapshot.installed`` marked an install
        whose own copy was not yet durable. Start-up, before Raft runs."""
        marker = self.path + ".installed"
        if os.path.exists(marker):
            with open(marker, "rb") as f:
                raft_data, applied = pickle.load(f)
            if self.state.applied_index() >= applied:
                log.info("recording the database installed at index %d", applied)
                sync_database(self.state.path)
                write_record(self.path, raft_data, applied)
            os.unlink(marker)
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                return
        raft_data, applied = read_snapshot(self.path)
        if applied > self.state.applied_index():  # keep whichever is newer
            log.info("restoring state from the snapshot copy at index %d", applied)
            snap = sqlite3.connect(self.path, isolation_level=None)
            try:
                self.state.restore_from(snap)
            finally:
                snap.close()
        sync_database(self.state.path)
        write_record(self.path, raft_data, applied)

    # ---------------------------------------------------------------- compaction

    def checkSerializing(self) -> tuple[int, int | None]:  # noqa: N802 (PySyncObj's names)
        job = self.job
        if job is None:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        if not job.done():
            return SERIALIZER_STATE.SERIALIZING, job.claim
        self.job = None
        if job.error is not None:
            log.error("snapshot record at index %d failed: %r", job.claim, job.error)
            return SERIALIZER_STATE.FAILED, job.claim
        self.raft_data, self.db_applied = job.raft_data, job.db_applied
        return SERIALIZER_STATE.SUCCESS, job.claim

    def serialize(self, data: Any, claim: int) -> None:
        """Record a snapshot of everything applied so far (PySyncObj calls it right after
        applying the entries up to ``data[1]``, the last it claims), unless a copy is being
        sent: what that copy claims must stay in the log until the follower has it."""
        self._drop_idle_senders()
        if self.job is not None or self.copy is not None:
            return
        self.job = _Compaction(self, data[1:], claim, self.state.applied_index())

    def cancel_job(self) -> None:
        job, self.job = self.job, None
        if job is not None:
            job.thread.join()  # two fsyncs and a small file: waited for, not cancelled

    # ------------------------------------------------------------ transmission

    def getTransmissionData(self, node: Any) -> tuple[bytes, bool, bool] | None:  # noqa: N802
        sender = self.senders.get(node)
        if sender is None:
            path = self._copy_ready()
            if path is None:
                return None
            try:
                sender = self.senders[node] = _Sender(path, self.batch)
            except OSError:
                log.exception("cannot open the snapshot copy to send")
                self._drop_copy()
                return None
        sender.polled = now = time.monotonic()
        if not sender.burst_until:  # a round starts, if its pause is over
            if now < sender.next_round:
                return None
            sender.burst_until, sender.next_round = now + SEND_SLICE, now + SEND_EVERY
        # PySyncObj sends parts in a loop until its tick's send time (0.1 s) is up, and sends
        # again with every new entry, while commits wait for the same thread: a round takes
        # at most SEND_SLICE, and ends early when the follower has not read what it was sent
        # or nothing is read ahead yet
        part = None
        if now <= sender.burst_until and not self.window_full(node):
            with contextlib.suppress(queue.Empty):
                part = sender.parts.get_nowait()
        if part is None:
            sender.burst_until = 0.0
            return None
        if isinstance(part, BaseException):
            log.error("reading the snapshot copy to send failed: %r", part)
            self.drop_transmission(node)
            return None
        sender.parts_sent += 1
        if part[2]:
            log.info("sent the database to %s: %d parts in %.1f s", node, sender.parts_sent, now - sender.started)
            self.stats["sent"] += 1
            self._sender_done(node)
        return part

    def next_round_in(self) -> float | None:
        """Seconds until a transmission's next round of parts may start (None: no
        transmission). PySyncObj asks for parts only when it sends, every 0.1 s on an idle
        leader: the leader's tick sends sooner while one is due (``MetaNode._onTick``)."""
        if not self.senders:
            return None
        return max(0.0, min(s.next_round for s in self.senders.values()) - time.monotonic())

    def _copy_ready(self) -> str | None:
        """The path of a finished copy to send, starting one if none is being made."""
        if self.job is not None or self.raft_data is None:
            return None  # a record being written: the copy would claim the one it replaces
        self.copy_wanted = now = time.monotonic()
        copy = self.copy
        if copy is None:
            if now - self.copy_failed < COPY_RETRY:
                return None
            log.info("copying the database for a follower (claims index %d)", self.raft_data[0][1])
            self.copy = _Copy(self.copy_path, self.state.path, self.raft_data)
            self.stats["copies"] += 1
            return None
        if not copy.done():
            return None
        if copy.error is None and not copy.reported:
            copy.reported = True
            log.info("copied the database for a follower: %.0f MB in %.1f s",
                     os.path.getsize(copy.path) / 1e6, now - copy.started)
        if copy.error is not None:
            log.error("copying the database for a follower failed: %r", copy.error)
            self.copy_failed = time.monotonic()
            self._drop_copy()
            return None
        return copy.path

    def cancelTransmisstion(self, node: Any) -> None:  # noqa: N802 (PySyncObj's spelling)
        """PySyncObj calls this on every send for every node outside its connected set: a
        node held back until the next tick (``MetaNode._hold_back``, which ends a round of
        parts) is still connected, and its transmission goes on."""
        if not self.held_back(node):
            self.drop_transmission(node)

    def drop_transmission(self, node: Any) -> None:
        """A transmission ends before its last part (a disconnect, an idle sender, a failed
        read, an install): its reader stops; the copy stays while it is wanted."""
        sender = self.senders.pop(node, None)
        if sender is not None:
            sender.stop = True
            if sender.parts_sent:
                self.stats["dropped"] += 1
                log.info("sending the snapshot to %s stopped after %d parts: if it still needs one, it is "
                         "sent again from its first part", node, sender.parts_sent)

    def _sender_done(self, node: Any) -> None:
        """The last part went: the copy goes with the last of its transmissions (the readers
        have it open; a follower that asks later gets a new copy)."""
        self.senders.pop(node, None)
        if not self.senders:
            self._drop_copy()

    def _drop_idle_senders(self) -> None:
        """A leader that stepped down is no longer asked for parts: its transmissions and
        its copy go once nobody asked for them for ``SENDER_IDLE``."""
        now = time.monotonic()
        for node, sender in list(self.senders.items()):
            if now - sender.polled > SENDER_IDLE:
                self.drop_transmission(node)
        if not self.senders and self.copy is not None and now - self.copy_wanted > SENDER_IDLE:
            self._drop_copy()

    def _drop_copy(self) -> None:
        copy, self.copy = self.copy, None
        if copy is not None:
            copy.discard()

    def _drop_senders(self) -> None:
        for node in list(self.senders):
            self.drop_transmission(node)
        self._drop_copy()

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
        problem = incomplete(tmp)
        if problem is not None:  # the leader sends it again: this node still needs it
            log.error("a received snapshot is incomplete (%s): dropped", problem)
            os.unlink(tmp)
            return False
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
        """PySyncObj's snapshot load: a received one (install), or the record at start-up
        (the live database is its state)."""
        received, self.received = self.received, None
        if received is not None:
            return (None, *self._install(received))
        return (None, *self.raft_data)

    def _install(self, received: str) -> Any:
        self.cancel_job()
        self._drop_senders()  # a copy of the database about to be replaced
        raft_data, applied = read_snapshot(received)
        if applied > self.state.applied_index():
            log.info("installing the leader's snapshot at index %d", applied)
            snap = sqlite3.connect(received, isolation_level=None)
            try:
                snap.execute("DROP TABLE raft_snapshot")
            finally:
                snap.close()
            _fsync_file(received)
            self.state.replace_with(received)  # fsyncs the directory
        else:  # ours is as new: keep it
            os.unlink(received)
            sync_database(self.state.path)
        # A crash before this leaves the previous record, older than the database: the
        # entries in between are skipped by index when the journal replays them.
        self.db_applied = self.state.applied_index()
        write_record(self.path, raft_data, self.db_applied)
        self.raft_data = raft_data
        self.stats["installed"] += 1
        self.on_installed()
        return raft_data

    def close(self) -> None:
        """Stop every background thread (any thread; after the Raft thread stopped)."""
        self.cancel_job()
        self._drop_senders()
        self._close_incoming()
