"""Upload expiry: abort multipart uploads initiated more than ``ttl`` seconds ago (their
parts' chunks go to the GC queue in the same command), 500 per proposal."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from raftmeta.chores import Chore, Leader

log = logging.getLogger("raftmeta")

BATCH = 500


@dataclass
class ExpiryStats:
    ttl: float
    interval: float
    last_run: float | None = None
    last_aborted: int = 0
    aborted_total: int = 0


class UploadExpiry(Chore):
    name = "expire_uploads"

    def __init__(self, leader: Leader, interval: float, ttl: float) -> None:
        super().__init__(leader, interval)
        self.stats = ExpiryStats(ttl=ttl, interval=interval)

    async def run_pass(self) -> int:
        if not self.leader.is_leader():
            return 0
        aborted = 0
        while True:
            now = time.time()
            result = await self.leader.propose({"op": "expire_uploads", "before": now - self.stats.ttl, "ts": now,
                                                "limit": BATCH})
            if not result.get("ok"):
                break
            aborted += len(result["aborted"])
            if len(result["aborted"]) < BATCH:
                break
        self.stats.last_run = time.time()
        self.stats.last_aborted = aborted
        self.stats.aborted_total += aborted
        if aborted:
            log.info("aborted %d multipart uploads older than %.0fs", aborted, self.stats.ttl)
        return aborted

    async def status(self) -> dict[str, Any]:
        counts = await self.leader.query({"q": "expired", "before": time.time() - self.stats.ttl})
        return {"uploads": counts["uploads"], "expired_waiting": counts["expired"], "expiry": asdict(self.stats)}
