"""Commit batching on a real cluster: concurrent writes through both frontends share Raft
entries (``raftmeta.batcher``), and every one of them is applied as if it had its own."""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import trio

from chaos.cluster import SECRET
from raftmeta.client import MetaClient

pytestmark = pytest.mark.cluster


def batch_stats(cluster) -> dict:
    async def ask() -> dict:
        client = MetaClient(cluster.rpc, SECRET)
        total = {"entries": 0, "commands": 0, "allowed": True}
        for addr in cluster.rpc:
            b = (await client.status(addr))["batches"]
            total["entries"] += b["entries"]
            total["commands"] += b["commands"]
            total["allowed"] = total["allowed"] and b["allowed"]
        return total

    return trio.run(ask)


def test_concurrent_writes_share_entries_and_each_lands(cluster, s3, s3b, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    deadline = time.monotonic() + 20  # every member records its entry format through Raft once it starts
    while not (before := batch_stats(cluster))["allowed"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert before["allowed"]
    bodies = {n: os.urandom(100 + n) for n in range(192)}

    def put(n: int) -> tuple[int, str]:
        client = s3 if n % 2 else s3b
        key = "same" if n % 3 == 0 else f"k{n}"  # a third of them race on one key
        return n, client.put_object(Bucket=bucket, Key=key, Body=bodies[n])["VersionId"]

    with ThreadPoolExecutor(48) as pool:
        vids = dict(pool.map(put, bodies))
    after = batch_stats(cluster)
    assert after["entries"] > before["entries"]  # some entries carried several commands
    assert after["commands"] - before["commands"] >= 2 * (after["entries"] - before["entries"])
    assert len(set(vids.values())) == len(bodies)  # every write its own version
    versions = s3.list_object_versions(Bucket=bucket, Prefix="same")["Versions"]
    racing = [n for n in bodies if n % 3 == 0]
    assert sorted(v["VersionId"] for v in versions) == sorted(vids[n] for n in racing)
    latest = next(v for v in versions if v["IsLatest"])["VersionId"]
    assert latest == max(vids[n] for n in racing)  # version ids order the writes as applied
    for n in racing[:8]:
        got = s3.get_object(Bucket=bucket, Key="same", VersionId=vids[n])["Body"].read()
        assert hashlib.md5(got).digest() == hashlib.md5(bodies[n]).digest()
    for n in (1, 2, 4, 5):
        assert s3b.get_object(Bucket=bucket, Key=f"k{n}")["Body"].read() == bodies[n]


def test_a_failing_write_in_a_busy_moment_fails_alone(cluster, s3, bucket):
    def put(n: int) -> str:
        target = "no-such-bucket-batching" if n % 4 == 0 else bucket
        try:
            s3.put_object(Bucket=target, Key=f"f{n}", Body=b"x" * n)
            return "ok"
        except s3.exceptions.NoSuchBucket:
            return "NoSuchBucket"

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(put, range(128)))
    assert outcomes == ["NoSuchBucket" if n % 4 == 0 else "ok" for n in range(128)]
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert listed == {f"f{n}" for n in range(128) if n % 4}
