"""Tests of frontend.placement: weighted rendezvous hashing of chunks onto blob nodes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from core.nodes import UNAVAILABLE_AFTER, BlobNode
from frontend.placement import rank

TiB = 1 << 40
REPO = Path(__file__).resolve().parents[2]


def chunk_ids(n: int, salt: str = "") -> list[str]:
    """Chunk ids shaped like the frontend's (uuid4 hex), but reproducible."""
    return [hashlib.md5(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


def equal_nodes(n: int) -> list[BlobNode]:
    return [BlobNode(f"node-{i}", f"10.0.0.{i}:9000", capacity=4 * TiB, used=TiB) for i in range(n)]


def first_shares(ids: list[str], nodes: list[BlobNode]) -> dict[str, float]:
    wins = Counter(rank(c, nodes)[0].node_id for c in ids)
    return {n.node_id: wins[n.node_id] / len(ids) for n in nodes}


# ---------------------------------------------------------------------- rank basics


def test_rank_returns_every_node_exactly_once() -> None:
    nodes = equal_nodes(5)
    for cid in chunk_ids(200):
        ranked = rank(cid, nodes)
        assert sorted(n.node_id for n in ranked) == sorted(n.node_id for n in nodes)
        assert all(isinstance(n, BlobNode) for n in ranked)


def test_rank_dedupes_nodes_by_id() -> None:
    a, b = BlobNode("a", "h1:1"), BlobNode("b", "h2:1")
    a_again = BlobNode("a", "h1:2")  # same id, e.g. re-registered on a new address
    for cid in chunk_ids(50):
        ranked = rank(cid, [a, b, a_again, b])
        assert sorted(n.node_id for n in ranked) == ["a", "b"]


def test_rank_of_nothing_and_of_one() -> None:
    assert rank("c", []) == []
    only = BlobNode("solo", "h:1", capacity=10, used=10)
    assert rank("c", [only]) == [only]


def test_rank_is_deterministic_and_independent_of_input_order() -> None:
    nodes = equal_nodes(6)
    rng = random.Random(3)
    for cid in chunk_ids(200):
        expected = [n.node_id for n in rank(cid, nodes)]
        shuffled = nodes[:]
        rng.shuffle(shuffled)
        assert [n.node_id for n in rank(cid, shuffled)] == expected
        assert [n.node_id for n in rank(cid, nodes)] == expected


def test_rank_is_the_same_in_another_process() -> None:
    """Every frontend must agree: no per-process hash seed may leak into the ranking."""
    nodes = [(f"node-{i}", 4 * TiB, i * TiB // 4) for i in range(4)]
    ids = chunk_ids(100)

    def ranking() -> list[list[str]]:
        ns = [BlobNode(i, "h:1", capacity=c, used=u) for i, c, u in nodes]
        return [[n.node_id for n in rank(c, ns)] for c in ids]

    code = (
        "import json, sys\n"
        "from core.nodes import BlobNode\n"
        "from frontend.placement import rank\n"
        "nodes, ids = json.loads(sys.stdin.read())\n"
        "ns = [BlobNode(i, 'h:1', capacity=c, used=u) for i, c, u in nodes]\n"
        "print(json.dumps([[n.node_id for n in rank(c, ns)] for c in ids]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps([nodes, ids]), capture_output=True,
                         text=True, check=True, env=env, cwd=REPO)
    assert json.loads(out.stdout) == ranking()


def test_rank_is_pinned() -> None:
    """Rankings computed once: a change to the scores would move chunks already placed."""
    nodes = [BlobNode(f"node-{i}", "h:1", capacity=4 * TiB, used=i * TiB // 2) for i in range(5)]
    assert [n.node_id for n in rank("0" * 32, nodes)] == ["node-4", "node-0", "node-1", "node-2", "node-3"]
    assert [n.node_id for n in rank("chunk-a", nodes)] == ["node-1", "node-2", "node-3", "node-4", "node-0"]
    assert [n.node_id for n in rank(hashlib.md5(b"x").hexdigest(), nodes)] == [
        "node-0", "node-3", "node-4", "node-2", "node-1"]


# ---------------------------------------------------------------------- spread and weighting


def test_equal_nodes_share_first_place_evenly() -> None:
    nodes = equal_nodes(3)
    shares = first_shares(chunk_ids(3000), nodes)
    for node_id, share in shares.items():
        assert 0.25 <= share <= 0.42, (node_id, shares)


def test_equal_nodes_share_every_position_evenly() -> None:
    """Replicas go to the top ``n``: second and third places must spread too."""
    nodes = equal_nodes(3)
    ids = chunk_ids(3000, "pos")
    for position in range(3):
        wins = Counter(rank(c, nodes)[position].node_id for c in ids)
        for node in nodes:
            assert 0.25 <= wins[node.node_id] / len(ids) <= 0.42, (position, wins)


def test_unknown_capacity_nodes_share_evenly() -> None:
    nodes = [BlobNode(f"n{i}", "h:1") for i in range(4)]  # capacity 0: not reported yet
    shares = first_shares(chunk_ids(4000), nodes)
    for share in shares.values():
        assert 0.20 <= share <= 0.30, shares


def test_first_place_leans_toward_more_free_space() -> None:
    big = BlobNode("big", "h:1", capacity=4 * TiB, used=1 * TiB)  # 3 TiB free
    small = BlobNode("small", "h:2", capacity=4 * TiB, used=3 * TiB)  # 1 TiB free
    shares = first_shares(chunk_ids(4000), [big, small])
    # weighted rendezvous: P(first) is proportional to free space -> 3/4
    assert 0.70 <= shares["big"] <= 0.80, shares


def test_free_space_not_raw_capacity_decides() -> None:
    roomy = BlobNode("roomy", "h:1", capacity=1 * TiB, used=0)
    crowded = BlobNode("crowded", "h:2", capacity=10 * TiB, used=10 * TiB - TiB // 4)  # 1/4 TiB free
    shares = first_shares(chunk_ids(4000), [roomy, crowded])
    assert 0.75 <= shares["roomy"] <= 0.85, shares  # 1 : 1/4 -> 4/5


def test_full_node_is_last_resort_but_still_ranked() -> None:
    full = BlobNode("full", "h:1", capacity=TiB, used=2 * TiB)
    assert full.free == 0
    others = equal_nodes(2)
    ids = chunk_ids(2000)
    assert all(rank(c, [full, *others])[0].node_id != "full" for c in ids)
    assert all(len(rank(c, [full, *others])) == 3 for c in ids)


def test_three_weights_proportional() -> None:
    nodes = [BlobNode("w1", "h", capacity=1 * TiB), BlobNode("w2", "h", capacity=2 * TiB), BlobNode("w5", "h", capacity=5 * TiB)]
    shares = first_shares(chunk_ids(8000), nodes)
    assert shares["w1"] == pytest.approx(1 / 8, abs=0.03)
    assert shares["w2"] == pytest.approx(2 / 8, abs=0.03)
    assert shares["w5"] == pytest.approx(5 / 8, abs=0.03)


# ---------------------------------------------------------------------- stability


def test_adding_a_node_moves_only_chunks_it_wins() -> None:
    old = equal_nodes(3)
    new = BlobNode("node-new", "10.0.0.99:9000", capacity=4 * TiB, used=TiB)
    ids = chunk_ids(3000, "stab")
    moved = 0
    for cid in ids:
        before = [n.node_id for n in rank(cid, old)]
        after = [n.node_id for n in rank(cid, [*old, new])]
        if after[0] != before[0]:
            assert after[0] == "node-new", cid
            moved += 1
        # the old nodes keep their relative order: fallbacks and replicas do not reshuffle
        assert [i for i in after if i != "node-new"] == before
    assert 0.18 <= moved / len(ids) <= 0.32  # about a quarter: the newcomer's fair share


def test_removing_a_node_moves_only_its_chunks() -> None:
    nodes = equal_nodes(4)
    gone = nodes[2]
    remaining = [n for n in nodes if n is not gone]
    for cid in chunk_ids(2000, "rm"):
        before = [n.node_id for n in rank(cid, nodes)]
        after = [n.node_id for n in rank(cid, remaining)]
        assert after == [i for i in before if i != gone.node_id]


def test_address_change_does_not_move_chunks() -> None:
    nodes = equal_nodes(3)
    moved = [BlobNode(n.node_id, "192.168.1.1:1", n.capacity, n.used, n.heartbeat) for n in nodes]
    for cid in chunk_ids(500):
        assert [n.node_id for n in rank(cid, nodes)] == [n.node_id for n in rank(cid, moved)]


# ---------------------------------------------------------------------- node liveness and space


def test_is_up_until_unavailable_after() -> None:
    node = BlobNode("n", "h:1", heartbeat=1000.0)
    assert node.is_up(1000.0)
    assert node.is_up(999.0)  # a heartbeat stamped slightly ahead of our clock
    assert node.is_up(1000.0 + UNAVAILABLE_AFTER - 0.01)
    assert not node.is_up(1000.0 + UNAVAILABLE_AFTER)
    assert not node.is_up(1000.0 + UNAVAILABLE_AFTER + 100)
    assert UNAVAILABLE_AFTER > 0


def test_never_heartbeated_node_is_dead_now() -> None:
    assert not BlobNode("n", "h:1").is_up(1_700_000_000.0)


def test_free_space() -> None:
    assert BlobNode("n", "h", capacity=100, used=30).free == 70
    assert BlobNode("n", "h", capacity=100, used=130).free == 0
    assert BlobNode("n", "h").free == 0
