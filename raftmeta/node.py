"""PySyncObj glue: one Raft replica of the metadata state machine.

What PySyncObj 0.3.17 does not do, and this module adds:
- durability: its journal is an mmap that is never synced. ``DurableJournal`` msyncs
  before a follower acknowledges entries and before the leader counts its own log
  toward a commit (once per tick: group commit), and fsyncs Raft term/vote metadata.
- snapshots: the default forks and pickles the object; ours copy the SQLite database
  with its backup API (``_serialize`` / ``_deserialize``).
- safety: the Raft port always requires the cluster secret (PySyncObj pickles its TCP
  messages; without ``password`` an open port would be remote code execution).
- pipelining: on every successful ack it set the follower's next index back to just
  past the acked entry, so the leader sent again every entry still in flight. Under 64
  concurrent writes that retransmission cut commits to a third (and logged
  "truncating already-applied" for each duplicate). A successful ack now only moves the
  next index forward; a failed one (``reset``) still moves it back, as Raft requires.
- speed: it zlib-compresses every message at level 3, which took 30% of the leader's
  Raft thread under small-object writes (their bytes ride in the entries and do not
  compress). Messages are now stored uncompressed (level 0, still valid zlib, so nodes
  of either kind read each other's messages).
"""

from __future__ import annotations

import logging
import os
import pickle
import sqlite3
import zlib
from collections.abc import Callable
from typing import Any

import msgpack
import pysyncobj.journal as pjournal
import pysyncobj.syncobj as psyncobj
import pysyncobj.tcp_connection as ptcp
from pysyncobj import SyncObj, SyncObjConf, replicated

from raftmeta.state import MetaState

log = logging.getLogger("raftmeta")

class _StoredZlib:
    """``zlib`` for PySyncObj's TCP connections: compress without compressing."""

    def __getattr__(self, name: str) -> Any:
        return getattr(zlib, name)

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return zlib.compress(data, 0)


ptcp.zlib = _StoredZlib()

# PySyncObj logs this CRITICAL line on every pipelined ack in non-batch mode although the
# state stays identical (measured); it would drown real warnings.
logging.getLogger("pysyncobj.syncobj").addFilter(
    lambda record: "truncating already-applied" not in record.getMessage()
)


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableJournal(pjournal.FileJournal):
    """The PySyncObj file journal, made durable by ``sync()`` (msync) when dirty."""

    def __init__(self, journal_file: str) -> None:
        super().__init__(journal_file)
        self._dir = os.path.dirname(os.path.abspath(journal_file))
        self.dirty = False
        self.syncs = 0

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self.dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802 (PySyncObj's name)
        super().deleteEntriesFrom(entryFrom)
        self.dirty = True

    def clear(self) -> None:
        super().clear()
        self.dirty = True
        _fsync_dir(self._dir)  # a snapshot was just renamed into place

    def sync(self) -> None:
        if self.dirty:
            self.dirty = False
            self.flush()
            self.syncs += 1


def _durable_store_meta(self: pjournal.MetaStorer, meta: dict[str, Any]) -> None:
    path = self.getPath()
    with open(path + ".tmp", "wb") as f:
        f.write(pjournal.dumps(meta))
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


pjournal.MetaStorer.storeMeta = _durable_store_meta  # term and vote must survive power loss


class MetaNode(SyncObj):
    """A Raft replica whose single replicated method applies a msgpack command."""

    def __init__(
        self,
        self_addr: str,
        peers: list[str],
        data_dir: str,
        secret: str,
        state: MetaState,
        *,
        compaction_entries: int = 50_000,
        on_state_change: Callable[[int, int], None] | None = None,
        sync_journal: bool = True,
    ) -> None:
        self.state = state
        self._journal: DurableJournal | None = None
        self._sync_journal = sync_journal
        conf = SyncObjConf(
            password=secret,
            appendEntriesUseBatch=False,
            journalFile=os.path.join(data_dir, "raft.journal"),
            fullDumpFile=os.path.join(data_dir, "raft.snapshot"),
            serializer=self._serialize,
            deserializer=self._deserialize,
            logCompactionMinEntries=compaction_entries,
            logCompactionMinTime=600,
            dynamicMembershipChange=True,
            onStateChanged=on_state_change,
            raftMinTimeout=0.4,
            raftMaxTimeout=1.2,
            leaderFallbackTimeout=1.5,  # a leader cut off from its majority steps down quickly
            connectionTimeout=3.5,
        )
        original = psyncobj.createJournal

        def create_journal(path: str | None) -> pjournal.Journal:
            self._journal = DurableJournal(path)
            return self._journal

        psyncobj.createJournal = create_journal
        try:
            super().__init__(self_addr, peers, conf)
        finally:
            psyncobj.createJournal = original
        transport = self._SyncObj__transport
        send = transport.send

        def durable_send(node: Any, message: dict[str, Any]) -> None:
            # A follower's ack of appended entries must not go out before they are durable.
            if message.get("type") == "next_node_idx" and message.get("success") and self._sync_journal:
                self._journal.sync()
            send(node, message)

        transport.send = durable_send

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        """PySyncObj's handler, but a successful ack never moves a follower's next index
        back over entries already sent (see the module docstring)."""
        ahead = None
        if message.get("type") == "next_node_idx" and message.get("success") and not message.get("reset"):
            ahead = self._SyncObj__raftNextIndex.get(node)
        super()._SyncObj__onMessageReceived(node, message)
        if ahead is not None and self._isLeader():
            next_index = self._SyncObj__raftNextIndex
            if node in next_index and next_index[node] < ahead:
                next_index[node] = ahead

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802,N803 (PySyncObj's names)
        # The leader counts its own log toward the commit at the start of a tick: every
        # entry appended in the previous tick is made durable here first (group commit).
        if self._journal is not None and self._sync_journal:
            self._journal.sync()
        super()._onTick(timeToWait)

    @replicated
    def apply_cmd(self, data: bytes) -> dict[str, Any]:
        index = self.raftLastApplied + 1
        try:
            cmd = msgpack.unpackb(data, raw=False)
        except Exception:
            return {"ok": False, "err": "BadRequest", "msg": "undecodable command"}
        return self.state.apply(index, cmd)

    @property
    def journal_syncs(self) -> int:
        return self._journal.syncs if self._journal else 0

    # -------------------------------------------------------------- snapshots

    def _serialize(self, path: str, raft_data: Any) -> None:
        """Runs on the Raft thread, between applies: the database is quiescent."""
        if os.path.exists(path):
            os.unlink(path)
        dst = sqlite3.connect(path, isolation_level=None)
        try:
            self.state.db.backup(dst)
            dst.execute("CREATE TABLE raft_snapshot (data BLOB)")
            dst.execute("INSERT INTO raft_snapshot VALUES (?)", (pickle.dumps(raft_data),))
        finally:
            dst.close()
        with open(path, "rb+") as f:
            os.fsync(f.fileno())

    def _deserialize(self, path: str) -> Any:
        """Load a snapshot (ours at start-up, or the leader's): keep whichever is newer."""
        snap = sqlite3.connect(path, isolation_level=None)
        try:
            raft_data = pickle.loads(snap.execute("SELECT data FROM raft_snapshot").fetchone()[0])
            row = snap.execute("SELECT v FROM meta WHERE k='applied'").fetchone()
            snap_index = int(row[0]) if row else 0
            if snap_index > self.state.applied_index():
                log.info("restoring state from snapshot at index %d", snap_index)
                self.state.restore_from(snap)
        finally:
            snap.close()
        return raft_data
