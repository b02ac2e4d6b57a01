"""The scrubber: every chunk on this node is re-read and re-hashed at a bounded rate,
each with its own header's algorithm (XXH3-128, or SHA-256 for chunks written before
it: ``blobnode.chunkfile``). A corrupt chunk (or one whose header is unreadable) is
quarantined (moved out of ``chunks/``) and reported to raftmeta, which drops this
replica from the manifests that name it; the leader's repair then re-creates it from a
good copy.

A report is kept until raftmeta acknowledges it. Nothing else would find the loss: the
repair scan counts the replicas that manifests name, and the manifests still name this
node, so only a GET that happens to read this replica would notice it is gone. Reports
that failed are retried with exponential backoff (while the scrubber waits between
passes, and at the end of a pass), and survive a restart: every file in
``quarantine/`` (named by its chunk id, see ``ChunkStore.quarantine``) that the ledger
``quarantine.reported`` does not list as acknowledged is reported again. The ledger
names a quarantined file by chunk id, inode and mtime, so the same chunk quarantined a
second time is a new report. A quarantined chunk that this node holds again (repair
placed a fresh copy here after a GET had dropped this replica) is not reported: that
would drop the good copy.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import trio

from blobnode.store import ChunkStore
from core import wire
from raftmeta.client import MetaClient

log = logging.getLogger("blobnode.scrub")

REPORT_BATCH = 1000  # chunk ids per replicas_lost command
RETRY_FIRST = 1.0  # seconds before the first retry of a failed report; doubles per failure
RETRY_MAX = 300.0
LEDGER = "quarantine.reported"  # under the store root: the acknowledged quarantine files

# A quarantined file's identity: (chunk id, inode, mtime in ns). None for inode and
# mtime when the file could not be stat'ed (it is then reported, never ledgered).
Quarantined = tuple[str, int | None, int | None]


class Scrubber:
    def __init__(self, store: ChunkStore, meta: MetaClient, rate_mb_s: float, interval: float, *,
                 retry_first: float = RETRY_FIRST, retry_max: float = RETRY_MAX) -> None:
        self.store, self.meta = store, meta
        self.rate = max(rate_mb_s, 0.1) * 1e6
        self.interval = interval
        self.retry_first, self.retry_max = retry_first, max(retry_max, retry_first)
        self.ledger_path = os.path.join(store.root, LEDGER)
        # Quarantined chunks raftmeta has not acknowledged yet: chunk id -> identity.
        self.unreported: dict[str, Quarantined] = {}
        self._recovered = False
        self._retry_delay = retry_first
        self._next_retry = 0.0  # trio clock
        self._report_lock = trio.Lock()
        self.stats: dict[str, Any] = {"passes": 0, "scrubbed_bytes": 0, "corrupt_found": 0, "last_pass": None,
                                      "rate_mb_s": rate_mb_s, "unreported": 0, "reports_failed": 0}

    async def run(self) -> None:
        while True:
            try:
                await self.scrub_pass()
            except Exception:
                log.exception("scrub pass failed")
            await self._idle(self.interval)

    async def _idle(self, seconds: float) -> None:
        """Sleep ``seconds``, retrying unacknowledged reports as their backoff allows."""
        deadline = trio.current_time() + seconds
        while True:
            now = trio.current_time()
            if self.unreported and now >= self._next_retry:
                try:
                    await self.flush_reports()
                except Exception:
                    log.exception("retrying quarantine reports failed")
                    self._backoff()
                continue
            if now >= deadline:
                return
            wake = min(deadline, self._next_retry) if self.unreported else deadline
            await trio.sleep(max(0.0, wake - now))

    async def scrub_pass(self) -> int:
        await self.recover()
        corrupt: list[str] = []
        after = ""
        while True:
            ids, more = await trio.to_thread.run_sync(self.store.list, after, 200)
            for chunk_id in ids:
                started = time.monotonic()
                intact, size = await trio.to_thread.run_sync(self.store.verify, chunk_id)
                self.stats["scrubbed_bytes"] += size
                if not intact:
                    log.error("scrub: chunk %s is corrupt: quarantined", chunk_id)
                    await trio.to_thread.run_sync(self.store.quarantine, chunk_id)
                    identity = await trio.to_thread.run_sync(self._identity, chunk_id)
                    self.unreported[chunk_id] = identity
                    corrupt.append(chunk_id)
                # the rate limit: client traffic keeps the disk and the CPU first
                await trio.sleep(max(0.0, size / self.rate - (time.monotonic() - started)))
            if not more:
                break
            after = ids[-1]
        self.stats["passes"] += 1
        self.stats["corrupt_found"] += len(corrupt)
        self.stats["last_pass"] = time.time()
        # New losses go out now; older unacknowledged ones wait for their backoff unless
        # they can ride along.
        await self.flush_reports(force=bool(corrupt))
        return len(corrupt)

    # ------------------------------------------------------------------ reports

    async def report(self, chunks: list[str]) -> bool:
        """Report quarantined ``chunks`` now (and any still unacknowledged); True once
        raftmeta acknowledged all of them. Those it did not are kept and retried."""
        for chunk_id in chunks:
            if chunk_id not in self.unreported:
                self.unreported[chunk_id] = await trio.to_thread.run_sync(self._identity, chunk_id)
        return await self.flush_reports(force=True)

    async def flush_reports(self, force: bool = False) -> bool:
        """Send the unacknowledged reports, in batches; True when none is left. Unless
        ``force``, does nothing (False) before the backoff after a failure has passed."""
        async with self._report_lock:
            await self.recover()
            if not self.unreported:
                return True
            if not force and trio.current_time() < self._next_retry:
                return False
            held = await trio.to_thread.run_sync(self._held_again, list(self.unreported))
            for chunk_id in held:
                log.info("scrub: quarantined chunk %s is back on this node (repaired here): not reporting it", chunk_id)
                self.unreported.pop(chunk_id, None)
            pending = list(self.unreported.values())
            for start in range(0, len(pending), REPORT_BATCH):
                batch = pending[start:start + REPORT_BATCH]
                if not await self._send(batch):
                    self._backoff()
                    self.stats["unreported"] = len(self.unreported)
                    return False
                for item in batch:
                    if self.unreported.get(item[0]) == item:  # not quarantined anew meanwhile
                        del self.unreported[item[0]]
                await trio.to_thread.run_sync(self._ledger_add, batch)
            self._retry_delay = self.retry_first
            self._next_retry = 0.0
            self.stats["unreported"] = len(self.unreported)
            return not self.unreported

    async def _send(self, batch: list[Quarantined]) -> bool:
        cmd = {"op": "replicas_lost", "node": self.store.node_id, "chunks": [item[0] for item in batch]}
        try:
            reply = await self.meta.write(cmd, deadline=30)
        except (wire.WireError, OSError) as exc:
            reply = {"ok": False, "err": getattr(exc, "code", type(exc).__name__), "msg": str(exc)}
        if reply.get("ok"):
            log.info("scrub: raftmeta acknowledged %d quarantined chunks", len(batch))
            return True
        self.stats["reports_failed"] += 1
        log.warning("could not report %d quarantined chunks (%s: %s); kept, retrying in %.0f s",
                    len(self.unreported), reply.get("err"), reply.get("msg", ""), self._retry_delay)
        return False

    def _backoff(self) -> None:
        self._next_retry = trio.current_time() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self.retry_max)

    # ------------------------------------------------------------------ on disk (worker threads)

    async def recover(self) -> None:
        """Once per process: reload the unacknowledged reports from ``quarantine/``."""
        if self._recovered:
            return
        found = await trio.to_thread.run_sync(self._recover)
        self._recovered = True
        for item in found:
            self.unreported.setdefault(item[0], item)
        self.stats["unreported"] = len(self.unreported)
        if found:
            log.warning("scrub: %d quarantined chunks were never acknowledged by raftmeta: reporting them", len(found))

    def _identity(self, chunk_id: str) -> Quarantined:
        stamp = self.store.quarantine_stamp(chunk_id)
        return (chunk_id, None, None) if stamp is None else (chunk_id, *stamp)

    def _held_again(self, chunk_ids: list[str]) -> list[str]:
        return [c for c in chunk_ids if self.store.holds(c)]

    def _read_ledger(self) -> set[Quarantined]:
        acked: set[Quarantined] = set()
        try:
            with open(self.ledger_path, encoding="ascii", errors="replace") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                        acked.add((parts[0], int(parts[1]), int(parts[2])))
        except FileNotFoundError:
            pass
        return acked

    def _recover(self) -> list[Quarantined]:
        names = self.store.quarantined()
        acked = self._read_ledger()
        present: set[Quarantined] = set()
        found: list[Quarantined] = []
        for name in names:
            identity = self._identity(name)
            if identity[1] is None:
                continue  # gone since the listing
            if identity in acked:
                present.add(identity)
            elif not self.store.holds(name):
                found.append(identity)
        if acked - present:  # entries for files since removed by an operator: compact
            try:
                self._write_ledger(sorted(present, key=str))
            except OSError as exc:
                log.warning("cannot compact %s: %s", self.ledger_path, exc)
        return found

    def _write_ledger(self, items: list[Quarantined]) -> None:
        tmp = self.ledger_path + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.writelines(f"{c} {ino} {mtime}\n" for c, ino, mtime in items)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.ledger_path)

    def _ledger_add(self, batch: list[Quarantined]) -> None:
        """Record acknowledged reports. A failure here (a full disk) only means they are
        reported once more after a restart: replicas_lost is idempotent."""
        lines = [f"{c} {ino} {mtime}\n" for c, ino, mtime in batch if ino is not None]
        if not lines:
            return
        try:
            with open(self.ledger_path, "a", encoding="ascii") as f:
                f.writelines(lines)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            log.warning("cannot record %d acknowledged reports in %s: %s", len(lines), self.ledger_path, exc)
