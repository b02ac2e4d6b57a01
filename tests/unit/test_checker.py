"""The linearizability checker, on histories whose verdict is known."""

from __future__ import annotations

import math
import random

import pytest

from chaos.checker import Op, check_history, check_register


def w(value, start, end=math.inf):
    return Op("write", value, start, end)


def r(value, start, end):
    return Op("read", value, start, end)


def test_sequential_history():
    assert check_register([w("a", 0, 1), r("a", 2, 3), w(None, 4, 5), r(None, 6, 7)]).ok


def test_stale_read_after_a_completed_write_is_caught():
    assert not check_register([w("a", 0, 1), w("b", 2, 3), r("a", 4, 5)]).ok


def test_concurrent_write_may_be_seen_or_not():
    ops = [w("a", 0, 1), w("b", 2, 6), r("a", 3, 4)]
    assert check_register(ops).ok
    assert check_register(ops[:2] + [r("b", 3, 4)]).ok


def test_reads_cannot_go_back_in_time():
    # once a read saw the new value, a later read must not see the old one
    ops = [w("a", 0, 1), w("b", 2, 10), r("b", 3, 4), r("a", 5, 6)]
    assert not check_register(ops).ok


def test_unknown_write_may_or_may_not_happen():
    assert check_register([w("a", 0, 1), w("b", 2), r("a", 3, 4)]).ok
    assert check_register([w("a", 0, 1), w("b", 2), r("b", 3, 4)]).ok
    assert check_register([w("a", 0, 1), w("b", 2), r("b", 3, 4), r("b", 5, 6)]).ok
    # ...but it cannot take effect before it was invoked
    assert not check_register([w("a", 0, 1), r("b", 2, 3), w("b", 4)]).ok
    # ...nor un-happen once seen
    assert not check_register([w("a", 0, 1), w("b", 2), r("b", 3, 4), r("a", 5, 6)]).ok


def test_initially_absent():
    assert check_register([r(None, 0, 1), w("a", 2, 3)]).ok
    assert not check_register([r("a", 0, 1), w("a", 2, 3)]).ok


def test_read_of_a_value_never_written_is_caught():
    assert not check_register([w("a", 0, 1), r("zzz", 2, 3)]).ok


def test_random_linearizable_histories_pass():
    rng = random.Random(4)
    for _ in range(50):
        # simulate a real register: each op takes effect at one instant inside its interval
        value, ops, t = None, [], 0.0
        for i in range(40):
            t += rng.random()
            start, point, end = t, t + rng.random(), t + 1 + rng.random() * 3
            if rng.random() < 0.5:
                value = f"v{i}" if rng.random() < 0.8 else None
                ops.append(w(value, start, end))
            else:
                ops.append(r(value, start, end))
            t = point  # the next op starts after this one's linearization point
        assert check_register(ops).ok


def test_check_history_groups_by_key_and_handles_outcomes():
    history = [
        {"key": "k1", "kind": "write", "value": "a", "start": 0, "end": 1, "ok": True},
        {"key": "k1", "kind": "read", "value": "a", "start": 2, "end": 3, "ok": True},
        {"key": "k2", "kind": "write", "value": "b", "start": 0, "end": None, "ok": False},  # unknown
        {"key": "k2", "kind": "read", "value": None, "start": 1, "end": 2, "ok": True},
        {"key": "k2", "kind": "read", "value": "x", "start": 3, "end": None, "ok": False},  # failed read
        {"key": "k3", "kind": "write", "value": "c", "start": 0, "end": 1, "ok": False, "definite": True},
        {"key": "k3", "kind": "read", "value": None, "start": 2, "end": 3, "ok": True},
    ]
    verdicts = check_history(history)
    assert all(v.ok for v in verdicts.values()) and set(verdicts) == {"k1", "k2", "k3"}


def test_read_without_result_is_refused():
    with pytest.raises(ValueError):
        Op("read", "a", 0)


def test_unobserved_unknown_writes_do_not_explode_the_search():
    history = [{"key": "k", "kind": "write", "value": "a", "start": 0, "end": 1, "ok": True}]
    for i in range(60):  # sixty writes that timed out, none of them ever read
        history.append({"key": "k", "kind": "write", "value": f"lost{i}", "start": 2 + i, "end": None, "ok": False})
    for i in range(60):
        history.append({"key": "k", "kind": "read", "value": "a", "start": 100 + i, "end": 100.5 + i, "ok": True})
    assert check_history(history)["k"].ok
