"""Raft transport frames: signed with the cluster secret, tamper-evident, timestamped, and
refused before they are buffered when they declare more than any legitimate peer sends."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pysyncobj.pickle as pickle
import pytest

from core.wire import MAX_HEADER
from raftmeta.node import RAFT_MAX_FRAME, RAFT_UNVERIFIED_TIMEOUT, MetaNode, _SignedFrames
from raftmeta.state import MetaState


def test_round_trip_and_timestamp() -> None:
    frames = _SignedFrames("s3cret")
    token = frames.encrypt_at_time(b"payload", 1234)
    assert frames.extract_timestamp(token) == 1234
    assert frames.decrypt(token) == b"payload"
    assert frames.decrypt(frames.encrypt_at_time(b"", 0)) == b""


@pytest.mark.parametrize("damage", ["flip data", "flip mac", "flip time", "truncate", "other secret"])
def test_tampered_or_foreign_frames_are_refused(damage: str) -> None:
    frames = _SignedFrames("s3cret")
    token = bytearray(frames.encrypt_at_time(b"pickled message", 99))
    reader = frames
    if damage == "flip data":
        token[10] ^= 1
    elif damage == "flip mac":
        token[-1] ^= 1
    elif damage == "flip time":
        token[7] ^= 1
    elif damage == "truncate":
        token = token[:30]
    else:
        reader = _SignedFrames("another secret")
    with pytest.raises(ValueError):
        reader.extract_timestamp(bytes(token))
    with pytest.raises(ValueError):
        reader.decrypt(bytes(token))


# ------------------------------------------------------------- frame-size caps on the Raft port
#
# A three-node group on loopback (a MetaNode each: PySyncObj with its own thread); raw
# sockets play the attacker against the leader's Raft port.

SECRET = "raft-frames-secret"


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[MetaNode]]:
    root = tmp_path_factory.mktemp("raft")
    addrs = [f"127.0.0.1:{p}" for p in _free_ports(3)]
    states: list[MetaState] = []
    nodes: list[MetaNode] = []
    try:
        for i, addr in enumerate(addrs):
            data_dir = root / f"meta{i}"
            data_dir.mkdir()
            states.append(MetaState(str(data_dir / "meta.sqlite")))
            nodes.append(MetaNode(addr, [a for a in addrs if a != addr], str(data_dir), SECRET, states[-1],
                                  sync_journal=False))
        yield nodes
    finally:
        for node in nodes:
            node.destroy()
        for node in nodes:
            thread = node._SyncObj__thread
            if thread is not None:
                thread.join(10)
        for state in states:
            state.close()


def _leader(nodes: list[MetaNode], timeout: float = 15.0) -> tuple[MetaNode, int]:
    """The leader every node agrees on, and its term."""

    def agreed() -> tuple[MetaNode, int] | None:
        leaders = [n for n in nodes if n._isLeader()]
        if len(leaders) != 1 or not all(n.isReady() for n in nodes):
            return None
        if {n._getLeader() and n._getLeader().address for n in nodes} != {leaders[0].selfNode.address}:
            return None
        return leaders[0], leaders[0].raftCurrentTerm

    return _wait(agreed, timeout, "an agreed leader")


def _commit(nodes: list[MetaNode], pad: int = 0) -> None:
    """Commit one entry through a follower (forwarded to the leader as one frame, then
    replicated to every node) and wait until every node has applied it."""
    follower = next(n for n in nodes if not n._isLeader())
    reply = follower.apply_cmd(msgpack.packb({"op": "barrier", "pad": bytes(pad)}), sync=True, timeout=10)
    assert reply.get("ok") and reply.get("index"), reply
    _wait(lambda: all(n.raftLastApplied >= reply["index"] for n in nodes), 10, "every node to apply the entry")


def _raft_addr(node: MetaNode) -> tuple[str, int]:
    host, port = node.selfNode.address.rsplit(":", 1)
    return host, int(port)


def _frame(frames: _SignedFrames, message: Any) -> bytes:
    """A frame as a PySyncObj node with the cluster secret sends it."""
    token = frames.encrypt_at_time(zlib.compress(pickle.dumps(message), 0), int(time.monotonic()))
    return struct.pack("i", len(token)) + token


def _recv_frame(sock: socket.socket, frames: _SignedFrames) -> Any:
    def exactly(n: int) -> bytes:
        got = b""
        while len(got) < n:
            data = sock.recv(n - len(got))
            assert data, "connection closed"
            got += data
        return got

    (size,) = struct.unpack("i", exactly(4))
    return pickle.loads(zlib.decompress(frames.decrypt(exactly(size))))


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the peer closed ``sock`` (EOF or reset), or None if it did not in time."""
    start = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - start < seconds:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionError:
            return time.monotonic() - start
    return None


def test_oversized_frame_closes_the_connection_before_it_is_buffered(group: list[MetaNode]) -> None:
    _leader(group)
    # what the cap must stay above: a command as large as an RPC header (1 MiB) commits,
    # forwarded to the leader in one frame and replicated
    assert RAFT_MAX_FRAME >= 4 * MAX_HEADER
    _commit(group, pad=MAX_HEADER - 100)
    leader, term = _leader(group)
    declared = [
        ("unverified, above RAFT_MAX_FRAME", False, 1 << 30),
        ("unverified, above the unverified cap", False, 64 * 1024),
        ("unverified, negative", False, -5),
        ("signed peer, above RAFT_MAX_FRAME", True, RAFT_MAX_FRAME + 1),
    ]
    for what, signed, length in declared:
        with socket.create_connection(_raft_addr(leader), timeout=5) as sock:
            if signed:  # PySyncObj's key exchange, as a node holding the secret does it
                frames = _SignedFrames(SECRET)
                mine = os.urandom(32)
                sock.sendall(_frame(frames, mine))
                echoed, theirs = _recv_frame(sock, frames)
                assert echoed == mine and len(theirs) == 32
            # the prefix and 4 KB of the body: the rest is never sent
            sock.sendall(struct.pack("i", length) + os.urandom(4096))
            took = _closed_within(sock, 2.0)
            assert took is not None, f"{what}: the connection stayed open waiting for {length} bytes"
    # the group kept its leader and its term, and commits
    assert _leader(group) == (leader, term)
    _commit(group)


def test_unverified_connection_is_closed_after_the_deadline(group: list[MetaNode]) -> None:
    leader, term = _leader(group)
    silent = socket.create_connection(_raft_addr(leader), timeout=5)
    trickler = socket.create_connection(_raft_addr(leader), timeout=5)
    try:
        start = time.monotonic()
        trickler.sendall(struct.pack("i", 200))  # a frame small enough, sent 1 byte a while
        closed: dict[str, float] = {}
        limit = RAFT_UNVERIFIED_TIMEOUT + 1.5
        while len(closed) < 2 and time.monotonic() - start < limit:
            for name, sock in (("silent", silent), ("trickler", trickler)):
                if name not in closed and _closed_within(sock, 0.1) is not None:
                    closed[name] = time.monotonic() - start
            if "trickler" not in closed:
                with contextlib.suppress(OSError):
                    trickler.send(b"\0")
        assert set(closed) == {"silent", "trickler"}, f"still open after {limit}s: closed only {closed}"
        assert all(RAFT_UNVERIFIED_TIMEOUT - 0.5 <= t for t in closed.values()), closed
    finally:
        silent.close()
        trickler.close()
    assert _leader(group) == (leader, term)
    _commit(group)


def test_large_entries_replicate_whole_in_one_piece(group: list[MetaNode], caplog: pytest.LogCaptureFixture) -> None:
    """Entries from 60 KiB to 1 MiB reach every follower intact. PySyncObj sends an entry
    at least appendEntriesBatchSizeBytes long in pieces and gets the last piece wrong
    (followers unpickled truncated entries: 'pickle data was truncated'); no entry is
    that long any more."""
    _leader(group)
    sizes = [(1 << 16) - 64 + 7 * i for i in range(12)] + [200_000, 3 * (1 << 16) - 20, MAX_HEADER - 100]
    with caplog.at_level(logging.ERROR, logger="pysyncobj"):
        for size in sizes:
            _commit(group, pad=size)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
