"""In-process test of the leader's garbage collector against a real blob node."""

from __future__ import annotations

import hashlib
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from blobnode.client import BlobClient
from blobnode.server import BlobServer
from blobnode.store import ChunkStore
from raftmeta.client import MetaClient
from tests.integration.raftcluster import GC_GRACE, SECRET, must, obj, open_cluster, wait_until


async def test_gc_deletes_unreferenced_chunks_from_blob_node(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_cluster(tmp_path / "meta") as cluster:
            # a real blob node, registered through a heartbeat command
            store = ChunkStore(str(tmp_path / "blob"))
            blob_server = BlobServer(store, SECRET)
            listeners = await cluster.nursery.start(
                partial(trio.serve_tcp, blob_server.serve_conn, 0, host="127.0.0.1")
            )
            blob_addr = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            leader = await cluster.wait_leader()
            client = MetaClient(cluster.addrs, SECRET)
            await must(client.write({
                "op": "node_heartbeat", "node_id": store.node_id, "addr": blob_addr, "capacity": 10**12,
                "used": 0, "chunks": 0, "ts": time.time(),
            }))
            nodes = await must(client.read({"q": "nodes"}))
            assert [(n["node_id"], n["addr"]) for n in nodes["nodes"]] == [(store.node_id, blob_addr)]

            blobs = BlobClient(SECRET)
            chunks: dict[str, list[Any]] = {}
            for name in ("old", "shared", "new"):
                data = os.urandom(1000)
                cid = os.urandom(16).hex()
                sha = hashlib.sha256(data).hexdigest()
                assert await blobs.put(blob_addr, cid, sha, data)
                chunks[name] = [cid, len(data), sha, [store.node_id]]

            def on_disk(name: str) -> bool:
                return os.path.exists(store.path(chunks[name][0]))

            await must(client.write({"op": "create_bucket", "bucket": "g", "owner": "alice", "ts": time.time()}))
            await must(client.write({"op": "put_object", "bucket": "g", "key": "obj",
                                     "obj": obj(2000, [chunks["old"], chunks["shared"]]), "ts": time.time()}))
            # the overwrite is stamped 1 s ahead (a frontend clock a little fast), so the queue can be
            # observed before the grace period of the queued chunk has passed
            queued_at = time.time() + 1.0
            await must(client.write({"op": "put_object", "bucket": "g", "key": "obj",
                                     "obj": obj(2000, [chunks["shared"], chunks["new"]]), "ts": queued_at}))
            pending = await must(client.read({"q": "gc_pending", "before": 1e18}))
            assert [(item[1], item[2]) for item in pending["items"]] == [(chunks["old"][0], [store.node_id])]
            assert pending["total"] == 1  # "shared" is still referenced: not queued
            assert on_disk("old")

            took = await wait_until(lambda: not on_disk("old"), 10, "gc to delete the old chunk", step=0.02)
            assert time.time() >= queued_at + GC_GRACE  # not before the grace period
            print(f"\ngc deleted the overwritten chunk {took:.2f}s after it was queued (1 s ahead + {GC_GRACE} s grace)")

            async def queue_empty() -> bool:
                reply = await must(client.read({"q": "gc_pending", "before": 1e18}))
                return reply["items"] == [] and reply["total"] == 0

            await wait_until(queue_empty, 5, "gc_done to empty the queue")
            assert on_disk("shared") and on_disk("new")
            _, data = await blobs.get(blob_addr, chunks["shared"][0])
            assert hashlib.sha256(data).hexdigest() == chunks["shared"][2]

            # deleting the object queues the rest; gc removes them within a few seconds
            await must(client.write({"op": "delete_object", "bucket": "g", "key": "obj", "ts": time.time()}))
            took = await wait_until(lambda: not on_disk("shared") and not on_disk("new"), 10,
                                    "gc after delete_object", step=0.02)
            print(f"gc deleted the chunks of a deleted object within {took:.2f}s")
            await wait_until(queue_empty, 5, "an empty gc queue")
            assert await blobs.list_all(blob_addr) == []
            assert (await blobs.info(blob_addr))["chunks"] == 0

            sts = await cluster.statuses()
            deleted = {r.name: st["gc_deleted"] for r, st in zip(cluster.live(), sts, strict=True)}
            assert sum(deleted.values()) == 3, deleted
            assert deleted[leader.name] == 3, deleted  # only the leader collects
            assert not cluster.crashes()
