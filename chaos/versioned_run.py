"""``cairn chaos run --workload versioned``: the faults of ``chaos.run`` while
``chaos.versioned`` works one Enabled bucket, then a verdict on the version histories.

    cairn chaos run --workload versioned --seed 1 --duration 60 --out chaos-out

After the faults stop and the cluster is healthy again: every chunk (noncurrent
versions' too) back to full replication within ``--settle``, as raftmeta sees it and as
the disks have it (a replica a manifest names whose file is gone is an anomaly until the
orphan sweep reports it and repair re-creates it), then one paged ListObjectVersions of the whole bucket, a GET by id of every listed
version and of every version we deleted, ``check_versioned``, and no orphan chunk. Writes
``history.json`` and ``report.json`` to ``--out``; exit 1 on any anomaly.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from chaos import netns
from chaos.cluster import Cluster
from chaos.run import DISK_FAULTS, FULL_DISK_FAULTS, MIB, PARTITION_FAULTS, PROCESS_FAULTS, inject
from chaos.versioned import BUCKET, VersionedWorkload, check_versioned, list_versions, read_version


def retrying(fn: Any, attempts: int = 20) -> Any:
    """``fn()``, retried a bounded number of times (the cluster may still be settling)."""
    for i in range(attempts):
        try:
            return fn()
        except Exception:
            if i == attempts - 1:
                raise
            time.sleep(1)
    return None


def final_state(cluster: Cluster, work: VersionedWorkload) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The final listing, and a GET by id of every listed or deleted version."""
    s3 = cluster.s3(0, retries={"max_attempts": 5, "mode": "standard"}, read_timeout=30)
    final = [e for page in retrying(lambda: list_versions(s3, "", 100, 2000)) for e in page]
    todo = {e["vid"]: e["key"] for e in final}
    todo.update({h["vid"]: h["key"] for h in work.history if h["op"] == "delete_version" and h["vid"] not in todo})
    reads: dict[str, dict[str, Any]] = {}
    for vid, key in todo.items():
        for _ in range(5):  # an error (not an answer) is retried; a wrong answer is kept
            reads[vid] = read_version(s3, key, vid)
            if reads[vid]["status"] != "error":
                break
            time.sleep(1)
    return final, reads


def missing_replicas(cluster: Cluster) -> list[str]:
    """Replicas a manifest places on a blob node whose chunk file is not on its disk
    (``node/chunk``): replication as the disks have it, not as raftmeta believes it."""
    import trio

    from chaos.cluster import SECRET
    from raftmeta.client import MetaClient

    on_disk: dict[str, set[str]] = {}
    for d in cluster.blob_dirs():
        node_id = (d / "node_id").read_text().strip()
        on_disk[node_id] = {p.name for p in (d / "chunks").rglob("*") if p.is_file()}

    async def ask() -> list[str]:
        client = MetaClient(cluster.rpc, SECRET)
        out = []
        for node_id, files in on_disk.items():
            refs = (await client.read({"q": "node_refs", "node": node_id}))["ids"]
            out += [f"{node_id}/{chunk}" for chunk in refs if chunk not in files]
        return out

    return trio.run(ask)


def run_versioned(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    why_not = netns.available()
    use_root = args.partitions == "on" or (args.partitions == "auto" and why_not is None)
    if use_root and why_not:
        raise SystemExit(f"cannot inject partitions or full disks: {why_not}")
    faults_used = PROCESS_FAULTS + DISK_FAULTS + ((FULL_DISK_FAULTS + PARTITION_FAULTS) if use_root else ())
    if not use_root:
        print(f"WARNING: no partitions and no full disks in this run ({why_not or '--partitions off'})",
              file=sys.stderr)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="cairn-vchaos-")), blobs=args.blobs, frontends=2, chunk_size=MIB,
                      gc_grace=2.0, gc_interval=0.5,
                      raftmeta_flags=["--dead-after", "60", "--repair-interval", "1", "--orphan-grace", "30",
                                      "--orphan-interval", "2"],
                      blobnode_flags=["--scrub-rate", "200", "--scrub-interval", "2", "--reserve-mb", "8"],
                      netns=use_root, blob_disk_mb={i: 512 for i in range(args.blobs)} if use_root else {})
    faults: list[dict[str, Any]] = []
    report: dict[str, Any] = {"workload": "versioned", "seed": args.seed, "duration": args.duration,
                              "keys": args.keys, "threads": args.threads, "fault_kinds": list(faults_used),
                              "partitions_and_full_disks": use_root or f"off: {why_not or 'asked'}", "faults": faults}
    with cluster:
        s3 = cluster.s3(0)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        work = VersionedWorkload(cluster, args.seed, args.keys)
        threads = [threading.Thread(target=work.client, args=(n,), daemon=True) for n in range(args.threads)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + args.duration
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, 2.5))
            inject(cluster, rng, rng.choice(faults_used), faults, work.now())
            print(f"fault {json.dumps(faults[-1])}", file=sys.stderr, flush=True)
        work.stop.set()
        for t in threads:
            t.join(60)
        stuck = sum(t.is_alive() for t in threads)
        for name, proc in cluster.procs.items():
            if not proc.alive():
                cluster.start(name)
        try:
            cluster.wait_healthy(timeout=60)
            recovered = True
        except TimeoutError as exc:
            print(f"cluster not healthy 60 s after the faults stopped: {exc}", file=sys.stderr)
            recovered = False
        with work.lock:
            history = list(work.history)
        repl_deadline = time.monotonic() + args.settle
        under: list[str] = []
        missing: list[str] = []
        while time.monotonic() < repl_deadline:
            # replication as the disks have it (before the final reads, whose read repair
            # would hide a lost replica): the orphan sweep reports those, repair re-creates
            under = cluster.under_replicated(3)
            missing = missing_replicas(cluster)
            if not under and not missing:
                break
            time.sleep(1)
        final, reads = final_state(cluster, work)
        (out / "history.json").write_text(json.dumps({"history": history, "final": final, "reads": reads}, indent=0))
        anomalies = check_versioned(history, final, reads)
        orphans = sorted(cluster.wait_no_orphans(timeout=args.settle))
    ops = Counter(h["op"] for h in history)
    report.update(
        operations=len(history), by_op=dict(ops),
        acknowledged={op: sum(1 for h in history if h["op"] == op and h["ok"]) for op in ops},
        failed_or_unknown=sum(1 for h in history if not h["ok"]),
        gets_by_status=dict(Counter(h["status"] for h in history if h["op"] == "get_version")),
        final_versions=sum(not e["marker"] for e in final), final_markers=sum(e["marker"] for e in final),
        longest_history=max(Counter(e["key"] for e in final).values(), default=0),
        anomalies={k: v[:20] for k, v in anomalies.items() if v},
        anomaly_counts={k: len(v) for k, v in anomalies.items()},
        healthy_after_faults=recovered, stuck_threads=stuck, harness_errors=work.harness_errors,
        under_replicated_after_settle=len(under), orphans_after_settle=len(orphans),
        replicas_missing_on_disk=missing[:20], replicas_missing_on_disk_count=len(missing),
    )
    bad = any(anomalies.values()) or under or missing or orphans or not recovered or stuck or work.harness_errors
    report["verdict"] = "ANOMALIES" if bad else "OK"
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "faults"}, indent=1))
    print(f"{len(faults)} faults injected; history and report in {out}")
    print(f"verdict: {report['verdict']}")
    cluster.keep_if(bool(bad))
    return 1 if bad else 0
