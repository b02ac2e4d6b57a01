"""The scrubber's reports of quarantined chunks: kept and retried with backoff until
raftmeta acknowledges them, surviving a restart, and never sent for a chunk the node
holds again. Against a ``ChunkStore`` and a stand-in for raftmeta.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from blobnode.scrub import Scrubber
from blobnode.store import ChunkStore
from core import wire
from tests.integration.blobnodes import (
    checksum,
    chunk_files,
    new_id,
    rot,
)


class FlakyMeta:
    """Stands in for the blob node's MetaClient (not under test here): ``write`` fails as
    the real one does when no raftmeta node answers (WireError Unavailable) while
    ``down``, and acknowledges like raftmeta does once it is up."""

    def __init__(self, down: bool = True) -> None:
        self.down = down
        self.attempts: list[tuple[float, dict]] = []
        self.delivered: list[dict] = []

    async def write(self, cmd: dict, deadline: float = 20.0) -> dict:
        self.attempts.append((trio.current_time(), cmd))
        await trio.sleep(0)
        if self.down:
            raise wire.WireError(wire.ERR_UNAVAILABLE, "no raftmeta node answered")
        self.delivered.append(cmd)
        return {"ok": True, "objects": len(cmd["chunks"])}

    def lost(self) -> list[str]:
        return sorted(c for cmd in self.delivered for c in cmd["chunks"])


def stored(store: ChunkStore, n: int, size: int = 5000) -> list[str]:
    ids = sorted(new_id() for _ in range(n))
    for cid in ids:
        data = os.urandom(size)
        store.put(cid, checksum(data), data)
    return ids


async def test_failed_scrub_report_is_retried_with_backoff_until_acknowledged(tmp_path: Path) -> None:

    store = ChunkStore(str(tmp_path))
    good, bad = stored(store, 2), stored(store, 2)
    for cid in bad:
        rot(store, cid)
    meta = FlakyMeta(down=True)
    scrubber = Scrubber(store, meta, rate_mb_s=1000, interval=3600, retry_first=0.2, retry_max=5)  # type: ignore[arg-type]

    assert await scrubber.scrub_pass() == 2
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == bad
    assert {p.name for p in chunk_files(tmp_path)} == set(good)
    assert len(meta.attempts) == 1 and meta.delivered == []
    assert sorted(scrubber.unreported) == bad and scrubber.stats["unreported"] == 2

    # a pass inside the backoff window finds nothing new and does not hammer raftmeta
    assert await scrubber.scrub_pass() == 0
    assert len(meta.attempts) == 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scrubber._idle, 3600)  # the wait between passes of ``run``
        with trio.fail_after(10):
            while len(meta.attempts) < 4:
                await trio.sleep(0.01)
        meta.down = False  # raftmeta is back
        with trio.fail_after(10):
            while not meta.delivered:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()

    times = [t for t, _ in meta.attempts]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(later > earlier * 1.5 for earlier, later in zip(gaps[:3], gaps[1:3], strict=False)), gaps
    assert meta.lost() == bad
    cmd = meta.delivered[0]
    assert cmd["op"] == "replicas_lost" and cmd["node"] == store.node_id
    assert scrubber.unreported == {} and scrubber.stats["unreported"] == 0

    # acknowledged: neither a later pass nor a restarted node reports them again
    assert await scrubber.scrub_pass() == 0
    restarted = Scrubber(ChunkStore(str(tmp_path)), meta, rate_mb_s=1000, interval=3600)  # type: ignore[arg-type]
    assert await restarted.scrub_pass() == 0
    assert len(meta.delivered) == 1
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == bad  # kept for inspection


async def test_unacknowledged_scrub_report_survives_a_restart(tmp_path: Path) -> None:

    store = ChunkStore(str(tmp_path))
    (bad,) = stored(store, 1)
    stored(store, 3)
    rot(store, bad)
    down = FlakyMeta(down=True)
    first = Scrubber(store, down, rate_mb_s=1000, interval=3600)  # type: ignore[arg-type]
    assert await first.scrub_pass() == 1
    assert down.delivered == [] and list(first.unreported) == [bad]
    del first  # the blob node dies with its report undelivered

    up = FlakyMeta(down=False)
    second = Scrubber(ChunkStore(str(tmp_path)), up, rate_mb_s=1000, interval=3600)  # type: ignore[arg-type]
    assert await second.scrub_pass() == 0  # nothing newly corrupt, but the old loss goes out
    assert up.lost() == [bad]
    assert second.unreported == {}

    third = Scrubber(ChunkStore(str(tmp_path)), up, rate_mb_s=1000, interval=3600)  # type: ignore[arg-type]
    assert await third.flush_reports() is True
    assert await third.scrub_pass() == 0
    assert len(up.delivered) == 1  # acknowledged once, not reported on every start


async def test_quarantined_chunk_held_again_is_not_reported_and_a_second_rot_is(tmp_path: Path) -> None:
    """Repair may place a fresh copy of a chunk on the node that quarantined it (after a GET
    dropped that replica): reporting the old loss then would drop the good copy. If that
    copy rots too, it is a new loss and is reported."""

    store = ChunkStore(str(tmp_path))
    data = os.urandom(5000)
    cid = new_id()
    store.put(cid, checksum(data), data)
    rot(store, cid)
    down = FlakyMeta(down=True)
    assert await Scrubber(store, down, rate_mb_s=1000, interval=3600).scrub_pass() == 1  # type: ignore[arg-type]
    assert store.put(cid, checksum(data), data)  # the repaired copy arrives while the report is pending

    up = FlakyMeta(down=False)
    scrubber = Scrubber(ChunkStore(str(tmp_path)), up, rate_mb_s=1000, interval=3600)  # type: ignore[arg-type]
    assert await scrubber.scrub_pass() == 0
    assert up.delivered == [] and scrubber.unreported == {}

    rot(scrubber.store, cid)
    assert await scrubber.scrub_pass() == 1
    assert up.lost() == [cid]
    again = Scrubber(ChunkStore(str(tmp_path)), up, rate_mb_s=1000, interval=3600)  # type: ignore[arg-type]
    assert await again.scrub_pass() == 0
    assert len(up.delivered) == 1
