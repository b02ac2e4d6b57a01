"""Real network partitions: every process in its own network namespace, links cut with
blackhole routes (``chaos.netns``). Needs root, as CI has."""

from __future__ import annotations

import os
import time

import pytest
import trio

from chaos.cluster import SECRET, Cluster
from raftmeta.client import MetaClient

pytestmark = pytest.mark.cluster
METAS = ["raftmeta1", "raftmeta2", "raftmeta3"]


def _retry(fn, timeout: float = 30.0):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _direct_read(cluster: Cluster, name: str, q: dict) -> dict:
    """A linearizable read sent to one raftmeta node only."""
    addr = cluster.rpc[int(name.removeprefix("raftmeta")) - 1]

    async def ask() -> dict:
        client = MetaClient([addr], SECRET)
        with trio.move_on_after(10):
            return await client._call_once(addr, {"op": "read", "q": q, "linear": True}, 10)
        return {"ok": False, "err": "client timeout"}

    return trio.run(ask)


def test_partitions(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("partitions"), blobs=4, frontends=2, chunk_size=1024 * 1024,
                 netns=True) as cluster:
        s3, s3b = cluster.s3(0), cluster.s3(1)
        s3.create_bucket(Bucket="split")
        s3.put_object(Bucket="split", Key="k", Body=b"old")

        # 1. the Raft leader is cut from its followers (clients still reach it)
        leader = cluster.leader()
        cluster.isolate(leader, METAS)
        started = time.monotonic()
        _retry(lambda: s3.put_object(Bucket="split", Key="k", Body=b"new"))
        print(f"first PUT after the leader was cut off: {time.monotonic() - started:.2f}s")
        assert s3b.get_object(Bucket="split", Key="k")["Body"].read() == b"new"
        # the deposed leader never answers a read from its stale state
        stale = _direct_read(cluster, leader, {"q": "object", "bucket": "split", "key": "k"})
        assert not stale.get("ok"), stale
        cluster.heal()
        _retry(lambda: _direct_read(cluster, leader, {"q": "object", "bucket": "split", "key": "k"})["ok"] or 1 / 0)
        reply = _direct_read(cluster, leader, {"q": "object", "bucket": "split", "key": "k"})
        assert reply["obj"]["size"] == 3 and reply["obj"]["etag"] == s3b.head_object(Bucket="split", Key="k")["ETag"].strip('"')

        # 2. a blob node cut from everyone: writes go elsewhere, reads find other replicas
        body = os.urandom(5 * 1024 * 1024)
        s3.put_object(Bucket="split", Key="big", Body=body)
        cluster.isolate("blobnode1")
        s3.put_object(Bucket="split", Key="during", Body=body)
        assert s3b.get_object(Bucket="split", Key="big")["Body"].read() == body
        assert s3.get_object(Bucket="split", Key="during")["Body"].read() == body
        cluster.heal()

        # 3. a frontend cut from raftmeta answers 503 in bounded time; the other one serves
        cluster.isolate("frontend1", METAS)
        started = time.monotonic()
        with pytest.raises(Exception) as failed:
            cluster.s3(0, retries={"max_attempts": 1}, read_timeout=60).get_object(Bucket="split", Key="k")
        took = time.monotonic() - started
        assert "ServiceUnavailable" in str(failed.value) or "503" in str(failed.value), failed.value
        assert took < 30, took
        assert s3b.get_object(Bucket="split", Key="k")["Body"].read() == b"new"
        cluster.heal()
        assert _retry(lambda: s3.get_object(Bucket="split", Key="k")["Body"].read()) == b"new"
