"""A blob node lost for good: its replicas are re-created on the others, node to node."""

from __future__ import annotations

import os
import time

import pytest

from chaos.cluster import Cluster
from core import chunksum

pytestmark = pytest.mark.cluster
MIB = 1024 * 1024


def _manifests(cluster: Cluster, keys: list[str]) -> dict[str, list]:
    import trio

    from chaos.cluster import SECRET
    from raftmeta.client import MetaClient

    async def ask() -> dict[str, list]:
        client = MetaClient(cluster.rpc, SECRET)
        out = {}
        for key in keys:
            out[key] = (await client.read({"q": "object", "bucket": "heal", "key": key}))["obj"]["chunks"]
        return out

    return trio.run(ask)


def _node_dirs(cluster: Cluster) -> dict[str, str]:
    return {(cluster.root / f"blobnode{i + 1}" / "node_id").read_text().strip(): f"blobnode{i + 1}"
            for i in range(cluster.blobs)}


def test_dead_node_replicas_are_recreated(tmp_path_factory):
    # 5 MB/s: slow enough to watch the backlog and ETA while repair runs
    flags = ["--dead-after", "7", "--repair-interval", "0.5", "--repair-rate", "5"]  # heartbeats every 3 s
    with Cluster(tmp_path_factory.mktemp("repair"), blobs=4, frontends=1, chunk_size=MIB,
                 raftmeta_flags=flags) as cluster:
        s3 = cluster.s3(0)
        s3.create_bucket(Bucket="heal")
        bodies = {f"obj{i}": os.urandom(3 * MIB + i) for i in range(6)}
        for key, body in bodies.items():
            s3.put_object(Bucket="heal", Key=key, Body=body)
        victim_id, victim = next(iter(_node_dirs(cluster).items()))
        held = sum(victim_id in c[3] for chunks in _manifests(cluster, list(bodies)).values() for c in chunks)
        assert held > 0
        cluster.kill(victim)
        started = time.monotonic()
        deadline = started + 60
        progress = []  # what an operator polling the repair endpoint saw
        while time.monotonic() < deadline:
            progress.append(cluster.admin("GET", "repair")[1].get("repair", {}))
            manifests = _manifests(cluster, list(bodies))
            if all(len(c[3]) == 3 and victim_id not in c[3] for chunks in manifests.values() for c in chunks):
                break
            time.sleep(0.5)
        else:
            pytest.fail("replicas on the dead node were not re-created")
        print(f"{held} replicas re-created {time.monotonic() - started:.1f}s after SIGKILL (declared dead 7 s after its last heartbeat)")
        # every recorded replica is really on that node's disk, and the data reads back whole
        dirs = _node_dirs(cluster)
        files = cluster.chunk_files()
        for chunks in manifests.values():
            for chunk_id, _size, _sha, nodes in chunks:
                on_disk = {p.parts[-5] for p in files[chunk_id]}
                assert {dirs[n] for n in nodes} <= on_disk
        for key, body in bodies.items():
            assert s3.get_object(Bucket="heal", Key=key)["Body"].read() == body
        working = [p for p in progress if p.get("backlog_chunks")]
        assert working and working[0]["backlog_chunks"] == held, progress
        assert any(p["eta_s"] is not None and p["rate_bytes_s"] for p in working), working
        print("repair progress seen:", [(p["backlog_chunks"], p["pass_bytes"], p["eta_s"]) for p in working])
        status, info = cluster.admin("GET", "repair")
        assert status == 200 and info["repair"]["repaired_total"] >= held and victim_id in info["repair"]["dead_nodes"]
        status, overview = cluster.admin("GET", "status")
        assert status == 200 and sum(1 for r in overview["raftmeta"] if r.get("is_leader")) == 1
        states = {n["node_id"]: n["state"] for n in overview["blobnodes"]}
        assert states[victim_id] == "dead" and sorted(states.values()).count("up") == 3


def test_read_repair_restores_a_corrupt_replica(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("readrepair"), frontends=1, chunk_size=MIB,
                 raftmeta_flags=["--repair-interval", "0.5"]) as cluster:
        s3 = cluster.s3(0)
        s3.create_bucket(Bucket="heal")
        body = os.urandom(2 * MIB + 5)
        s3.put_object(Bucket="heal", Key="rot", Body=body)
        chunk_id, _size, checksum, nodes = _manifests(cluster, ["rot"])["rot"][0]
        assert checksum.startswith("xxh3-128:")
        assert len(nodes) == 3
        # a fresh frontend knows no latencies, so it reads replicas in manifest order:
        # the first one is the replica to corrupt
        first = _node_dirs(cluster)[nodes[0]]
        path = next(p for p in cluster.chunk_files()[chunk_id] if p.parts[-5] == first)
        raw = bytearray(path.read_bytes())
        raw[64 + 10] ^= 0xFF
        path.write_bytes(bytes(raw))
        cluster.restart("frontend1")
        cluster.wait_healthy()
        assert s3.get_object(Bucket="heal", Key="rot")["Body"].read() == body  # served from a good replica
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if chunksum.parse(checksum).matches(path.read_bytes()[64:]) and \
                    len(_manifests(cluster, ["rot"])["rot"][0][3]) == 3:
                break
            time.sleep(0.3)
        else:
            pytest.fail("the corrupt replica was not repaired")
        assert s3.get_object(Bucket="heal", Key="rot")["Body"].read() == body


def test_scrubber_quarantines_and_repair_restores(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("scrub"), frontends=1, chunk_size=MIB,
                 raftmeta_flags=["--repair-interval", "0.5"],
                 blobnode_flags=["--scrub-rate", "500", "--scrub-interval", "0.5"]) as cluster:
        s3 = cluster.s3(0)
        s3.create_bucket(Bucket="heal")
        body = os.urandom(MIB // 2)
        s3.put_object(Bucket="heal", Key="bitrot", Body=body)
        chunk_id, _size, checksum, _nodes = _manifests(cluster, ["bitrot"])["bitrot"][0]
        path = cluster.chunk_files()[chunk_id][0]
        raw = bytearray(path.read_bytes())
        raw[64 + 99] ^= 0x01  # one flipped bit, nobody reading the object
        path.write_bytes(bytes(raw))
        quarantined = path.parents[3] / "quarantine" / chunk_id
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            repaired = path.exists() and chunksum.parse(checksum).matches(path.read_bytes()[64:])
            if quarantined.exists() and repaired and len(_manifests(cluster, ["bitrot"])["bitrot"][0][3]) == 3:
                break
            time.sleep(0.3)
        else:
            pytest.fail("the scrubber did not quarantine the corrupt chunk, or repair did not restore it")
        assert s3.get_object(Bucket="heal", Key="bitrot")["Body"].read() == body
        status, scrubbers = cluster.admin("POST", "scrub")  # an operator-triggered pass
        assert status == 200 and len(scrubbers) == 3
        assert sum(s["corrupt_found"] for s in scrubbers.values()) == 1
        assert all(s["passes"] >= 1 and "error" not in s for s in scrubbers.values())


def test_orphans_of_a_dead_frontend_are_reclaimed(tmp_path_factory):
    import threading

    flags = ["--orphan-grace", "2", "--orphan-interval", "0.5", "--gc-grace", "0.5", "--gc-interval", "0.3"]
    with Cluster(tmp_path_factory.mktemp("orphans"), frontends=2, chunk_size=MIB, raftmeta_flags=flags) as cluster:
        s3 = cluster.s3(1)
        s3.create_bucket(Bucket="heal")
        s3.put_object(Bucket="heal", Key="kept", Body=os.urandom(2 * MIB))

        def upload() -> None:
            try:
                cluster.s3(0, retries={"max_attempts": 1}).put_object(Bucket="heal", Key="cut",
                                                                       Body=os.urandom(60 * MIB))
            except Exception:  # the frontend dies under it
                pass

        t = threading.Thread(target=upload)
        t.start()
        deadline = time.monotonic() + 20
        while len(cluster.chunk_files()) < 2 * 3 + 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster.kill("frontend1")
        t.join(30)
        assert set(cluster.chunk_files()) - cluster.chunk_refs()["referenced"], "the dead upload left no chunk behind"
        assert cluster.wait_no_orphans(timeout=30) == set()
        assert len(s3.get_object(Bucket="heal", Key="kept")["Body"].read()) == 2 * MIB


def test_a_replica_deleted_from_disk_is_noticed_and_recreated(tmp_path_factory):
    """Nobody reads the object: the orphan sweep's listing of the node, compared with the
    manifests, finds the replica gone, and repair makes a new one."""
    flags = ["--repair-interval", "0.5", "--orphan-interval", "3600"]
    with Cluster(tmp_path_factory.mktemp("missing"), frontends=1, chunk_size=MIB, raftmeta_flags=flags) as cluster:
        s3 = cluster.s3(0)
        s3.create_bucket(Bucket="heal")
        body = os.urandom(MIB + 7)
        s3.put_object(Bucket="heal", Key="quiet", Body=body)
        chunk_id, _size, _sha256, nodes = _manifests(cluster, ["quiet"])["quiet"][0]
        assert len(nodes) == 3
        victim = cluster.chunk_files()[chunk_id][0]
        victim.unlink()
        status, reply = cluster.admin("POST", "orphans")
        assert status == 200 and reply["orphans"]["missing_total"] == 1, reply
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(cluster.chunk_files().get(chunk_id, [])) == 3 and \
                    len(_manifests(cluster, ["quiet"])["quiet"][0][3]) == 3:
                break
            time.sleep(0.3)
        else:
            pytest.fail("the missing replica was not re-created")
        assert s3.get_object(Bucket="heal", Key="quiet")["Body"].read() == body


def test_drain_then_decommission(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("drain"), blobs=4, frontends=1, chunk_size=MIB,
                 raftmeta_flags=["--repair-interval", "0.5"]) as cluster:
        s3 = cluster.s3(0)
        s3.create_bucket(Bucket="heal")
        bodies = {f"d{i}": os.urandom(2 * MIB + i) for i in range(5)}
        for key, body in bodies.items():
            s3.put_object(Bucket="heal", Key=key, Body=body)
        node_id = next(iter(_node_dirs(cluster)))
        status, _ = cluster.admin("DELETE", f"nodes/{node_id}")
        assert status == 409  # still holds replicas
        status, _ = cluster.admin("POST", f"nodes/{node_id}/drain")
        assert status == 200
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            manifests = _manifests(cluster, list(bodies))
            if all(node_id not in c[3] and len(c[3]) == 3 for chunks in manifests.values() for c in chunks):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the draining node was not emptied")
        time.sleep(2.5)  # frontends re-read the registry every 2 s: then no new chunk goes to the node
        s3.put_object(Bucket="heal", Key="after-drain", Body=os.urandom(MIB))
        assert all(node_id not in c[3] for c in _manifests(cluster, ["after-drain"])["after-drain"])
        status, _ = cluster.admin("DELETE", f"nodes/{node_id}")
        assert status == 204
        _, overview = cluster.admin("GET", "status")
        assert node_id not in {n["node_id"] for n in overview["blobnodes"]}
        for key, body in bodies.items():
            assert s3.get_object(Bucket="heal", Key=key)["Body"].read() == body
