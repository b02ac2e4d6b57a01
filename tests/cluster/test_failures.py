"""Processes killed, paused and restarted while clients work: nothing acknowledged is lost."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time

import pytest
from botocore.exceptions import ClientError

from chaos.cluster import Cluster
from tests.cluster.conftest import CHUNK

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def fcluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("failures"), chunk_size=CHUNK)
    with c:
        c.s3().create_bucket(Bucket="acked")
        yield c


def _check_all(s3, acked: dict[str, bytes]) -> None:
    for key, body in acked.items():
        got = s3.get_object(Bucket="acked", Key=key)["Body"].read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest(), key


def test_one_blob_node_down(fcluster):
    s3 = fcluster.s3(0)
    acked = {}
    for i in range(3):
        acked[f"before-{i}"] = os.urandom(2 * CHUNK + i)
        s3.put_object(Bucket="acked", Key=f"before-{i}", Body=acked[f"before-{i}"])
    for victim in ("blobnode1", "blobnode2", "blobnode3"):
        fcluster.kill(victim)
        for i in range(3):
            key = f"{victim}-down-{i}"
            acked[key] = os.urandom(2 * CHUNK + 7 * i)
            s3.put_object(Bucket="acked", Key=key, Body=acked[key])
        _check_all(fcluster.s3(1), acked)
        fcluster.start(victim)
        fcluster.wait_healthy()
    _check_all(s3, acked)


def test_paused_blob_node_does_not_stall_clients(fcluster):
    s3 = fcluster.s3(0)
    body = os.urandom(3 * CHUNK)
    s3.put_object(Bucket="acked", Key="paused", Body=body)
    fcluster.signal("blobnode2", signal.SIGSTOP)
    try:
        t = time.monotonic()
        s3.put_object(Bucket="acked", Key="during-pause", Body=body)
        assert s3.get_object(Bucket="acked", Key="paused")["Body"].read() == body
        assert s3.get_object(Bucket="acked", Key="during-pause")["Body"].read() == body
        elapsed = time.monotonic() - t
        assert elapsed < 20, f"a paused blob node stalled the client for {elapsed:.1f}s"
    finally:
        fcluster.signal("blobnode2", signal.SIGCONT)


def test_raft_leader_killed(fcluster):
    s3 = fcluster.s3(0)
    acked = {f"leader-{i}": os.urandom(1000 + i) for i in range(5)}
    for k, v in acked.items():
        s3.put_object(Bucket="acked", Key=k, Body=v)
    for _round in range(2):
        leader = fcluster.leader()
        assert leader is not None
        fcluster.kill(leader)
        t = time.monotonic()
        s3.put_object(Bucket="acked", Key=f"after-{leader}", Body=b"after")
        acked[f"after-{leader}"] = b"after"
        took = time.monotonic() - t
        print(f"first PUT after SIGKILL of the Raft leader took {took:.2f}s")
        assert took < 10
        _check_all(fcluster.s3(1), acked)
        fcluster.start(leader)
        fcluster.wait_healthy()
    _check_all(s3, acked)


def test_frontend_killed_mid_upload_commits_nothing(fcluster):
    s3 = fcluster.s3(1)
    s3.put_object(Bucket="acked", Key="mid", Body=b"old version")
    big = os.urandom(40 * CHUNK)
    done = threading.Event()

    def upload() -> None:
        try:
            fcluster.s3(0, retries={"max_attempts": 1}).put_object(Bucket="acked", Key="mid", Body=big)
        except Exception:  # expected: the frontend dies under it
            pass
        done.set()

    t = threading.Thread(target=upload)
    t.start()
    time.sleep(0.3)
    fcluster.kill("frontend1")
    t.join(30)
    assert done.is_set()
    assert s3.get_object(Bucket="acked", Key="mid")["Body"].read() == b"old version"
    fcluster.start("frontend1")
    fcluster.wait_healthy()


def test_kill_everything_then_restart(fcluster):
    s3 = fcluster.s3(0)
    acked = {f"crash-{i}": os.urandom(CHUNK // 3 * i + 1) for i in range(8)}
    for k, v in acked.items():
        s3.put_object(Bucket="acked", Key=k, Body=v)
    s3.delete_object(Bucket="acked", Key="crash-0")
    del acked["crash-0"]
    for name in list(fcluster.procs):
        fcluster.kill(name)
    fcluster.start()
    fcluster.wait_healthy()
    _check_all(fcluster.s3(1), acked)
    with pytest.raises(ClientError):
        fcluster.s3(0).head_object(Bucket="acked", Key="crash-0")


def _chunk_ids(fcluster, key: str) -> list[str]:
    """Chunk ids of an object, found as the chunk files that appeared for it."""
    import trio

    from chaos.cluster import SECRET
    from raftmeta.client import MetaClient

    async def ask() -> dict:
        return await MetaClient(fcluster.rpc, SECRET).read({"q": "object", "bucket": "acked", "key": key})

    return [c[0] for c in trio.run(ask)["obj"]["chunks"]]


def _flip_byte(path, offset: int = 100) -> None:
    with open(path, "r+b") as f:
        f.seek(64 + offset)  # past the chunk header
        byte = f.read(1)
        f.seek(64 + offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_corrupt_replicas_are_never_served(fcluster):
    from botocore.exceptions import ResponseStreamingError

    s3 = fcluster.s3(0, retries={"max_attempts": 1})
    body = os.urandom(3 * CHUNK)
    s3.put_object(Bucket="acked", Key="rot", Body=body)
    first, second = _chunk_ids(fcluster, "rot")[:2]
    files = fcluster.chunk_files()
    _flip_byte(files[first][0])  # one bad replica: served from a good one, byte-exact
    assert s3.get_object(Bucket="acked", Key="rot")["Body"].read() == body
    for path in files[second]:  # every replica of a chunk bad: the response is cut, never served
        _flip_byte(path)
    with pytest.raises((ResponseStreamingError, ClientError)):
        s3.get_object(Bucket="acked", Key="rot")["Body"].read()
    for path in files[second]:
        _flip_byte(path)  # restore, so later tests see an intact object
    assert s3.get_object(Bucket="acked", Key="rot")["Body"].read() == body
