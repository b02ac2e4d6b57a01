"""The chunk-buffer budget: one owner never takes the permits the others need."""

from __future__ import annotations

import trio

from frontend.budget import OWNER, ChunkBudget
from frontend.context import decimal


async def _take(budget: ChunkBudget, owner: str, held: list[str]) -> None:
    OWNER.set(owner)
    held.append(await budget.acquire())


async def test_one_owner_cannot_take_the_reserve():
    budget = ChunkBudget(8)
    held: list[str] = []
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(_take, budget, "mallory", held)
        await trio.testing.wait_all_tasks_blocked()
        assert held == ["mallory"] * 6 and budget.free == 2  # three quarters, then it waits
        # another user gets a permit at once, and a third one too
        with trio.fail_after(1):
            await _take(budget, "alice", held)
            await _take(budget, "bob", held)
        assert budget.free == 0
        budget.release("alice")  # alice's permit goes back: mallory still waits, carol may take it
        await trio.testing.wait_all_tasks_blocked()
        assert held.count("mallory") == 6
        with trio.fail_after(1):
            await _take(budget, "carol", held)
        for _ in range(3):
            budget.release("mallory")
        await trio.testing.wait_all_tasks_blocked()
        assert held.count("mallory") == 7 and budget.free == 2  # above the reserve: anyone's; the reserve stays
        nursery.cancel_scope.cancel()


async def test_a_lone_owner_still_progresses_and_counts_are_exact():
    budget = ChunkBudget(3)  # the smallest budget: reserve 1, share 1
    held: list[str] = []
    with trio.fail_after(1):
        await _take(budget, "only", held)
        await _take(budget, "only", held)
    with trio.move_on_after(0.05) as waited:  # the last one is kept for someone else
        await _take(budget, "only", held)
    assert waited.cancelled_caught and budget.free == 1 and budget.held == {"only": 2}
    with trio.fail_after(1):
        await _take(budget, "other", held)
    for owner in ("only", "only", "other"):
        budget.release(owner)
    assert budget.free == 3 and budget.held == {}


async def test_a_cancelled_wait_takes_nothing():
    budget = ChunkBudget(4)
    held: list[str] = []
    for _ in range(3):
        await _take(budget, "a", held)
    with trio.move_on_after(0.05):
        await _take(budget, "a", held)
    assert budget.free == 1 and budget.held == {"a": 3}


def test_decimal_refuses_what_int_would_choke_on():
    assert decimal("0") == 0 and decimal("000123") == 123 and decimal("9" * 18) == 10**18 - 1
    for bad in (None, "", "-1", "+1", " 1", "1.0", "\u00b2", "\u0661", "9" * 19, "9" * 5000, "0x10"):
        assert decimal(bad) is None, bad
