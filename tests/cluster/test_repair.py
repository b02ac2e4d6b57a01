"""A blob node lost for good: its replicas are re-created on the others, node to node."""

from __future__ import annotations

import os
import time

import pytest

from chaos.cluster import Cluster

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
    flags = ["--dead-after", "3", "--repair-interval", "0.5"]
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
        while time.monotonic() < deadline:
            manifests = _manifests(cluster, list(bodies))
            if all(len(c[3]) == 3 and victim_id not in c[3] for chunks in manifests.values() for c in chunks):
                break
            time.sleep(0.5)
        else:
            pytest.fail("replicas on the dead node were not re-created")
        print(f"{held} replicas re-created {time.monotonic() - started:.1f}s after SIGKILL (declared dead 3 s after its last heartbeat)")
        # every recorded replica is really on that node's disk, and the data reads back whole
        dirs = _node_dirs(cluster)
        files = cluster.chunk_files()
        for chunks in manifests.values():
            for chunk_id, _size, _sha, nodes in chunks:
                on_disk = {p.parts[-5] for p in files[chunk_id]}
                assert {dirs[n] for n in nodes} <= on_disk
        for key, body in bodies.items():
            assert s3.get_object(Bucket="heal", Key=key)["Body"].read() == body
        status, info = cluster.admin("GET", "repair")
        assert status == 200 and info["repair"]["repaired_total"] >= held and victim_id in info["repair"]["dead_nodes"]
