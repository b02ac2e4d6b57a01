"""A linearizability checker for one key's history of PUT / DELETE / GET.

Each key is a register: a PUT writes a value, a DELETE writes "absent", a GET reads.
An operation has the time the client invoked it and the time it returned. A write
whose outcome the client never learnt (timeout, connection cut) ends at infinity: it
may have taken effect at any moment after its invocation, or never. Reads that failed
say nothing and are left out by the caller.

The search is Wing and Gong's, with Lowe's memoization: repeatedly pick an operation
that could be next (invoked before every remaining operation's return), apply it to the
register, and backtrack on a read that does not match; (register value, set of done
operations) pairs already explored are not explored again. Histories of a few hundred
operations per key with modest concurrency check in milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ABSENT = None


@dataclass(frozen=True)
class Op:
    kind: str  # "write" (PUT, or DELETE with value None) or "read"
    value: str | None
    start: float
    end: float = math.inf  # math.inf: the outcome is unknown

    def __post_init__(self) -> None:
        if self.kind not in ("write", "read"):
            raise ValueError(f"unknown operation kind {self.kind!r}")
        if self.kind == "read" and self.end == math.inf:
            raise ValueError("a read with no result says nothing: leave it out")


@dataclass
class Verdict:
    ok: bool
    explored: int
    longest_prefix: list[int]  # on failure: the longest linearizable prefix found (indexes into ops)


def check_register(ops: list[Op], initial: str | None = ABSENT, limit: int = 2_000_000) -> Verdict:
    """Is there an order of ``ops``, consistent with their real-time order, in which
    every read returns the register's value at that point?"""
    n = len(ops)
    if n == 0:
        return Verdict(True, 0, [])
    full = (1 << n) - 1
    order = sorted(range(n), key=lambda i: ops[i].start)
    seen: set[tuple[str | None, int]] = set()
    best: list[int] = []
    explored = 0
    # explicit DFS stack: (register value, done mask, path)
    stack: list[tuple[str | None, int, list[int]]] = [(initial, 0, [])]
    while stack:
        value, done, path = stack.pop()
        if done == full:
            return Verdict(True, explored, path)
        if (value, done) in seen:
            continue
        seen.add((value, done))
        explored += 1
        if explored > limit:
            raise RuntimeError(f"history too hard to check within {limit} states")
        if len(path) > len(best):
            best = path
        horizon = min(ops[i].end for i in order if not done >> i & 1)
        for i in order:
            if done >> i & 1:
                continue
            op = ops[i]
            if op.start > horizon:
                break  # sorted by start: no later operation can come before the earliest return
            if op.kind == "write":
                stack.append((op.value, done | 1 << i, path + [i]))
            elif op.value == value:
                stack.append((value, done | 1 << i, path + [i]))
    return Verdict(False, explored, best)


def check_history(history: list[dict]) -> dict[str, Verdict]:
    """Group a recorded history (dicts with key, kind, value, start, end, ok) by key and
    check each key. ``ok`` False with ``end`` None: outcome unknown (writes only).

    A write of unknown outcome whose value no read ever returned is left out: placing it
    last (it may take effect at any time, or never) changes no read, and removing it
    from a valid order keeps the order valid. Without this, every such write is a
    candidate at every step and the search explodes."""
    observed = {(h["key"], h.get("value")) for h in history if h["kind"] == "read" and h.get("ok")}
    by_key: dict[str, list[Op]] = {}
    for h in history:
        if h["kind"] == "write" and not h.get("ok") and h.get("value") is not None \
                and (h["key"], h["value"]) not in observed:
            continue
        if h["kind"] == "read" and not h.get("ok"):
            continue
        end = h["end"] if h.get("ok") else math.inf
        if h["kind"] == "write" and h.get("ok") is False and h.get("definite"):
            continue  # refused before it could apply (e.g. NoSuchBucket): never happened
        by_key.setdefault(h["key"], []).append(Op(h["kind"], h.get("value"), h["start"], end))
    return {key: check_register(ops) for key, ops in by_key.items()}
