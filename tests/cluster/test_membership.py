"""Replacing a raftmeta member with PySyncObj's dynamic membership, as an operator would:
start a new node, `cairn admin raft replace OLD NEW`, retire the old one. The new node
then votes: the cluster survives losing one more of the original members."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from chaos.cluster import ACCESS_KEY, SECRET_KEY, Cluster

pytestmark = pytest.mark.cluster


def _admin(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CAIRN_ROOT_ACCESS_KEY=ACCESS_KEY, CAIRN_ROOT_SECRET_KEY=SECRET_KEY)
    return subprocess.run([sys.executable, "-m", "cairn.cli", "admin", "--endpoint", cluster.endpoints[0], *args],
                          capture_output=True, text=True, timeout=60, env=env)


def _move_leadership_off(cluster: Cluster, name: str) -> None:
    """A leader is removed through another node: restart it until someone else leads."""
    deadline = time.monotonic() + 60
    while (leader := cluster.leader()) in (name, None):
        assert time.monotonic() < deadline, "leadership did not move"
        if leader == name:
            cluster.restart(name)
        time.sleep(0.5)


def test_replace_a_raftmeta_member(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("members"), blobs=3, frontends=2) as cluster:
        s3 = cluster.s3(0)
        s3.create_bucket(Bucket="members")
        s3.put_object(Bucket="members", Key="before", Body=b"1")
        new_raft, new_rpc = cluster.add_raftmeta()
        cluster.start("raftmeta4")
        old = cluster.raft[0]
        _move_leadership_off(cluster, "raftmeta1")
        done = _admin(cluster, "raft", "replace", old, new_raft)
        if "cannot remove itself" in done.stdout:  # it was elected again meanwhile: the add is done
            _move_leadership_off(cluster, "raftmeta1")
            done = _admin(cluster, "raft", "remove", old)
        assert done.returncode == 0, done.stdout + done.stderr
        cluster.kill("raftmeta1")

        deadline = time.monotonic() + 15  # the new member records its RPC address through Raft
        while True:
            status, body = cluster.admin("GET", "raft")
            rpc_of = {m["raft"]: m["rpc"] for m in body.get("members", [])}
            if rpc_of.get(new_raft) == new_rpc or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200 and sorted(rpc_of) == sorted(cluster.raft[1:]), body
        assert rpc_of[new_raft] == new_rpc
        s3.put_object(Bucket="members", Key="after-replace", Body=b"2")

        # the new member is a voter: with one more original member gone, 2 of 3 remain
        victim = "raftmeta2" if cluster.leader() != "raftmeta2" else "raftmeta3"
        cluster.kill(victim)
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.put_object(Bucket="members", Key="after-loss", Body=b"3")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        for key, value in (("before", b"1"), ("after-replace", b"2"), ("after-loss", b"3")):
            assert cluster.s3(1).get_object(Bucket="members", Key=key)["Body"].read() == value
        # the new member applied everything too, and survives a restart with its membership
        cluster.restart("raftmeta4")
        cluster.start(victim)
        cluster.wait_healthy()
        s3.put_object(Bucket="members", Key="after-restart", Body=b"4")
        status, body = cluster.admin("GET", "raft")
        assert status == 200 and all(m["up"] for m in body["members"]), body
