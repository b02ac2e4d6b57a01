"""``cairn chaos run``: a real cluster, a concurrent workload, faults from a seeded
schedule, and a verdict on the recorded history.

    cairn chaos run --seed 1 --duration 60 --out chaos-out

Workload: client threads PUT, GET and DELETE a small key space through both frontends.
Every PUT writes a fresh value id; its body is derived from the id (so a GET can prove
the bytes are the ones written) and the id travels in ``x-amz-meta-v``.
Also multipart uploads, HEADs and LISTs (a LIST reads a key through its ETag).
Faults (seeded): SIGKILL and restart of any process (blob node, raftmeta follower or
leader, frontend), SIGSTOP/SIGCONT pauses, chunk files corrupted, truncated or deleted
on disk, a blob node's disk filled up, and network partitions (every process in its own
network namespace: a Raft leader cut from its followers, a follower or a blob node cut
from everyone, a frontend cut from a blob node or from raftmeta).
Checks, after the faults stop: (1) every key reads back byte-exact; (2) each key's
history is linearizable (``chaos.checker``); (3) every chunk is back to full
replication within a bounded time; (4) no orphan chunk remains. Writes ``history.json``
and ``report.json`` to ``--out`` and prints the verdict; exit 1 on any anomaly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from chaos import netns
from chaos.checker import check_history
from chaos.cluster import Cluster

MIB = 1024 * 1024


def body_of(value: str, size: int) -> bytes:
    seed = hashlib.sha256(value.encode()).digest()
    return (seed * (size // 32 + 1))[:size]


def intact(got: dict[str, Any], data: bytes) -> bool:
    """The bytes are exactly those written for the value the object says it holds."""
    meta = got["Metadata"]
    return "v" in meta and len(data) == int(meta.get("n", -1)) and data == body_of(meta["v"], len(data))


class Workload:
    def __init__(self, cluster: Cluster, seed: int, keys: int, threads: int) -> None:
        self.cluster, self.keys, self.threads = cluster, [f"k{i}" for i in range(keys)], threads
        self.rng = random.Random(seed)
        self.history: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.counter = 0
        self.etags: dict[str, set[str]] = {}
        self.harness_errors: list[str] = []
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.history.append(entry)

    def new_value(self, n: int) -> str:
        with self.lock:
            self.counter += 1
            return f"w{n}-{self.counter}"

    def expect_etag(self, etag: str, value: str) -> None:
        """Remember the ETag a write's object will have, so a LIST (which shows only
        ETags) can tell which write it sees."""
        with self.lock:
            self.etags.setdefault(etag, set()).add(value)

    def client(self, n: int) -> None:
        """A client thread; a bug of the harness itself is counted, never silently ends it."""
        while not self.stop.is_set():
            try:
                self._client(n)
            except Exception as exc:
                with self.lock:
                    self.harness_errors.append(repr(exc))
                print(f"harness error in client {n}: {exc!r}", file=sys.stderr)

    def _client(self, n: int) -> None:
        from botocore.exceptions import ClientError

        rng = random.Random(self.rng.random())
        s3 = self.cluster.s3(n % self.cluster.frontends, retries={"max_attempts": 1}, read_timeout=20,
                             connect_timeout=3)
        while not self.stop.is_set():
            key = rng.choice(self.keys)
            roll = rng.random()
            start = self.now()
            if roll < 0.05:
                self.record(self.multipart(s3, n, key, rng))
                continue
            if roll < 0.10:
                self.record(self.listing(s3, key))
                continue
            if roll < 0.45:
                size = rng.choice([0, 100, 4096, 300_000, int(2.5 * MIB)])
                value = self.new_value(n)
                body = body_of(value, size)
                self.expect_etag(hashlib.md5(body).hexdigest(), value)
                entry = {"key": key, "kind": "write", "value": value, "start": start, "size": size}
                try:
                    s3.put_object(Bucket="chaos", Key=key, Body=body, Metadata={"v": value, "n": str(size)})
                    entry.update(ok=True, end=self.now())
                except ClientError as exc:
                    entry.update(ok=False, end=None, error=exc.response["Error"]["Code"])
                except Exception as exc:  # outcome unknown
                    entry.update(ok=False, end=None, error=type(exc).__name__)
            elif roll < 0.55:
                entry = {"key": key, "kind": "write", "value": None, "start": start, "op": "delete"}
                try:
                    s3.delete_object(Bucket="chaos", Key=key)
                    entry.update(ok=True, end=self.now())
                except Exception as exc:
                    entry.update(ok=False, end=None, error=type(exc).__name__)
            else:
                head = roll > 0.9
                entry = {"key": key, "kind": "read", "start": start, **({"op": "head"} if head else {})}
                try:
                    if head:  # HEAD: the value from the metadata; no body to check
                        got = s3.head_object(Bucket="chaos", Key=key)
                        entry.update(ok=True, end=self.now(), value=got["Metadata"].get("v"), intact=True)
                        self.record(entry)
                        continue
                    got = s3.get_object(Bucket="chaos", Key=key)
                    data = got["Body"].read()
                    value = got["Metadata"].get("v")
                    entry.update(ok=True, end=self.now(), value=value, intact=intact(got, data))
                except ClientError as exc:
                    if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                        entry.update(ok=True, end=self.now(), value=None, intact=True)
                    else:
                        entry.update(ok=False, end=None, error=exc.response["Error"]["Code"])
                except Exception as exc:
                    entry.update(ok=False, end=None, error=type(exc).__name__)
            self.record(entry)


    def multipart(self, s3, n: int, key: str, rng: random.Random) -> dict[str, Any]:  # noqa: ANN001
        """A two-part multipart upload (5 MiB + a tail) as one write."""
        tail = rng.choice([1, 200_000])
        size = 5 * MIB + tail
        value = self.new_value(n)
        body = body_of(value, size)
        parts = [body[: 5 * MIB], body[5 * MIB :]]
        self.expect_etag(hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-2", value)
        entry: dict[str, Any] = {"key": key, "kind": "write", "value": value, "start": self.now(), "size": size,
                                 "op": "multipart"}
        try:
            upload = s3.create_multipart_upload(Bucket="chaos", Key=key, Metadata={"v": value, "n": str(size)})
            done = []
            for number, part in enumerate(parts, 1):
                got = s3.upload_part(Bucket="chaos", Key=key, UploadId=upload["UploadId"], PartNumber=number,
                                     Body=part)
                done.append({"PartNumber": number, "ETag": got["ETag"]})
            s3.complete_multipart_upload(Bucket="chaos", Key=key, UploadId=upload["UploadId"],
                                         MultipartUpload={"Parts": done})
            entry.update(ok=True, end=self.now())
        except Exception as exc:  # the complete may or may not have happened
            entry.update(ok=False, end=None, error=(getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
                         or type(exc).__name__)
        return entry

    def listing(self, s3, key: str) -> dict[str, Any]:  # noqa: ANN001
        """ListObjectsV2 under the key's name: a read of the key through its ETag."""
        entry: dict[str, Any] = {"key": key, "kind": "read", "start": self.now(), "op": "list"}
        try:
            page = s3.list_objects_v2(Bucket="chaos", Prefix=key)
        except Exception as exc:
            entry.update(ok=False, end=None, error=type(exc).__name__)
            return entry
        end = self.now()
        found = [o for o in page.get("Contents", []) if o["Key"] == key]
        if not found:
            entry.update(ok=True, end=end, value=None, intact=True)
            return entry
        with self.lock:
            values = sorted(self.etags.get(found[0]["ETag"].strip('"'), ()))
        if len(values) == 1:
            entry.update(ok=True, end=end, value=values[0], intact=True)
        else:  # an ETag several writes share (empty bodies) says nothing; one no write made is an anomaly
            entry.update(ok=False, end=None, error="ambiguous ETag" if values else "unknown ETag")
        return entry


PROCESS_FAULTS = ("kill_blob", "kill_meta_follower", "kill_meta_leader", "kill_frontend", "pause_blob")
DISK_FAULTS = ("corrupt_chunk", "truncate_chunk", "delete_chunk")
FULL_DISK_FAULTS = ("disk_full",)
PARTITION_FAULTS = ("partition_meta_leader", "partition_meta_follower", "partition_blob", "partition_frontend_blob",
                    "partition_frontend_meta")


def partition(cluster: Cluster, rng: random.Random, fault: str) -> str:
    """Cut links as ``fault`` says; returns what was cut. ``heal`` undoes it."""
    metas = [f"raftmeta{i + 1}" for i in range(cluster.metas)]
    blobs = [f"blobnode{i + 1}" for i in range(cluster.blobs)]
    fronts = [f"frontend{i + 1}" for i in range(cluster.frontends)]
    if fault in ("partition_meta_leader", "partition_meta_follower"):
        leader = cluster.leader()
        if fault == "partition_meta_leader" and leader:  # a deposed leader that clients still reach
            cluster.isolate(leader, metas)
            return f"{leader} | other raftmeta"
        target = rng.choice([m for m in metas if m != leader])
        cluster.isolate(target)
        return f"{target} | everyone"
    if fault == "partition_blob":
        target = rng.choice(blobs)
        cluster.isolate(target)
        return f"{target} | everyone"
    front = rng.choice(fronts)
    if fault == "partition_frontend_blob":
        target = rng.choice(blobs)
        cluster.cut(front, target)
        return f"{front} | {target}"
    cluster.isolate(front, metas)
    return f"{front} | raftmeta"


def inject(cluster: Cluster, rng: random.Random, fault: str, log: list[dict[str, Any]], t: float) -> None:
    entry: dict[str, Any] = {"t": round(t, 2), "fault": fault}
    if fault in PARTITION_FAULTS:
        entry["target"] = partition(cluster, rng, fault)
        time.sleep(rng.uniform(1, 5))
        cluster.heal()
    elif fault == "disk_full":
        name = f"blobnode{rng.randrange(cluster.blobs) + 1}"
        entry["target"], entry["filled_mb"] = name, cluster.fill_disk(name, leave=1024 * 1024) // MIB
        time.sleep(rng.uniform(1, 4))
        cluster.free_disk(name)
    elif fault == "kill_blob" or fault == "pause_blob":
        name = f"blobnode{rng.randrange(cluster.blobs) + 1}"
        if fault == "kill_blob":
            cluster.kill(name)
            time.sleep(rng.uniform(0.5, 3))
            cluster.start(name)
        else:
            cluster.signal(name, signal.SIGSTOP)
            time.sleep(rng.uniform(0.5, 3))
            cluster.signal(name, signal.SIGCONT)
        entry["target"] = name
    elif fault in ("kill_meta_follower", "kill_meta_leader"):
        leader = cluster.leader()
        names = [f"raftmeta{i + 1}" for i in range(cluster.metas)]
        name = leader if fault == "kill_meta_leader" and leader else rng.choice([n for n in names if n != leader])
        cluster.kill(name)
        time.sleep(rng.uniform(0.5, 3))
        cluster.start(name)
        entry["target"] = name
    elif fault == "kill_frontend":
        name = f"frontend{rng.randrange(cluster.frontends) + 1}"
        cluster.kill(name)
        time.sleep(rng.uniform(0.2, 1))
        cluster.start(name)
        entry["target"] = name
    else:
        files = cluster.chunk_files()
        if files:
            chunk = rng.choice(sorted(files))
            path = rng.choice(files[chunk])
            try:
                if fault == "delete_chunk":
                    path.unlink()
                elif fault == "truncate_chunk":
                    with open(path, "r+b") as f:
                        f.truncate(rng.randrange(0, max(1, path.stat().st_size)))
                else:
                    raw = bytearray(path.read_bytes())
                    if len(raw) > 64:
                        raw[rng.randrange(64, len(raw))] ^= 0x5A
                        path.write_bytes(bytes(raw))
            except FileNotFoundError:
                pass
            entry["target"] = str(path.relative_to(cluster.root))
    log.append(entry)


def run(args: argparse.Namespace) -> int:
    if args.workload == "versioned":  # one versioned bucket, checked version by version
        from chaos.versioned_run import run_versioned

        return run_versioned(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    root = tempfile.mkdtemp(prefix="cairn-chaos-")
    why_not = netns.available()  # partitions and full disks need root (namespaces, tmpfs mounts)
    use_root = args.partitions == "on" or (args.partitions == "auto" and why_not is None)
    if use_root and why_not:
        raise SystemExit(f"cannot inject partitions or full disks: {why_not}")
    faults_used = PROCESS_FAULTS + DISK_FAULTS + ((FULL_DISK_FAULTS + PARTITION_FAULTS) if use_root else ())
    if not use_root:
        print(f"WARNING: no partitions and no full disks in this run ({why_not or '--partitions off'})",
              file=sys.stderr)
    cluster = Cluster(Path(root), blobs=args.blobs, frontends=2, chunk_size=MIB, gc_grace=2.0, gc_interval=0.5,
                      raftmeta_flags=["--dead-after", "60", "--repair-interval", "1", "--orphan-grace", "30",
                                      "--orphan-interval", "2"],
                      blobnode_flags=["--scrub-rate", "200", "--scrub-interval", "2", "--reserve-mb", "8"],
                      netns=use_root, blob_disk_mb={i: 512 for i in range(args.blobs)} if use_root else {})
    faults: list[dict[str, Any]] = []
    report: dict[str, Any] = {"seed": args.seed, "duration": args.duration, "fault_kinds": list(faults_used),
                              "partitions_and_full_disks": use_root or f"off: {why_not or 'asked'}", "faults": faults}
    with cluster:
        cluster.s3(0).create_bucket(Bucket="chaos")
        work = Workload(cluster, args.seed, args.keys, args.threads)
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
        for name, proc in cluster.procs.items():
            if not proc.alive():
                cluster.start(name)
        try:
            cluster.wait_healthy(timeout=60)
            recovered = True
        except TimeoutError as exc:  # an anomaly in itself; the checks below say what it cost
            print(f"cluster not healthy 60 s after the faults stopped: {exc}", file=sys.stderr)
            recovered = False
        # (1) a final read of every key, recorded as part of the history
        s3 = cluster.s3(0, retries={"max_attempts": 5, "mode": "standard"})
        unreadable = []
        for key in work.keys:
            start = work.now()
            try:
                got = s3.get_object(Bucket="chaos", Key=key)
                data = got["Body"].read()
                value = got["Metadata"].get("v")
                entry = {"key": key, "kind": "read", "start": start, "end": work.now(), "ok": True, "value": value,
                         "intact": intact(got, data), "final": True}
            except Exception as exc:
                code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
                if code == "NoSuchKey":
                    entry = {"key": key, "kind": "read", "start": start, "end": work.now(), "ok": True,
                             "value": None, "intact": True, "final": True}
                else:
                    entry = {"key": key, "kind": "read", "start": start, "ok": False, "final": True,
                             "error": repr(exc)}
                    unreadable.append(key)
            work.history.append(entry)
        (out / "history.json").write_text(json.dumps(work.history, indent=0))
        # (2) linearizability, key by key
        try:
            verdicts = check_history(work.history)
            not_linearizable = sorted(k for k, v in verdicts.items() if not v.ok)
            undecided = False
        except RuntimeError as exc:  # the search gave up: neither proven nor refuted
            print(f"linearizability check gave up: {exc}", file=sys.stderr)
            verdicts, not_linearizable, undecided = {}, [], True
        corrupt_reads = [h for h in work.history if h["kind"] == "read" and h.get("ok") and not h.get("intact")]
        foreign_etags = [h for h in work.history if h.get("error") == "unknown ETag"]
        # (3) full replication again, within a bound
        repl_deadline = time.monotonic() + args.settle
        under: list[str] = []
        while time.monotonic() < repl_deadline:
            under = cluster.under_replicated(3)
            if not under:
                break
            time.sleep(1)
        # (4) no orphans after GC
        orphans = sorted(cluster.wait_no_orphans(timeout=args.settle))
    ops = [h for h in work.history if not h.get("final")]
    report.update(
        operations=len(ops), acknowledged_writes=sum(1 for h in ops if h["kind"] == "write" and h.get("ok")),
        failed_or_unknown=sum(1 for h in ops if not h.get("ok")), keys=len(verdicts),
        not_linearizable=not_linearizable, corrupt_reads=len(corrupt_reads), unreadable_keys=unreadable,
        listings_with_unknown_etag=len(foreign_etags), healthy_after_faults=recovered,
        harness_errors=work.harness_errors,
        by_op={op: sum(1 for h in ops if h.get("op", "get" if h["kind"] == "read" else "put") == op)
               for op in ("put", "multipart", "delete", "get", "head", "list")},
        under_replicated_after_settle=len(under), orphans_after_settle=len(orphans),
    )
    anomalies = bool(not_linearizable or corrupt_reads or foreign_etags or unreadable or under or orphans
                     or not recovered)
    report["verdict"] = "ANOMALIES" if anomalies else ("UNDECIDED" if undecided else "OK")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "faults"}, indent=1))
    print(f"{len(faults)} faults injected; history and report in {out}")
    print(f"verdict: {report['verdict']}")
    cluster.keep_if(anomalies or undecided)
    return 1 if anomalies or undecided else 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cairn chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="one seeded chaos run")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--duration", type=float, default=60, help="seconds of faults under load")
    r.add_argument("--keys", type=int, default=None, help="default 8 (versioned: 4, so histories are long)")
    r.add_argument("--workload", choices=("register", "versioned"), default="register",
                   help="register: PUT/GET/DELETE/LIST, linearizability per key (default); versioned: "
                   "an Enabled bucket, its version histories checked (chaos.versioned)")
    r.add_argument("--threads", type=int, default=6)
    r.add_argument("--blobs", type=int, default=4)
    r.add_argument("--settle", type=float, default=90, help="seconds allowed to heal after the faults stop")
    r.add_argument("--out", default="chaos-out")
    r.add_argument("--partitions", choices=("auto", "on", "off"), default="auto",
                   help="network partitions (namespaces) and full disks (tmpfs); need root. auto: when possible")
    args = p.parse_args(argv)
    if args.keys is None:
        args.keys = 4 if args.workload == "versioned" else 8
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
