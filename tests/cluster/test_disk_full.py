"""A blob node whose disk fills up during uploads: writes go elsewhere, nothing partial
is left on the full disk, everything reads back, replication is full again, and the node
takes chunks again once GC frees its disk. The disk is a real 40 MiB tmpfs: ENOSPC is real."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import time

import pytest

from chaos.cluster import Cluster

pytestmark = pytest.mark.cluster
MIB = 1024 * 1024


def _writable(cluster: Cluster) -> int:
    return (cluster.health(0) or {}).get("blobnodes_writable", -1)


def _wait(cond, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_full_disk_during_uploads(tmp_path_factory):
    disks = {i: 256 for i in range(4)}  # equal disks, so placement uses the small one like the others
    with Cluster(tmp_path_factory.mktemp("full"), blobs=4, frontends=1, chunk_size=MIB, gc_grace=1, gc_interval=0.5,
                 blob_disk_mb=disks, blobnode_flags=["--reserve-mb", "4"],
                 raftmeta_flags=["--repair-interval", "0.5"]) as cluster:
        small = cluster.root / "blobnode1"
        assert os.path.ismount(small)
        s3 = cluster.s3(0)
        s3.create_bucket(Bucket="fill")
        s3.put_object(Bucket="fill", Key="before", Body=os.urandom(3 * MIB))
        before = s3.get_object(Bucket="fill", Key="before")["Body"].read()
        held_before = len(list((small / "chunks").rglob("*")))
        assert cluster.fill_disk("blobnode1", leave=2 * MIB) > 100 * MIB  # the disk fills up under the node's feet
        bodies = {f"obj{i}": os.urandom(6 * MIB + i) for i in range(16)}

        def put(key: str) -> str:
            return s3.put_object(Bucket="fill", Key=key, Body=bodies[key])["ETag"]

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            etags = dict(zip(bodies, pool.map(put, bodies), strict=True))
        for key, body in bodies.items():  # every acknowledged upload reads back whole
            got = s3.get_object(Bucket="fill", Key=key)["Body"].read()
            assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest(), key
            assert etags[key].strip('"') == hashlib.md5(body).hexdigest()
        assert s3.get_object(Bucket="fill", Key="before")["Body"].read() == before
        assert len(list((small / "chunks").rglob("*"))) == held_before, "the full node took chunks"
        assert not list((small / "tmp").iterdir()), "a refused write left a partial file behind"
        _wait(lambda: _writable(cluster) == 3, 15, "the full node to be reported not writable")
        status, body = cluster.admin("GET", "status")
        assert status == 200 and [n["disk_full"] for n in body["blobnodes"]].count(True) == 1, body["blobnodes"]
        _wait(lambda: not cluster.under_replicated(3), 60, "full replication on the nodes with room")

        # the disk gets room again: the node is placed on again
        cluster.free_disk("blobnode1")
        _wait(lambda: _writable(cluster) == 4, 30, "the node to be writable again")
        for i in range(6):
            s3.put_object(Bucket="fill", Key=f"after{i}", Body=os.urandom(3 * MIB))
        assert len(list((small / "chunks").rglob("*"))) > held_before
