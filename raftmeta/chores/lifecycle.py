"""The lifecycle worker: applies buckets' lifecycle rules beside the Raft leader.

Incremental and resumable: each pass walks every bucket that has rules in batches of
``BATCH`` keys from the bucket's cursor, which lives in the replicated state
(``lifecycle_progress``, moved by the same ``lifecycle_apply`` entry that acts on the
batch), so a new leader resumes where the old one stopped. A pass examines at most
``keys_per_pass`` keys over all buckets, then yields until the next interval; actions
are rate-limited to ``rate`` per second. The rules are evaluated here on the leader's
replica (``lifecycle_rules``, pure); every action is re-checked inside the apply, where
object lock has the last word. A day is ``day`` seconds (86,400; shorter in tests)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import trio

from raftmeta.chores import Chore, Leader
from raftmeta.chores.lifecycle_rules import key_actions, upload_actions

log = logging.getLogger("raftmeta")

BATCH = 100  # keys read and acted on per entry
MAX_ACTIONS = 1000  # actions per lifecycle_apply entry (the state machine allows 1024)


@dataclass
class LifecycleStats:
    interval: float
    day: float
    rate: float
    keys_per_pass: int
    last_run: float | None = None
    examined_total: int = 0
    expired_total: int = 0
    aborted_total: int = 0
    skipped_total: int = 0
    errors: int = 0


class Lifecycle(Chore):
    name = "lifecycle"

    def __init__(self, leader: Leader, interval: float, day: float = 86400.0, rate: float = 500.0,
                 keys_per_pass: int = 10_000) -> None:
        super().__init__(leader, interval)
        self.stats = LifecycleStats(interval=interval, day=day, rate=rate, keys_per_pass=keys_per_pass)

    async def run_pass(self) -> int:
        if not self.leader.is_leader():
            return 0
        buckets = (await self.leader.query({"q": "lifecycle_buckets"}))["buckets"]
        # each bucket its share of the pass, so one large bucket never starves the rest
        share = max(BATCH, self.stats.keys_per_pass // max(len(buckets), 1))
        acted = 0
        for bucket in buckets:
            try:
                done, _used = await self._bucket(bucket, share)
            except _RulesChanged:
                continue  # evaluated against rules since replaced: the next pass reads the new ones
            except _Refused as exc:
                self.stats.errors += 1
                log.info("lifecycle of bucket %s stopped: %s", bucket["bucket"], exc)
                continue
            acted += done
        self.stats.last_run = time.time()
        return acted

    async def _bucket(self, bucket: dict[str, Any], budget: int) -> tuple[int, int]:
        """Walk one bucket from its cursor for at most ``budget`` keys; returns
        (versions expired and uploads aborted, keys examined)."""
        name, rules, versioning = bucket["bucket"], bucket["rules"], bucket["versioning"]
        progress = bucket["progress"] or {}
        cursor = progress.get("cursor") or ""
        fresh = not cursor
        acted = used = 0
        aborts: list[str] = []
        if fresh:
            now = time.time()
            for rule in rules:  # each rule's own candidates: old uploads under its prefix
                if rule.get("status") == "Enabled" and rule.get("abort_days"):
                    prefix = (rule.get("filter") or {}).get("prefix") or ""
                    uploads = (await self.leader.query({
                        "q": "lifecycle_uploads", "bucket": name, "prefix": prefix,
                        "before": now - (rule["abort_days"] - 1) * self.stats.day}))["uploads"]
                    aborts += [u for u in upload_actions(rules, uploads, now, self.stats.day) if u not in aborts]
            aborts = aborts[:MAX_ACTIONS]
        while used < budget:
            now = time.time()
            scan = await self.leader.query({"q": "lifecycle_scan", "bucket": name, "after": cursor,
                                            "limit": min(BATCH, budget - used)})
            actions = [[key, action, seq] for key, history in scan["keys"]
                       for action, seq in key_actions(rules, versioning, history, now, self.stats.day, key=key)]
            slices = [actions[i:i + MAX_ACTIONS] for i in range(0, len(actions), MAX_ACTIONS)] or [[]]
            for piece in slices[:-1]:  # the cursor moves with the batch's last entry only
                acted += await self._apply(name, {"actions": piece, "cursor": cursor, "fresh": fresh,
                                                  "rules": bucket["digest"]})
                fresh = False
            last = slices[-1]
            cursor = scan["keys"][-1][0] if scan["keys"] else cursor
            used += len(scan["keys"])
            acted += await self._apply(name, {"actions": last, "aborts": aborts, "cursor": cursor, "fresh": fresh,
                                              "examined": len(scan["keys"]), "done": scan["done"],
                                              "rules": bucket["digest"]})
            aborts, fresh = [], False
            if scan["done"]:
                break
        self.stats.examined_total += used
        return acted, used

    async def _apply(self, bucket: str, batch: dict[str, Any]) -> int:
        result = await self.leader.propose({"op": "lifecycle_apply", "bucket": bucket, "ts": time.time(), **batch})
        if not result.get("ok"):
            raise _Refused(result.get("err"), result.get("msg"))
        if result.get("changed"):
            raise _RulesChanged()
        self.stats.expired_total += result["expired"]
        self.stats.aborted_total += result["aborted"]
        self.stats.skipped_total += result["skipped"]
        done = result["expired"] + result["aborted"]
        if done:
            log.info("lifecycle: bucket %s: %d expired, %d uploads aborted", bucket, result["expired"],
                     result["aborted"])
        if self.stats.rate > 0 and batch.get("actions"):
            await trio.sleep(len(batch["actions"]) / self.stats.rate)
        return done

    async def status(self) -> dict[str, Any]:
        buckets = (await self.leader.query({"q": "lifecycle_buckets"}))["buckets"]
        per_bucket = {b["bucket"]: {"rules": len(b["rules"]),
                                    "enabled_rules": sum(r.get("status") == "Enabled" for r in b["rules"]),
                                    **(b["progress"] or {})} for b in buckets}
        return {"lifecycle": {**asdict(self.stats), "buckets": per_bucket}}


class _Refused(Exception):
    pass


class _RulesChanged(Exception):
    pass
