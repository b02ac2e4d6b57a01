"""Prometheus metrics of a frontend, served at ``/_cairn/metrics`` (admin credentials).

Per request: counts by S3 operation (the route's name, ``frontend.routes``) and status, latency histograms, bytes in and out.
At scrape time, the cluster as this frontend sees it: each raftmeta node's role, term
and commit index, each blob node's disk, the GC queue, upload expiry, repair and lifecycle state.
"""

from __future__ import annotations

import time
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from core import wire
from core.nodes import BlobNode
from frontend.context import Context

REGISTRY = CollectorRegistry()
REQUESTS = Counter("cairn_s3_requests_total", "S3 requests served", ["operation", "status"], registry=REGISTRY)
LATENCY = Histogram("cairn_s3_request_seconds", "Time to the response headers", ["operation"], registry=REGISTRY,
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ROUND_TRIPS = Histogram("cairn_s3_metadata_round_trips", "Metadata (raftmeta) calls made by one S3 request",
                        ["operation"], registry=REGISTRY, buckets=(0, 1, 2, 3, 4, 6, 8, 16))
BYTES_IN = Counter("cairn_s3_received_bytes_total", "Request body bytes received", registry=REGISTRY)
BYTES_OUT = Counter("cairn_s3_sent_bytes_total", "Object bytes sent (Content-Length of GETs)", registry=REGISTRY)
RAFT_LEADER = Gauge("cairn_raft_is_leader", "1 if this raftmeta node is the Raft leader", ["node"], registry=REGISTRY)
RAFT_UP = Gauge("cairn_raft_up", "1 if this raftmeta node answered", ["node"], registry=REGISTRY)
RAFT_TERM = Gauge("cairn_raft_term", "Raft term", ["node"], registry=REGISTRY)
RAFT_COMMIT = Gauge("cairn_raft_commit_index", "Raft commit index", ["node"], registry=REGISTRY)
BLOB_USED = Gauge("cairn_blobnode_disk_used_bytes", "Blob node disk usage", ["node"], registry=REGISTRY)
BLOB_CAPACITY = Gauge("cairn_blobnode_disk_capacity_bytes", "Blob node disk size", ["node"], registry=REGISTRY)
BLOB_HEARTBEAT_AGE = Gauge("cairn_blobnode_heartbeat_age_seconds", "Since the last heartbeat", ["node"],
                           registry=REGISTRY)
GC_QUEUED = Gauge("cairn_gc_queued_chunks", "Chunks waiting for garbage collection", registry=REGISTRY)
GC_DELETED = Gauge("cairn_gc_deleted_chunks", "Chunks deleted by the current leader", registry=REGISTRY)
UNDER_REPLICATED = Gauge("cairn_under_replicated_chunks", "Seen by the last repair pass", registry=REGISTRY)
REPAIRED = Gauge("cairn_repaired_chunks", "Chunks re-replicated by the current leader", registry=REGISTRY)
REPAIR_BYTES = Gauge("cairn_repaired_bytes", "Bytes re-replicated by the current leader", registry=REGISTRY)
REPAIR_BACKLOG = Gauge("cairn_repair_backlog_bytes", "Bytes of missing replicas the current pass found",
                       registry=REGISTRY)
REPAIR_ETA = Gauge("cairn_repair_eta_seconds", "Estimated time to full replication (-1: unknown)", registry=REGISTRY)
UPLOADS = Gauge("cairn_multipart_uploads", "Incomplete multipart uploads", registry=REGISTRY)
LC_EXAMINED = Gauge("cairn_lifecycle_examined_keys", "Keys the current leader's lifecycle worker examined",
                    registry=REGISTRY)
LC_EXPIRED = Gauge("cairn_lifecycle_expired", "Versions expired and uploads aborted by the current leader's "
                   "lifecycle worker", registry=REGISTRY)
LC_RULES = Gauge("cairn_lifecycle_rules", "Enabled lifecycle rules, per bucket", ["bucket"], registry=REGISTRY)
LC_LAST_PASS = Gauge("cairn_lifecycle_last_completed_timestamp_seconds", "When the lifecycle worker last finished "
                     "a pass over the bucket", ["bucket"], registry=REGISTRY)
BUFFERS_FREE = Gauge("cairn_frontend_chunk_buffers_free", "Chunk buffers free in this frontend", registry=REGISTRY)


def observe(op: str, status: int, seconds: float, received: int, sent: int, round_trips: int = 0) -> None:
    REQUESTS.labels(op, str(status)).inc()
    LATENCY.labels(op).observe(seconds)
    ROUND_TRIPS.labels(op).observe(round_trips)
    if received:
        BYTES_IN.inc(received)
    if sent:
        BYTES_OUT.inc(sent)


async def render(ctx: Context) -> bytes:
    BUFFERS_FREE.set(ctx.data.buffers.value)
    for addr in ctx.meta.addrs:
        try:
            with trio.move_on_after(2):
                status = await ctx.meta.status(addr)
                RAFT_UP.labels(addr).set(1)
                RAFT_LEADER.labels(addr).set(1 if status.get("is_leader") else 0)
                RAFT_TERM.labels(addr).set(status.get("term", 0))
                RAFT_COMMIT.labels(addr).set(status.get("commit_index", 0))
                continue
        except wire.WireError:
            pass
        RAFT_UP.labels(addr).set(0)
    try:
        nodes = await ctx.meta.read({"q": "nodes"}, linear=False, deadline=3)
        for node in map(BlobNode.from_record, nodes.get("nodes", [])):
            BLOB_USED.labels(node.node_id).set(node.used)
            BLOB_CAPACITY.labels(node.node_id).set(node.capacity)
            BLOB_HEARTBEAT_AGE.labels(node.node_id).set(max(0.0, time.time() - node.heartbeat))
        chores: dict[str, Any] = await ctx.meta.call({"op": "chore", "name": "status"}, deadline=3)
        if chores.get("ok"):
            GC_QUEUED.set(chores["gc"]["queued"])
            GC_DELETED.set(chores["gc"]["deleted_total"])
            UPLOADS.set(chores["uploads"])
            UNDER_REPLICATED.set(chores["repair"]["last_under_replicated"])
            REPAIRED.set(chores["repair"]["repaired_total"])
            REPAIR_BYTES.set(chores["repair"]["bytes_total"])
            REPAIR_BACKLOG.set(chores["repair"]["backlog_bytes"])
            eta = chores["repair"]["eta_s"]
            REPAIR_ETA.set(-1 if eta is None else eta)
            lifecycle = chores.get("lifecycle") or {}
            LC_EXAMINED.set(lifecycle.get("examined_total", 0))
            LC_EXPIRED.set(lifecycle.get("expired_total", 0) + lifecycle.get("aborted_total", 0))
            for bucket, info in (lifecycle.get("buckets") or {}).items():
                LC_RULES.labels(bucket).set(info.get("enabled_rules", 0))
                LC_LAST_PASS.labels(bucket).set(info.get("last_completed") or 0)
    except wire.WireError:
        pass
    return generate_latest(REGISTRY)
