"""``raftmeta.snapshots.Snapshots`` driven as PySyncObj drives it, on real SQLite files: a
compaction that copies nothing and is durable before SUCCESS, a copy for a follower made
from a read transaction while writes go on, transmission in parts, install by rename,
restart from the record, and the earlier layout converted."""

from __future__ import annotations

import os
import pickle
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.config import SERIALIZER_STATE

from raftmeta import snapshots
from raftmeta.snapshots import DatabaseBehind, Snapshots, read_record, read_snapshot
from raftmeta.state import MetaState

PAD = "x" * 1500


def put(key: str) -> dict[str, Any]:
    return {"op": "put_object", "bucket": "b", "key": key, "ts": 1.0,
            "obj": {"size": 1, "etag": "e", "sha256": "0" * 64, "content_type": "a/b", "created": 1.0,
                    "meta": {"user": {"pad": PAD}}, "chunks": []}}


def fill(state: MetaState, first_index: int, entries: int, per_entry: int = 100) -> int:
    """Apply ``entries`` batch entries of ``per_entry`` objects each; the next free index."""
    index = first_index
    for _ in range(entries):
        cmds = [put(f"k{index:07d}-{j:03d}") for j in range(per_entry)]
        assert state.apply(index, {"op": "batch", "cmds": cmds})["ok"]
        index += 1
    return index


def new_state(path: Path) -> MetaState:
    state = MetaState(str(path))
    assert state.apply(1, {"op": "create_bucket", "bucket": "b", "owner": "o", "ts": 1.0})["ok"]
    return state


def raft_data(last: int) -> tuple[Any, ...]:
    """What PySyncObj passes ``serialize``: (None, last applied entry, entry before, cluster);
    it claims the entry before."""
    return (None, (b"last", last, 1), (b"prev", last - 1, 1), {"node"})


def compact(snaps: Snapshots, last: int) -> tuple[int, int | None]:
    snaps.serialize(raft_data(last), last - 1)
    return wait_done(snaps)


def wait_done(snaps: Snapshots, timeout: float = 60) -> tuple[int, int | None]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = snaps.checkSerializing()
        if status[0] != SERIALIZER_STATE.SERIALIZING:
            return status
        time.sleep(0.005)
    raise AssertionError("compaction did not finish")


def keys_of(db_path: str) -> list[str]:
    db = sqlite3.connect(db_path)
    try:
        return [r[0] for r in db.execute("SELECT key FROM objects ORDER BY key")]
    finally:
        db.close()


def transmit(leader: Snapshots, follower: Snapshots, batch: int, node: str = "f",
             between: Any = None) -> int:
    """Move a snapshot as PySyncObj does, part by part (``between`` runs at each poll, as
    the leader's applies do); the number of parts."""
    parts = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if between is not None:
            between()
        part = leader.getTransmissionData(node)
        if part is None:  # not copied or read ahead yet: the Raft thread does not wait
            time.sleep(0.001)
            continue
        assert len(part[0]) <= batch and part[1] == (parts == 0)
        parts += 1
        if follower.setTransmissionData(part):
            assert part[2]
            return parts
    raise AssertionError("transmission did not finish")


def test_a_compaction_copies_nothing_and_is_durable_before_success(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """SUCCESS (after which PySyncObj drops its log) only once the database's WAL and file
    are synced and the record naming them is renamed into place and its directory synced."""
    state = new_state(tmp_path / "meta.sqlite")
    index = fill(state, 2, 30)
    events: list[str] = []
    gate = threading.Event()
    real_fsync_file, real_fsync_dir, real_replace = snapshots._fsync_file, snapshots.fsync_dir, os.replace

    def fsync_file(path: str) -> None:
        events.append(f"fsync {os.path.basename(path)}")
        real_fsync_file(path)

    def fsync_dir(path: str) -> None:
        gate.wait(10)
        events.append("fsync dir")
        real_fsync_dir(path)

    def replace(src: str, dst: str) -> None:
        events.append(f"rename {os.path.basename(src)}")
        real_replace(src, dst)

    monkeypatch.setattr(snapshots, "_fsync_file", fsync_file)
    monkeypatch.setattr(snapshots, "fsync_dir", fsync_dir)
    monkeypatch.setattr(snapshots.os, "replace", replace)
    snaps = Snapshots(str(tmp_path / "raft.snapshot"), 1 << 16, state)
    snaps.serialize(raft_data(index - 1), index - 2)
    deadline = time.monotonic() + 10
    while "rename raft.snapshot.tmp" not in events and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(5):  # renamed, directory not yet synced: still serializing
        assert snaps.checkSerializing() == (SERIALIZER_STATE.SERIALIZING, index - 2)
        assert snaps.getTransmissionData("f") is None  # and no copy claims a record in flux
        time.sleep(0.01)
    gate.set()
    assert wait_done(snaps) == (SERIALIZER_STATE.SUCCESS, index - 2)
    assert events == ["fsync meta.sqlite-wal", "fsync meta.sqlite", "rename raft.snapshot.tmp", "fsync dir"]
    assert read_record(snaps.path) == (raft_data(index - 1)[1:], index - 1)
    assert os.path.getsize(snaps.path) < 1024  # a record, not a copy of ~6 MB
    assert sorted(os.listdir(tmp_path)) == ["meta.sqlite", "meta.sqlite-shm", "meta.sqlite-wal", "raft.snapshot"]
    snaps.close()
    state.close()


def test_a_follower_gets_a_copy_holding_at_least_the_claim_while_writes_go_on(tmp_path: Path) -> None:
    """The copy is made from a read transaction while the leader applies on; it holds every
    entry up to the claim (later ones are skipped by index when the follower is sent them
    again), installs by rename, and the follower's record names it. No compaction starts
    while the copy is being sent, and the copy is gone once sent."""
    (tmp_path / "l").mkdir()
    lstate = new_state(tmp_path / "l" / "meta.sqlite")
    index = fill(lstate, 2, 150)  # ~15,000 objects, ~30 MB: many backup steps
    leader = Snapshots(str(tmp_path / "l" / "raft.snapshot"), 1 << 16, lstate)
    assert compact(leader, index - 1) == (SERIALIZER_STATE.SUCCESS, index - 2)
    claimed = set(keys_of(lstate.path))
    (tmp_path / "f").mkdir()
    fstate = new_state(tmp_path / "f" / "meta.sqlite")
    fill(fstate, 2, 1)  # older than the leader's
    installed: list[float] = []
    follower = Snapshots(str(tmp_path / "f" / "raft.snapshot"), 1 << 16, fstate, lambda: installed.append(1.0))
    applied_during = [index]

    def leader_applies_on() -> None:
        applied_during[0] = fill(lstate, applied_during[0], 1, per_entry=10)
        if leader.copy is not None:
            leader.serialize(raft_data(applied_during[0] - 1), applied_during[0] - 2)
            assert leader.job is None  # deferred while the copy is made and sent

    parts = transmit(leader, follower, 1 << 16, between=leader_applies_on)
    assert parts > 10 and applied_during[0] > index + 1, "the writer was never concurrent with the copy"
    assert leader.copy is None and not os.path.exists(leader.copy_path)
    ino_received = os.stat(follower.received).st_ino
    assert follower.deserialize() == (None, *raft_data(index - 1)[1:]) and installed == [1.0]
    assert os.stat(fstate.path).st_ino == ino_received  # renamed into place, not copied
    got = set(keys_of(fstate.path))
    assert claimed <= got <= set(keys_of(lstate.path))  # the claim, and no more than was applied
    assert fstate.applied_index() == fstate.last_applied >= index - 1
    assert fstate.db.execute("SELECT name FROM sqlite_master WHERE name='raft_snapshot'").fetchone() is None
    assert read_record(follower.path) == (raft_data(index - 1)[1:], fstate.applied_index())
    assert fstate.apply(fstate.applied_index() + 1, put("after"))["ok"]  # the live database takes writes
    assert compact(leader, applied_during[0] - 1)[0] == SERIALIZER_STATE.SUCCESS  # compactions again
    for s in (leader, follower):
        s.close()
    lstate.close()
    fstate.close()


def test_one_copy_serves_the_followers_that_ask_meanwhile(tmp_path: Path) -> None:
    state = new_state(tmp_path / "meta.sqlite")
    index = fill(state, 2, 20)
    leader = Snapshots(str(tmp_path / "raft.snapshot"), 4096, state)
    compact(leader, index - 1)
    followers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        followers.append(Snapshots(str(tmp_path / name / "raft.snapshot"), 4096,
                                   new_state(tmp_path / name / "meta.sqlite")))
    copies = set()
    deadline = time.monotonic() + 30
    done = {"a": False, "b": False}
    while not all(done.values()) and time.monotonic() < deadline:
        for name, follower in zip(("a", "b"), followers, strict=True):
            if leader.copy is not None:
                copies.add(id(leader.copy))
            part = None if done[name] else leader.getTransmissionData(name)
            if part is not None and follower.setTransmissionData(part):
                done[name] = True
        time.sleep(0.0005)
    assert all(done.values()) and len(copies) == 1 and leader.copy is None
    for follower in followers:
        follower.deserialize()
        assert keys_of(follower.state.path) == keys_of(state.path)
        follower.close()
        follower.state.close()
    leader.close()
    state.close()


def test_a_copy_nobody_asks_for_any_more_is_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A leader that stepped down is not asked for parts: the copy and its reader go, and
    compactions start again."""
    monkeypatch.setattr(snapshots, "SENDER_IDLE", 0.2)
    state = new_state(tmp_path / "meta.sqlite")
    index = fill(state, 2, 5)
    snaps = Snapshots(str(tmp_path / "raft.snapshot"), 4096, state)
    compact(snaps, index - 1)
    deadline = time.monotonic() + 10
    while snaps.getTransmissionData("f") is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert snaps.copy is not None and "f" in snaps.senders
    snaps.serialize(raft_data(index - 1), index - 2)
    assert snaps.job is None  # deferred
    time.sleep(0.3)
    snaps.serialize(raft_data(index - 1), index - 2)
    assert snaps.copy is None and not snaps.senders and not os.path.exists(snaps.copy_path)
    assert wait_done(snaps)[0] == SERIALIZER_STATE.SUCCESS
    snaps.close()
    state.close()


def test_restart_reads_the_record_and_refuses_a_database_that_lost_entries(tmp_path: Path) -> None:
    state = new_state(tmp_path / "meta.sqlite")
    index = fill(state, 2, 5)
    snaps = Snapshots(str(tmp_path / "raft.snapshot"), 1 << 16, state)
    compact(snaps, index - 1)
    fill(state, index, 2)  # the live database moves past the record
    snaps.close()
    again = Snapshots(str(tmp_path / "raft.snapshot"), 1 << 16, state)
    assert again.deserialize() == (None, *raft_data(index - 1)[1:])
    again.close()
    state.close()
    for suffix in ("", "-wal", "-shm"):  # the live database lost: the compacted log cannot rebuild it
        (tmp_path / f"meta.sqlite{suffix}").unlink(missing_ok=True)
    state = MetaState(str(tmp_path / "meta.sqlite"))
    with pytest.raises(DatabaseBehind, match="Replace this member"):
        Snapshots(str(tmp_path / "raft.snapshot"), 1 << 16, state)
    state.close()


def test_the_earlier_layout_is_converted_at_start(tmp_path: Path) -> None:
    """``raft.snapshot`` used to be a full copy, ``raft.snapshot.installed`` an install's
    marker: both become the record; a copy newer than the database is restored first."""
    state = new_state(tmp_path / "meta.sqlite")
    index = fill(state, 2, 5)
    path = str(tmp_path / "raft.snapshot")
    conn = snapshots.begin_read(state.path)
    snapshots.write_snapshot(conn, path, raft_data(index - 1)[1:])
    conn.close()
    newer = fill(state, index, 2)
    Snapshots(path, 1 << 16, state).close()  # the database is newer: kept
    assert read_record(path) == (raft_data(index - 1)[1:], index - 1)
    assert state.applied_index() == newer - 1

    conn = snapshots.begin_read(state.path)
    snapshots.write_snapshot(conn, path, raft_data(newer - 1)[1:])
    conn.close()
    keys = keys_of(path)
    state.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"meta.sqlite{suffix}").unlink(missing_ok=True)
    state = MetaState(str(tmp_path / "meta.sqlite"))
    Snapshots(path, 1 << 16, state).close()  # the copy is newer: restored, then recorded
    assert state.applied_index() == state.last_applied == newer - 1 and keys_of(state.path) == keys
    assert read_record(path) == (raft_data(newer - 1)[1:], newer - 1)

    marker = tmp_path / "raft.snapshot.installed"
    marker.write_bytes(pickle.dumps((raft_data(newer - 1)[1:], newer - 1)))
    os.unlink(path)
    Snapshots(path, 1 << 16, state).close()
    assert not marker.exists() and read_record(path) == (raft_data(newer - 1)[1:], newer - 1)
    # a marker naming an install that never reached the database: nothing claims it
    os.unlink(path)
    marker.write_bytes(pickle.dumps((raft_data(newer + 50)[1:], newer + 50)))
    Snapshots(path, 1 << 16, state).close()
    assert not marker.exists() and not os.path.exists(path)
    state.close()


def test_the_copy_is_synced_in_steps_from_a_low_priority_thread(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy's dirty pages go to disk while it is written (not all at once ahead of the
    journal's syncs), and its thread runs at ``BACKGROUND_NICE``; the copy is whole."""
    state = new_state(tmp_path / "meta.sqlite")
    index = fill(state, 2, 50)  # ~5,000 objects, ~10 MB
    monkeypatch.setattr(snapshots, "FLUSH_EVERY", 1 << 20)
    synced: list[int] = []
    priorities: list[int] = []
    real_fdatasync, real_write = os.fdatasync, snapshots.write_snapshot

    def fdatasync(fd: int) -> None:
        synced.append(fd)
        real_fdatasync(fd)

    def write_snapshot(*args: Any) -> None:
        priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        real_write(*args)

    monkeypatch.setattr(snapshots.os, "fdatasync", fdatasync)
    monkeypatch.setattr(snapshots, "write_snapshot", write_snapshot)
    before = set(keys_of(state.path))
    snaps = Snapshots(str(tmp_path / "raft.snapshot"), 1 << 16, state)
    compact(snaps, index - 1)
    (tmp_path / "f").mkdir()
    follower = Snapshots(str(tmp_path / "f" / "raft.snapshot"), 1 << 16, new_state(tmp_path / "f" / "meta.sqlite"))
    transmit(snaps, follower, 1 << 16)
    assert len(synced) >= 2, synced  # ~10 MB: a sync after each 4 MiB backup step but the last
    assert priorities == [max(os.getpriority(os.PRIO_PROCESS, 0), snapshots.BACKGROUND_NICE)]
    assert read_snapshot(follower.received)[1] == index - 1
    assert set(keys_of(follower.received)) == before
    for s in (snaps, follower):
        s.close()
    follower.state.close()
    state.close()


def _snapshot_indexes(every: int, position: int, members: int, first: int, count: int) -> list[int]:
    """Where a replica's snapshots fall, from a log starting at ``first``: PySyncObj starts
    one once the log holds the threshold, and the log then starts at that index."""
    out = []
    for _ in range(count):
        first += snapshots.staggered_threshold(first, every, position, members)
        out.append(first)
    return out


@pytest.mark.parametrize("every", [40, 3000, 50_000])
def test_replicas_snapshot_in_phases_of_their_own(every: int) -> None:
    """Three replicas whose logs start at the same index (a fresh group) snapshot a third
    of the interval apart, each once per ``every`` entries, and never at the same index."""
    runs = [_snapshot_indexes(every, i, 3, 1, 30) for i in range(3)]
    for i, indexes in enumerate(runs):
        assert {x % every for x in indexes} == {i * every // 3}
        gaps = [b - a for a, b in zip([1, *indexes], indexes, strict=False)]
        assert all(every // 2 <= g < every * 3 // 2 for g in gaps), gaps
        assert all(g == every for g in gaps[1:])
    everyone = sorted(x for indexes in runs for x in indexes)
    assert min(b - a for a, b in zip(everyone, everyone[1:], strict=False)) >= every // 3 - 1


def test_a_restarted_replica_falls_back_into_its_phase() -> None:
    """Wherever its log starts (a snapshot installed from the leader, a restart), the
    replica's next snapshot is at its own phase, at least half an interval away."""
    every = 3000
    for first in (1, 999, 1000, 1001, 123_456, 7_777_777):
        threshold = snapshots.staggered_threshold(first, every, 2, 3)
        assert every // 2 <= threshold < every * 3 // 2
        assert (first + threshold) % every == 2 * every // 3


def test_one_replica_or_a_tiny_interval_is_left_as_configured() -> None:
    assert snapshots.staggered_threshold(12345, 3000, 0, 1) == 3000
    assert snapshots.staggered_threshold(12345, 1, 1, 3) == 1


def test_a_replica_whose_database_is_behind_its_record_exits_with_a_clear_error(tmp_path: Path) -> None:
    """The real server process: it says what is wrong and what to do, and exits 2."""
    import subprocess
    import sys

    from chaos.cluster import free_ports

    state = new_state(tmp_path / "meta.sqlite")
    index = fill(state, 2, 3)
    snapshots.write_record(str(tmp_path / "raft.snapshot"), raft_data(index + 10)[1:], index + 10)
    state.close()
    raft, rpc = (f"127.0.0.1:{p}" for p in free_ports(2))
    done = subprocess.run(
        [sys.executable, "-m", "cairn.cli", "raftmeta", "--raft", raft, "--peers", raft, "--rpc", rpc,
         "--data-dir", str(tmp_path)],
        env=dict(os.environ, CAIRN_CLUSTER_SECRET="s" * 32), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"is at index {index - 1}, but it was synced at index {index + 10}" in done.stderr
    assert "Replace this member" in done.stderr and "Traceback" not in done.stderr


def test_a_snapshot_that_lost_a_part_on_the_way_is_not_installed(tmp_path: Path) -> None:
    """A part lost with a dropped connection leaves the file shorter than its header says:
    the follower drops it (the leader sends it again), and a whole one installs."""
    (tmp_path / "l").mkdir()
    lstate = new_state(tmp_path / "l" / "meta.sqlite")
    index = fill(lstate, 2, 20)
    leader = Snapshots(str(tmp_path / "l" / "raft.snapshot"), 4096, lstate)
    compact(leader, index - 1)
    (tmp_path / "f").mkdir()
    follower = Snapshots(str(tmp_path / "f" / "raft.snapshot"), 4096, new_state(tmp_path / "f" / "meta.sqlite"))
    parts = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        part = leader.getTransmissionData("f")
        if part is None:
            time.sleep(0.001)
            continue
        parts += 1
        if parts == 7:
            continue  # lost
        if follower.setTransmissionData(part) or part[2]:
            break
    assert part is not None and part[2] and follower.received is None
    assert not os.path.exists(str(tmp_path / "f" / "raft.snapshot.1.tmp"))
    transmit(leader, follower, 4096)
    follower.deserialize()
    assert keys_of(follower.state.path) == keys_of(lstate.path)
    for s in (leader, follower):
        s.close()
    follower.state.close()
    lstate.close()


def _sending(tmp_path: Path, **hooks: Any) -> tuple[Snapshots, MetaState]:
    """A leader whose copy for follower "f" is made and whose first part went."""
    state = new_state(tmp_path / "meta.sqlite")
    index = fill(state, 2, 20)
    leader = Snapshots(str(tmp_path / "raft.snapshot"), 4096, state, **hooks)
    compact(leader, index - 1)
    deadline = time.monotonic() + 30
    while leader.getTransmissionData("f") is None:
        assert time.monotonic() < deadline, "no first part"
        time.sleep(0.001)
    return leader, state


def test_a_follower_held_back_for_a_tick_keeps_its_transmission(tmp_path: Path) -> None:
    """PySyncObj cancels the transmission of every node outside its connected set; a node
    held back until the next tick (its round of parts is over) is still connected: its
    transfer goes on from where it was. A disconnect starts it again from the first part."""
    held = {"f"}
    leader, state = _sending(tmp_path, held_back=lambda node: node in held)
    sender = leader.senders["f"]
    leader.cancelTransmisstion("f")
    assert leader.senders.get("f") is sender and not sender.stop
    held.clear()
    leader.cancelTransmisstion("f")
    assert "f" not in leader.senders and sender.stop
    leader.close()
    state.close()


def test_a_disconnect_drops_a_held_back_transmission(tmp_path: Path) -> None:
    leader, state = _sending(tmp_path, held_back=lambda node: True)
    sender = leader.senders["f"]
    leader.drop_transmission("f")
    assert "f" not in leader.senders and sender.stop
    leader.close()
    state.close()


def test_no_part_goes_while_the_followers_window_is_full(tmp_path: Path) -> None:
    full: set[str] = set()
    leader, state = _sending(tmp_path, window_full=lambda node: node in full)
    sender = leader.senders["f"]
    full.add("f")
    time.sleep(0.05)  # the reader has parts ready
    before = sender.parts_sent
    assert all(leader.getTransmissionData("f") is None for _ in range(20))
    assert sender.parts_sent == before
    full.clear()
    deadline = time.monotonic() + 5
    while leader.getTransmissionData("f") is None:
        assert time.monotonic() < deadline, "no part once the window had room"
        time.sleep(0.001)
    assert sender.parts_sent == before + 1
    leader.close()
    state.close()


def test_rounds_of_parts_are_paced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round takes at most SEND_SLICE and the next starts SEND_EVERY after it began:
    the Raft thread sends parts for a bounded share of its time."""
    monkeypatch.setattr(snapshots, "SEND_SLICE", 0.0)
    monkeypatch.setattr(snapshots, "SEND_EVERY", 1.0)
    leader, state = _sending(tmp_path)
    time.sleep(1.05)  # the reader has parts ready; the first round's pause is over
    assert leader.getTransmissionData("f") is None  # the first round's slice was used up
    assert leader.getTransmissionData("f") is not None  # the next round starts
    started = time.monotonic()
    assert leader.getTransmissionData("f") is None  # its slice is used up
    while time.monotonic() - started < 0.5:
        assert leader.getTransmissionData("f") is None
        time.sleep(0.01)
    time.sleep(0.55)
    assert leader.getTransmissionData("f") is not None
    leader.close()
    state.close()


def test_the_next_round_is_due_when_its_pause_is_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle leader asks for parts every 0.1 s only: ``next_round_in`` tells its tick when
    the next round of a transmission may start (never before SEND_EVERY after the last)."""
    monkeypatch.setattr(snapshots, "SEND_SLICE", 0.0)
    monkeypatch.setattr(snapshots, "SEND_EVERY", 1.0)
    state = new_state(tmp_path / "meta.sqlite")
    fill(state, 2, 20)
    idle = Snapshots(str(tmp_path / "idle.snapshot"), 4096, state)
    assert idle.next_round_in() is None  # nothing being sent
    idle.close()
    (tmp_path / "l").mkdir()
    leader, state2 = _sending(tmp_path / "l")
    due = leader.next_round_in()
    assert due is not None and 0.5 < due <= 1.0
    assert leader.getTransmissionData("f") is None  # the round's slice is used up
    assert leader.next_round_in() > 0.5  # still not before the pause is over
    leader.close()
    state2.close()
    state.close()
