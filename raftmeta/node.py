"""PySyncObj glue: one Raft replica of the metadata state machine.

What PySyncObj 0.3.17 does not do, and this module adds:
- durability: its journal is an mmap that is never synced. ``DurableJournal`` msyncs
  before a follower acknowledges entries and before the leader counts its own log
  toward a commit (once per tick: group commit), and fsyncs Raft term/vote metadata.
- snapshots: the default forks and pickles the object; ours (``raftmeta.snapshots``)
  take the live SQLite database as the snapshot (a compaction syncs it and writes a small
  record), copy a read transaction of it only for a follower that needs one, send it from
  a read-ahead thread, and install a received one by renaming it into place.
- safety: the Raft port always requires the cluster secret (PySyncObj pickles its TCP
  messages; without ``password`` an open port would be remote code execution). Frames
  are HMAC-signed (``_SignedFrames``) instead of Fernet-encrypted: as on every internal
  port, authenticated but not encrypted.
- pipelining: on every successful ack it set the follower's next index back to just
  past the acked entry, so the leader sent again every entry still in flight. Under 64
  concurrent writes that retransmission cut commits to a third (and logged
  "truncating already-applied" for each duplicate). A successful ack now only moves the
  next index forward; a failed one (``reset``) still moves it back, as Raft requires.
- catch-up: a follower far behind got one socket buffer per heartbeat (``raftconn``
  fixes the connection), the leader queued whatever it could pickle in a tick for it
  (``_backlogged``: at most RAFT_SEND_WINDOW bytes wait per follower), one AppendEntries
  carried up to 20,000 entries (RAFT_APPEND_MAX_ENTRIES), and the follower applied its
  whole backlog in one tick without reading a message, missed its leader and stood for
  election (``_SyncObj__applyLogEntries``: slices within APPLY_BUDGET per tick).
- snapshot sends: PySyncObj's send loop calls for the next part until its 0.1 s is up,
  with every new entry, and sends an empty message each time no part is ready (while the
  copy is made): commits waited behind it (p50 0.6 s during a transfer). A message without
  a part holds the node back to the next tick (``durable_send``), and ``Snapshots`` paces
  the parts; a held-back node keeps its transmission (PySyncObj cancels the transmission
  of any node outside its connected set, so holding back restarted a transfer from its
  first part: a 230 MB transfer restarted about twice a second).
- staggered compactions: every replica started one at the same index (the log length
  ``logCompactionMinEntries``), so all three synced (once: copied) their database at
  once; each now has its own phase (``_stagger_snapshots``).
- pre-vote (Raft thesis 9.6, ``raftmeta.prevote``): a node that missed its leader for a
  moment asks before it stands, so it cannot depose a healthy leader.
- leader leases (Raft thesis 6.4.1): a follower that heard from its leader less than
  ``raftMinTimeout`` ago ignores vote requests (thesis 4.2.3), so no other leader can be
  elected in that window. The leader stamps each AppendEntries with its monotonic clock
  and followers echo the stamp in their ack; while a majority has acked a stamp younger
  than ``LEASE_FRACTION`` of that window, the leader serves linearizable reads from its
  own state (``lease_read_index``) without a Raft round.
- speed: it zlib-compresses every message at level 3, which took 30% of the leader's
  Raft thread under small-object writes (their bytes ride in the entries and do not
  compress). Messages are now stored uncompressed (level 0, still valid zlib, so nodes
  of either kind read each other's messages).
- bounded frames: it buffers whatever length a frame's 4-byte prefix declares (up to
  2 GiB) and only then checks the frame's signature, so anyone who could reach the port
  could stall the Raft thread (and force an election) with one large frame. Each frame's
  declared length is now checked as soon as its prefix arrives (``_read_capped``):
  above ``RAFT_MAX_FRAME``, or above ``RAFT_MAX_UNVERIFIED_FRAME`` before the peer has
  sent a validly signed frame, the connection is closed before the frame is read. An
  incoming connection that has sent no valid frame ``RAFT_UNVERIFIED_TIMEOUT`` after it
  was accepted is closed too (``_drop_unverified_peers``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import random
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import msgpack
import pysyncobj.encryptor as pencryptor
import pysyncobj.journal as pjournal
import pysyncobj.syncobj as psyncobj
import pysyncobj.tcp_connection as ptcp
from pysyncobj import SyncObj, SyncObjConf, replicated

from core.wire import MAX_HEADER
from raftmeta import raftconn, snapshots
from raftmeta.prevote import PreVote
from raftmeta.state import MetaState

log = logging.getLogger("raftmeta")

RAFT_MIN_TIMEOUT = 0.4  # seconds without a leader before a follower may stand for election
RAFT_MAX_TIMEOUT = 1.2
# A lease lasts this share of RAFT_MIN_TIMEOUT from the stamp a majority acked: the rest
# is margin for clock rate differences between hosts.
LEASE_FRACTION = 0.75

# PySyncObj's logCompactionBatchSize (its default, set explicitly because RAFT_MAX_FRAME
# below depends on it): a snapshot goes to a follower in parts of this size.
RAFT_BATCH_BYTES = 1 << 16
SNAPSHOT_ACK_EVERY = 0.25  # a follower receiving a snapshot says it is there this often (s)
# PySyncObj's appendEntriesBatchSizeBytes: larger than any entry, on purpose. An entry at
# least this large is sent in pieces ("transmission"), and 0.3.17 gets that wrong: it
# marks the piece that reaches the *raw* entry's length as the last one, though the
# pickled entry it cuts is longer, so a follower can unpickle a truncated entry, fail
# its tick, and ask for the same entry again, forever (a 10,000-part Complete did this).
# Entries are under 2 MiB (below), so with 3 MiB no entry is ever sent in pieces.
RAFT_APPEND_BATCH_BYTES = 3 << 20
# The largest frame a node of this cluster sends (PySyncObj 0.3.17 with MetaNode's conf):
# - AppendEntries: ``__getEntries`` takes entries until their bytes reach
#   RAFT_APPEND_BATCH_BYTES, so a batch is under 3 MiB plus its last entry. An entry is
#   one pickled ``apply_cmd`` call: a msgpack command that came in an RPC frame header
#   (at most MAX_HEADER, 1 MiB; re-packed, its float32s could grow 5 -> 9 bytes: under
#   2 MiB) or that a MetaServer chore built (gc_done of up to 2000 seqs: tens of KiB).
# - apply_command (a follower forwards a proposal to its leader): one such command.
# - a snapshot goes in parts of logCompactionBatchSize (RAFT_BATCH_BYTES), one a frame.
# - votes, acks, the key exchange: well under 1 KiB. Framing (pickle, zlib's stored
#   blocks, the per-connection key, timestamp and HMAC) adds under 1 KiB.
# So no legitimate frame reaches 5.1 MiB; 16 MiB leaves margin, and is the most that even a
# peer holding the secret can make a node buffer for one frame.
RAFT_MAX_FRAME = 16 * MAX_HEADER
# Before a peer's first validly signed frame, the only frame it sends is its random
# connection key: about 100 bytes, signed.
RAFT_MAX_UNVERIFIED_FRAME = 1024
# An accepted connection with no validly signed frame after this long is closed
# (PySyncObj's own connectionTimeout does not apply to a peer that never sends a byte).
RAFT_UNVERIFIED_TIMEOUT = 3.0
# A follower far behind (restarted after a while) is sent entries only while fewer than
# this many bytes wait in its connection's buffer: PySyncObj's sender would queue
# everything it can pickle in a tick (tens of MiB) whatever the follower's pace.
RAFT_SEND_WINDOW = 2 * RAFT_APPEND_BATCH_BYTES
# Entries applied per tick at most while time is left in APPLY_BUDGET: PySyncObj applies
# everything committed in one tick, and a follower applying a long backlog (10,000
# entries: ~1.5 s) read no message meanwhile, missed its leader and stood for election.
APPLY_SLICE = 64
APPLY_BUDGET = 0.05
# Entries in one AppendEntries at most (PySyncObj fills one up to 3 MiB: 20,000 small
# entries, which a follower takes ~0.5 s to append, missing its election timeout).
RAFT_APPEND_MAX_ENTRIES = 1000


class _SignedFrames:
    """PySyncObj's message protection with its Fernet encryptor's interface, minus the
    encryption: each frame is ``timestamp (8) | data | HMAC-SHA256 (32)`` under a key
    derived from the cluster secret as PySyncObj derives it. Frames stay authenticated
    (an open Raft port must not unpickle anyone's bytes) and tamper-evident, and PySyncObj
    still binds them to per-connection random keys and checks their timestamps never go
    back. Like every internal Cairn port, Raft traffic is signed, not encrypted. Fernet's
    AES and base64 took 16% of the leader's Raft thread under small writes."""

    def __init__(self, secret: str) -> None:
        self.key = hashlib.pbkdf2_hmac("sha256", secret.encode(), pencryptor.SALT, 100_000, 32)
        # PySyncObj reads each frame's timestamp and then its data: one check serves both
        # (the frame last verified, kept by identity; the Raft thread is the only caller).
        self._last: tuple[bytes, memoryview] | None = None

    def _mac(self, body: bytes | memoryview) -> bytes:
        return hmac.digest(self.key, body, "sha256")

    def encrypt_at_time(self, data: bytes, ts: int) -> bytes:
        body = ts.to_bytes(8, "big") + data
        return body + self._mac(body)

    def _verified(self, token: bytes) -> memoryview:
        last = self._last
        if last is not None and last[0] is token:
            return last[1]
        view = memoryview(token)
        if len(view) < 40 or not hmac.compare_digest(self._mac(view[:-32]), view[-32:]):
            raise ValueError("bad Raft frame signature")
        self._last = (token, view[:-32])
        return view[:-32]

    def extract_timestamp(self, token: bytes) -> int:
        return int.from_bytes(self._verified(token)[:8], "big")

    def decrypt(self, token: bytes) -> bytes:
        return bytes(self._verified(token)[8:])


class _StoredZlib:
    """``zlib`` for PySyncObj's TCP connections: compress without compressing."""

    def __getattr__(self, name: str) -> Any:
        return getattr(zlib, name)

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return zlib.compress(data, 0)


ptcp.zlib = _StoredZlib()

_FRAME_PREFIX = struct.Struct("i")  # PySyncObj's length prefix: native byte order, signed
raftconn.install()
_read_some = ptcp.TcpConnection._TcpConnection__processRead


def _read_capped(self: ptcp.TcpConnection) -> None:
    """``TcpConnection.__tryReadBuffer`` (read until the socket has nothing more), checking
    each frame's declared length as soon as its prefix arrives, so that a frame too large
    for any legitimate peer closes the connection before its body is buffered (at most
    one receive, recvBufferSize bytes, past the prefix). A peer that has not yet sent a
    validly signed frame (``sendRandKey`` is set from its first one) may send no more than
    RAFT_MAX_UNVERIFIED_FRAME: a legitimate peer sends nothing else before our reply."""
    pos = 0  # parsing consumes only whole frames: the buffer starts at a frame's prefix
    while _read_some(self):
        buf = self._TcpConnection__readBuffer
        while pos + _FRAME_PREFIX.size <= len(buf):
            (size,) = _FRAME_PREFIX.unpack_from(buf, pos)
            cap = RAFT_MAX_FRAME if self.sendRandKey else RAFT_MAX_UNVERIFIED_FRAME
            if not 0 <= size <= cap:
                log.warning("closing a Raft connection: a frame of %d bytes declared (at most %d%s)", size, cap,
                            "" if self.sendRandKey else " before a signed frame")
                self.disconnect()
                return
            pos += _FRAME_PREFIX.size + size
    self._TcpConnection__lastReadTime = ptcp.monotonicTime()


ptcp.TcpConnection._TcpConnection__tryReadBuffer = _read_capped

# PySyncObj logs this CRITICAL line on every pipelined ack in non-batch mode although the
# state stays identical (measured); it would drown real warnings.
logging.getLogger("pysyncobj.syncobj").addFilter(
    lambda record: "truncating already-applied" not in record.getMessage()
)


_fsync_dir = snapshots.fsync_dir


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


class MetaNode(PreVote, SyncObj):
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
        self._compaction_entries = compaction_entries
        self._stagger_key: tuple[int, int] | None = None  # see _stagger_snapshots
        self._journal: DurableJournal | None = None
        self._sync_journal = sync_journal
        # Set before PySyncObj starts its thread, which calls the handlers below.
        # follower: when an AppendEntries of the current term last came. Starting "now": a
        # restarted node may have acked a lease just before it died, so it keeps quiet first.
        self._heard_leader = time.monotonic()
        self._echo: tuple[int, float] | None = None  # follower: stamp of the one being handled
        self._snapshot_acked = 0.0  # follower: when it last told a sending leader it is there
        self._lease_acks: dict[Any, tuple[int, float]] = {}  # leader: node -> newest acked stamp
        conf = SyncObjConf(
            password=secret,
            appendEntriesUseBatch=False,
            appendEntriesBatchSizeBytes=RAFT_APPEND_BATCH_BYTES,
            logCompactionBatchSize=RAFT_BATCH_BYTES,
            journalFile=os.path.join(data_dir, "raft.journal"),
            fullDumpFile=os.path.join(data_dir, "raft.snapshot"),
            # Not called (``Snapshots`` replaces PySyncObj's Serializer): set so that PySyncObj
            # hands the serializer no pickle of this object.
            serializer=snapshots.write_snapshot,
            deserializer=snapshots.read_snapshot,
            logCompactionMinEntries=compaction_entries,
            logCompactionMinTime=600,
            dynamicMembershipChange=True,
            onStateChanged=on_state_change,
            raftMinTimeout=RAFT_MIN_TIMEOUT,
            raftMaxTimeout=RAFT_MAX_TIMEOUT,
            leaderFallbackTimeout=1.5,  # a leader cut off from its majority steps down quickly
            connectionTimeout=3.5,
            # A restarted peer is reconnected to within half a second (PySyncObj: 5 s). Until
            # then two survivors of the next leader failure may not reach each other to elect.
            connectionRetryTime=0.5,
        )
        original = psyncobj.createJournal

        def create_journal(path: str | None) -> pjournal.Journal:
            self._journal = DurableJournal(path)
            return self._journal

        original_encryptor = psyncobj.getEncryptor
        psyncobj.createJournal = create_journal
        psyncobj.getEncryptor = _SignedFrames
        self._snapshots = snapshots.Snapshots(conf.fullDumpFile, RAFT_BATCH_BYTES, state, self._snapshot_installed,
                                              lambda node: self._backlogged(node), lambda node: node in self._held_back)
        original_serializer = psyncobj.Serializer
        psyncobj.Serializer = lambda *args: self._snapshots
        try:
            super().__init__(self_addr, peers, conf)
        finally:
            psyncobj.createJournal = original
            psyncobj.getEncryptor = original_encryptor
            psyncobj.Serializer = original_serializer
        transport = self._SyncObj__transport
        send = transport.send

        def durable_send(node: Any, message: dict[str, Any]) -> None:
            kind = message.get("type")
            if kind == "append_entries":
                message["sent"] = time.monotonic()  # echoed back: the lease counts from here
            elif kind == "next_node_idx":
                if self._echo is not None:
                    message["lease"] = self._echo
                # A follower's ack of appended entries must not go out before they are durable.
                if message.get("success") and self._sync_journal:
                    self._journal.sync()
            if kind == "append_entries" and message.get("entries"):
                entries = message["entries"]
                if self._backlogged(node):  # dropped: the entries go again from the first
                    self._SyncObj__raftNextIndex[node] = entries[0][1]
                    self._hold_back(node)
                    return
                if len(entries) > RAFT_APPEND_MAX_ENTRIES:  # the rest goes in the next message
                    message["entries"] = entries[:RAFT_APPEND_MAX_ENTRIES]
                    self._SyncObj__raftNextIndex[node] = entries[RAFT_APPEND_MAX_ENTRIES][1]
            send(node, message)
            if kind == "append_entries" and "serialized" in message and message["serialized"] is None:
                # No snapshot part this round (not copied yet, a round's time is up, or the
                # window is full). PySyncObj's loop would go on sending this empty message for
                # its whole send time (0.1 s, with every new entry) while commits wait; the
                # transmission goes on at the next tick.
                self._hold_back(node)

        transport.send = durable_send
        self._held_back: set[Any] = set()  # Raft thread only
        self._unverified_since: dict[ptcp.TcpConnection, float] = {}  # Raft thread only
        self.addOnTickCallback(self._drop_unverified_peers)
        self.addOnTickCallback(self._sync_before_waiting)

    def _backlogged(self, node: Any) -> bool:
        """Whether ``node``'s connection holds RAFT_SEND_WINDOW bytes not yet sent."""
        return raftconn.pending(self._SyncObj__transport._connections.get(node)) >= RAFT_SEND_WINDOW

    def _hold_back(self, node: Any) -> None:
        """Send ``node`` nothing more this tick: it leaves the connected set until the next
        tick, which ends PySyncObj's send loop for it (the loop sends until a tick's time
        is up). It reads what is queued meanwhile (each message a heartbeat). Never for a
        snapshot's parts: PySyncObj cancels the transmission of a node it finds outside the
        connected set, which then starts again from its first part (a 230 MB transfer
        restarted about twice a second this way)."""
        self._SyncObj__connectedNodes.discard(node)
        self._held_back.add(node)

    def _release_held_back(self) -> None:
        transport = self._SyncObj__transport
        for node in self._held_back:
            conn = transport._connections.get(node)
            if conn is not None and conn.state == ptcp.CONNECTION_STATE.CONNECTED:
                self._SyncObj__connectedNodes.add(node)
        self._held_back.clear()

    def _SyncObj__applyLogEntries(self) -> bool:  # noqa: N802 (PySyncObj's name)
        """PySyncObj's apply, in slices of APPLY_SLICE entries while the tick has
        APPLY_BUDGET left: the rest waits for the next tick, after this node has read its
        messages. The commit index is lowered while a slice applies, and restored; a read
        that sees the lowered one still waits for every acknowledged write (a write is
        acknowledged when it is applied)."""
        commit = self._SyncObj__raftCommitIndex
        if commit - self._SyncObj__raftLastApplied <= APPLY_SLICE:
            return super()._SyncObj__applyLogEntries()
        deadline = time.monotonic() + APPLY_BUDGET
        resend = False
        try:
            while self._SyncObj__raftLastApplied < commit and time.monotonic() < deadline:
                self._SyncObj__raftCommitIndex = min(commit, self._SyncObj__raftLastApplied + APPLY_SLICE)
                resend = super()._SyncObj__applyLogEntries() or resend
        finally:
            self._SyncObj__raftCommitIndex = commit
        return resend

    def _sync_before_waiting(self) -> None:
        """Tick callback (the last step before the tick waits for messages): the leader
        syncs what it appended in this tick now, while its followers sync the same entries,
        rather than at the start of the next tick, after their acks came (~0.4 ms of a
        commit at concurrency 1). The start of the tick still syncs whatever is left."""
        if self._journal is not None and self._sync_journal and self._isLeader():
            self._journal.sync()

    def _drop_unverified_peers(self) -> None:
        """Tick callback: close each incoming connection that has not sent a validly signed
        frame within RAFT_UNVERIFIED_TIMEOUT of its first tick (ticks come every 50 ms)."""
        pending = self._SyncObj__transport._unknownConnections
        since = self._unverified_since
        now = time.monotonic()
        for conn in list(pending):
            if conn.sendRandKey:
                since.pop(conn, None)
            elif now - since.setdefault(conn, now) > RAFT_UNVERIFIED_TIMEOUT:
                del since[conn]
                conn.disconnect()  # removes it from ``pending`` too
        for conn in [c for c in since if c not in pending]:
            del since[conn]

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        """PySyncObj's handler, plus leader leases, and a successful ack never moves a
        follower's next index back over entries already sent (see the module docstring)."""
        if self._pre_vote_message(node, message):
            return
        kind = message.get("type")
        if kind == "request_vote":
            if self._leader_heard_recently():
                return  # neither vote nor take up the term: the leader we hear from may hold a lease
            super()._SyncObj__onMessageReceived(node, message)
            self._stand_if_more_up_to_date(message)
            return
        if kind == "append_entries":
            term = message.get("term", -1)
            if term >= self._SyncObj__raftCurrentTerm:
                self._heard_leader = time.monotonic()
            sent = message.get("sent")
            self._echo = (term, sent) if isinstance(sent, float) else None
            try:
                super()._SyncObj__onMessageReceived(node, message)
                if message.get("serialized") is not None:
                    self._ack_snapshot_part(node)
            finally:
                self._echo = None
            return
        ahead = None
        if kind == "next_node_idx":
            stamp = message.get("lease")
            if stamp is not None and stamp[0] == self._SyncObj__raftCurrentTerm and self._isLeader():
                held = self._lease_acks.get(node)
                if held is None or held[0] != stamp[0] or held[1] < stamp[1]:
                    self._lease_acks[node] = (stamp[0], stamp[1])
            if message.get("success") and not message.get("reset"):
                ahead = self._SyncObj__raftNextIndex.get(node)
        super()._SyncObj__onMessageReceived(node, message)
        if ahead is not None and self._isLeader():
            next_index = self._SyncObj__raftNextIndex
            if node in next_index and next_index[node] < ahead:
                next_index[node] = ahead

    def _ack_snapshot_part(self, node: Any) -> None:
        """A follower receiving a snapshot answers nothing in PySyncObj, and the leader
        closes a connection it has read nothing from for ``connectionTimeout`` (3.5 s), with
        the parts still buffered in it: a transfer longer than that lost parts (measured: a
        1 GB copy arrived 2 MiB short, every time). The follower now tells the leader it is
        there at least every SNAPSHOT_ACK_EVERY, with an answer that changes nothing."""
        now = time.monotonic()
        if now - self._snapshot_acked < SNAPSHOT_ACK_EVERY:
            return
        self._snapshot_acked = now
        self._SyncObj__transport.send(node, {
            "type": "next_node_idx", "next_node_idx": self._SyncObj__getCurrentLogIndex() + 1,
            "reset": False, "success": False,
        })

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:  # noqa: N802 (PySyncObj's name)
        """What the connection still held is lost: a transfer to that node starts again
        from its first part (PySyncObj cancels it only if the node is still disconnected at
        its next send, and a reconnect can come first)."""
        super()._SyncObj__onNodeDisconnected(node)
        self._snapshots.drop_transmission(node)

    def _stand_if_more_up_to_date(self, vote_request: dict[str, Any]) -> None:
        """A candidate whose log is behind ours cannot win; Raft would wait for our own
        election timeout (0.4-1.2 s) before an up-to-date node stands. Stand within 50 ms
        instead: after a leader's death, one follower often misses its last entries."""
        ours = (self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex())
        theirs = (vote_request.get("last_log_term", -1), vote_request.get("last_log_index", -1))
        if not self._isLeader() and self._SyncObj__raftLeader is None and theirs < ours:
            soon = time.monotonic() + random.uniform(0.0, 0.05)
            self._SyncObj__raftElectionDeadline = min(self._SyncObj__raftElectionDeadline, soon)

    def _leader_heard_recently(self) -> bool:
        return not self._isLeader() and time.monotonic() - self._heard_leader < RAFT_MIN_TIMEOUT

    def lease_read_index(self) -> int | None:
        """While this node is the leader and holds a lease: its commit index, which every
        write acknowledged so far is at or below. Once applied here, a read of the local
        state is linearizable. None when a read needs a Raft barrier instead. Called from
        any thread (each value read is a single attribute read under the GIL)."""
        if not self._isLeader():
            return None
        term = self._SyncObj__raftCurrentTerm
        others = self._SyncObj__otherNodes
        need = (len(others) + 1) // 2  # follower acks that make a majority with this node
        if need:
            stamps = sorted((sent for node, (t, sent) in list(self._lease_acks.items()) if t == term and node in others),
                            reverse=True)
            if len(stamps) < need or time.monotonic() >= stamps[need - 1] + LEASE_FRACTION * RAFT_MIN_TIMEOUT:
                return None
        commit = self._SyncObj__raftCommitIndex
        # a new leader knows what was committed before it once its own first entry is
        noop = self._SyncObj__noopIDx
        if noop is None or commit < noop or not self._isLeader():
            return None
        return commit

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802,N803 (PySyncObj's names)
        # The leader counts its own log toward the commit at the start of a tick: every
        # entry appended in the previous tick is made durable here first (group commit).
        if self._journal is not None and self._sync_journal:
            self._journal.sync()
        if self._held_back:
            self._release_held_back()
        if self._SyncObj__raftCommitIndex - self._SyncObj__raftLastApplied > APPLY_SLICE:
            timeToWait = 0.0  # a backlog to apply: the next tick comes at once
        due = self._snapshots.next_round_in()
        if due is not None and self._isLeader():
            # An idle leader sends (and so asks for a snapshot's parts) every 0.1 s: a 620 MB
            # transfer took 99 s. Its next round is sent when due, at most every SEND_EVERY.
            at = psyncobj.monotonicTime() + due
            if self._SyncObj__newAppendEntriesTime > at:
                self._SyncObj__newAppendEntriesTime = at
            timeToWait = min(timeToWait, due)
        self._pre_vote_tick()
        self._stagger_snapshots()
        super()._onTick(timeToWait)

    def _stagger_snapshots(self) -> None:
        """Give this replica its own snapshot phase (``snapshots.staggered_threshold``):
        recomputed only when the log's first entry or the membership changed."""
        log = self._SyncObj__raftLog
        if not len(log):
            return
        others = self._SyncObj__otherNodes
        key = (log[0][1], len(others))
        if key == self._stagger_key:
            return
        self._stagger_key = key
        me = self._SyncObj__selfNode.id
        ids = sorted({node.id for node in others} | {me})
        self._SyncObj__conf.logCompactionMinEntries = snapshots.staggered_threshold(
            key[0], self._compaction_entries, ids.index(me), len(ids))

    @replicated
    def apply_cmd(self, data: bytes) -> dict[str, Any]:
        index = self.raftLastApplied + 1
        try:
            cmd = msgpack.unpackb(data, raw=False)
        except Exception:
            return {"ok": False, "err": "BadRequest", "msg": "undecodable command"}
        return self.state.apply(index, cmd)

    @property
    def snapshot_stats(self) -> dict[str, int]:
        """Copies made for followers, transfers sent, dropped and installed (``Snapshots``)."""
        return self._snapshots.stats

    @property
    def journal_syncs(self) -> int:
        return self._journal.syncs if self._journal else 0

    # -------------------------------------------------------------- snapshots

    def _snapshot_installed(self) -> None:
        """After a leader's snapshot was installed (Raft thread): the install took a while,
        during which the election timer (set when its last part came) may have run out;
        the leader was heard just now, so the timer starts from here."""
        now = time.monotonic()
        self._heard_leader = now
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()

    def destroy(self) -> None:
        super().destroy()
        thread = self._SyncObj__thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        self._snapshots.close()  # a snapshot being written must not outlive the node
