"""``raftmeta.snapshots.Snapshots`` driven as PySyncObj drives it, on real SQLite files:
production from a read transaction while writes go on, durability before SUCCESS,
transmission in parts, install by rename, and restart keeping the newer database."""

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
from raftmeta.snapshots import Snapshots, read_snapshot
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


def raft_data(claim: int) -> tuple[Any, ...]:
    """What PySyncObj passes ``serialize``: (None, last entry, entry before, cluster)."""
    return (None, (b"last", claim + 1, 1), (b"prev", claim, 1), {"node"})


def wait_done(snaps: Snapshots, timeout: float = 60) -> tuple[int, int | None]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = snaps.checkSerializing()
        if status[0] != SERIALIZER_STATE.SERIALIZING:
            return status
        time.sleep(0.005)
    raise AssertionError("snapshot did not finish")


def keys_of(db_path: str) -> list[str]:
    db = sqlite3.connect(db_path)
    try:
        return [r[0] for r in db.execute("SELECT key FROM objects ORDER BY key")]
    finally:
        db.close()


def test_snapshot_holds_exactly_what_was_applied_before_it_began(tmp_path: Path) -> None:
    """Writes go on (and commit: WAL) while the snapshot is copied; the snapshot holds every
    entry up to the index applied when ``serialize`` was called, and none after."""
    state = new_state(tmp_path / "meta.sqlite")
    index = fill(state, 2, 150)  # ~15,000 objects, ~30 MB: many backup steps
    claimed = index - 1
    before = set(keys_of(state.path))
    snaps = Snapshots(str(tmp_path / "raft.snapshot"), 1 << 16, state)
    snaps.serialize(raft_data(claimed), claimed)
    during = 0
    while snaps.checkSerializing()[0] == SERIALIZER_STATE.SERIALIZING or during == 0:
        index = fill(state, index, 1, per_entry=10)  # the Raft thread applies on
        during += 1
    assert during > 1, "the writer was never concurrent with the copy"
    # (the loop's last checkSerializing call was SUCCESS, which clears the job)
    assert snaps.job is None and os.path.isfile(snaps.path)
    data, applied = read_snapshot(snaps.path)
    assert applied == claimed and data == raft_data(claimed)[1:]
    assert set(keys_of(snaps.path)) == before  # every earlier entry, no later one
    assert state.applied_index() == index - 1 > claimed
    snaps.close()
    state.close()


def test_success_only_once_the_file_is_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = new_state(tmp_path / "meta.sqlite")
    fill(state, 2, 3)
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
    snaps.serialize(raft_data(4), 4)
    deadline = time.monotonic() + 10
    while "rename raft.snapshot.tmp" not in events and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(5):  # renamed, directory not yet synced: still serializing
        assert snaps.checkSerializing() == (SERIALIZER_STATE.SERIALIZING, 4)
        assert snaps.getTransmissionData("f") is None  # and nothing is sent from a file in flux
        time.sleep(0.01)
    gate.set()
    assert wait_done(snaps) == (SERIALIZER_STATE.SUCCESS, 4)
    assert events == ["fsync raft.snapshot.tmp", "rename raft.snapshot.tmp", "fsync dir"]
    snaps.close()
    state.close()


def transmit(leader: Snapshots, follower: Snapshots, batch: int) -> int:
    """Move a snapshot as PySyncObj does, part by part; the number of parts."""
    parts = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        part = leader.getTransmissionData("f")
        if part is None:  # not read ahead yet: the Raft thread does not wait
            time.sleep(0.001)
            continue
        assert len(part[0]) <= batch and part[1] == (parts == 0)
        parts += 1
        if follower.setTransmissionData(part):
            assert part[2]
            return parts
    raise AssertionError("transmission did not finish")


def test_install_renames_the_received_file_and_snapshots_it(tmp_path: Path) -> None:
    (tmp_path / "l").mkdir()
    lstate = new_state(tmp_path / "l" / "meta.sqlite")
    index = fill(lstate, 2, 20)
    leader = Snapshots(str(tmp_path / "l" / "raft.snapshot"), 4096, lstate)
    leader.serialize(raft_data(index - 1), index - 1)
    assert wait_done(leader)[0] == SERIALIZER_STATE.SUCCESS
    (tmp_path / "f").mkdir()
    fstate = new_state(tmp_path / "f" / "meta.sqlite")
    fill(fstate, 2, 1)  # older than the leader's
    installed: list[float] = []
    follower = Snapshots(str(tmp_path / "f" / "raft.snapshot"), 4096, fstate, lambda: installed.append(1.0))
    parts = transmit(leader, follower, 4096)
    assert parts > os.path.getsize(leader.path) // 4096
    ino_received = os.stat(follower.received).st_ino
    data = follower.deserialize()
    assert data == (None, *raft_data(index - 1)[1:]) and installed == [1.0]
    assert os.stat(fstate.path).st_ino == ino_received  # renamed into place, not copied
    assert fstate.applied_index() == fstate.last_applied == index - 1
    assert keys_of(fstate.path) == keys_of(lstate.path)
    assert fstate.db.execute("SELECT name FROM sqlite_master WHERE name='raft_snapshot'").fetchone() is None
    assert os.path.exists(follower.marker)  # until its own snapshot of it is durable
    assert wait_done(follower) == (SERIALIZER_STATE.SUCCESS, index - 1)
    assert not os.path.exists(follower.marker)
    assert read_snapshot(follower.path) == (raft_data(index - 1)[1:], index - 1)
    assert fstate.apply(index, put("after"))["ok"]  # the live database takes writes again
    for s in (leader, follower):
        s.close()
    lstate.close()
    fstate.close()


def test_restart_keeps_the_newer_of_snapshot_and_live_database(tmp_path: Path) -> None:
    state = new_state(tmp_path / "meta.sqlite")
    index = fill(state, 2, 5)
    snaps = Snapshots(str(tmp_path / "raft.snapshot"), 1 << 16, state)
    snaps.serialize(raft_data(index - 1), index - 1)
    assert wait_done(snaps)[0] == SERIALIZER_STATE.SUCCESS
    newer = fill(state, index, 2)  # the live database moves past the snapshot
    live_keys = keys_of(state.path)
    assert snaps.deserialize() == (None, *raft_data(index - 1)[1:])
    assert state.applied_index() == newer - 1 and keys_of(state.path) == live_keys  # kept
    snaps.close()
    state.close()
    for suffix in ("", "-wal", "-shm"):  # the live database lost: the snapshot is newer
        (tmp_path / f"meta.sqlite{suffix}").unlink(missing_ok=True)
    state = MetaState(str(tmp_path / "meta.sqlite"))
    snaps = Snapshots(str(tmp_path / "raft.snapshot"), 1 << 16, state)
    snaps.deserialize()
    assert state.applied_index() == state.last_applied == index - 1
    assert keys_of(state.path) == keys_of(snaps.path)
    snaps.close()
    state.close()


def test_a_crash_between_install_and_its_snapshot_is_repaired_at_start(tmp_path: Path) -> None:
    state = new_state(tmp_path / "meta.sqlite")
    index = fill(state, 2, 3)
    marker = tmp_path / "raft.snapshot.installed"
    marker.write_bytes(pickle.dumps((raft_data(index - 1)[1:], index - 1)))
    snaps = Snapshots(str(tmp_path / "raft.snapshot"), 1 << 16, state)
    assert not marker.exists()
    assert read_snapshot(snaps.path) == (raft_data(index - 1)[1:], index - 1)
    # a marker naming an install that never reached the database: no snapshot claims it
    os.unlink(snaps.path)
    marker.write_bytes(pickle.dumps((raft_data(index + 50)[1:], index + 50)))
    Snapshots(str(tmp_path / "raft.snapshot"), 1 << 16, state)
    assert not marker.exists() and not os.path.exists(snaps.path)
    state.close()


def test_the_copy_is_synced_in_steps_from_a_low_priority_thread(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot's dirty pages go to disk while it is written (not all at once ahead of
    the journal's syncs), and its thread runs at ``BACKGROUND_NICE``; the copy is whole."""
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
    snaps.serialize(raft_data(index - 1), index - 1)
    assert wait_done(snaps) == (SERIALIZER_STATE.SUCCESS, index - 1)
    assert len(synced) >= 2, synced  # ~10 MB: a sync after each 4 MiB backup step but the last
    assert priorities == [max(os.getpriority(os.PRIO_PROCESS, 0), snapshots.BACKGROUND_NICE)]
    assert set(keys_of(snaps.path)) == before
    snaps.close()
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
