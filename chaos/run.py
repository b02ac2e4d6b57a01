"""``cairn chaos run``: a real cluster, a concurrent workload, faults from a seeded
schedule, and a verdict on the recorded history.

    cairn chaos run --seed 1 --duration 60 --out chaos-out

Workload: client threads PUT, GET and DELETE a small key space through both frontends.
Every PUT writes a fresh value id; its body is derived from the id (so a GET can prove
the bytes are the ones written) and the id travels in ``x-amz-meta-v``.
Faults (seeded): SIGKILL and restart of any process (blob node, raftmeta follower or
leader, frontend), SIGSTOP/SIGCONT pauses, chunk files corrupted or deleted on disk.
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
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.history.append(entry)

    def client(self, n: int) -> None:
        from botocore.exceptions import ClientError

        rng = random.Random(self.rng.random())
        s3 = self.cluster.s3(n % self.cluster.frontends, retries={"max_attempts": 1}, read_timeout=20,
                             connect_timeout=3)
        while not self.stop.is_set():
            key = rng.choice(self.keys)
            roll = rng.random()
            start = self.now()
            if roll < 0.45:
                with self.lock:
                    self.counter += 1
                    value = f"w{n}-{self.counter}"
                size = rng.choice([0, 100, 4096, 300_000, int(2.5 * MIB)])
                entry = {"key": key, "kind": "write", "value": value, "start": start, "size": size}
                try:
                    s3.put_object(Bucket="chaos", Key=key, Body=body_of(value, size),
                                  Metadata={"v": value, "n": str(size)})
                    entry.update(ok=True, end=self.now())
                except ClientError as exc:
                    entry.update(ok=False, end=None, error=exc.response["Error"]["Code"])
                except Exception as exc:  # outcome unknown
                    entry.update(ok=False, end=None, error=type(exc).__name__)
            elif roll < 0.55:
                entry = {"key": key, "kind": "write", "value": None, "start": start}
                try:
                    s3.delete_object(Bucket="chaos", Key=key)
                    entry.update(ok=True, end=self.now())
                except Exception as exc:
                    entry.update(ok=False, end=None, error=type(exc).__name__)
            else:
                entry = {"key": key, "kind": "read", "start": start}
                try:
                    got = s3.get_object(Bucket="chaos", Key=key)
                    data = got["Body"].read()
                    value = got["Metadata"].get("v")
                    entry.update(ok=True, end=self.now(), value=value, intact=intact(got, data))
                except ClientError as exc:
                    if exc.response["Error"]["Code"] == "NoSuchKey":
                        entry.update(ok=True, end=self.now(), value=None, intact=True)
                    else:
                        entry.update(ok=False, end=None, error=exc.response["Error"]["Code"])
                except Exception as exc:
                    entry.update(ok=False, end=None, error=type(exc).__name__)
            self.record(entry)


FAULTS = ("kill_blob", "kill_meta_follower", "kill_meta_leader", "kill_frontend", "pause_blob", "corrupt_chunk",
          "delete_chunk")


def inject(cluster: Cluster, rng: random.Random, fault: str, log: list[dict[str, Any]], t: float) -> None:
    entry: dict[str, Any] = {"t": round(t, 2), "fault": fault}
    if fault == "kill_blob" or fault == "pause_blob":
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    root = tempfile.mkdtemp(prefix="cairn-chaos-")
    cluster = Cluster(Path(root), blobs=args.blobs, frontends=2, chunk_size=MIB, gc_grace=2.0, gc_interval=0.5,
                      raftmeta_flags=["--dead-after", "60", "--repair-interval", "1", "--orphan-grace", "30",
                                      "--orphan-interval", "2"],
                      blobnode_flags=["--scrub-rate", "200", "--scrub-interval", "2"])
    faults: list[dict[str, Any]] = []
    report: dict[str, Any] = {"seed": args.seed, "duration": args.duration, "faults": faults}
    with cluster:
        cluster.s3(0).create_bucket(Bucket="chaos")
        work = Workload(cluster, args.seed, args.keys, args.threads)
        threads = [threading.Thread(target=work.client, args=(n,), daemon=True) for n in range(args.threads)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + args.duration
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, 2.5))
            inject(cluster, rng, rng.choice(FAULTS), faults, work.now())
        work.stop.set()
        for t in threads:
            t.join(60)
        for name, proc in cluster.procs.items():
            if not proc.alive():
                cluster.start(name)
        cluster.wait_healthy(timeout=60)
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
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
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
        under_replicated_after_settle=len(under), orphans_after_settle=len(orphans),
    )
    anomalies = bool(not_linearizable or corrupt_reads or unreadable or under or orphans)
    report["verdict"] = "ANOMALIES" if anomalies else ("UNDECIDED" if undecided else "OK")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "faults"}, indent=1))
    print(f"{len(faults)} faults injected; history and report in {out}")
    print(f"verdict: {report['verdict']}")
    return 1 if anomalies or undecided else 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cairn chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="one seeded chaos run")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--duration", type=float, default=60, help="seconds of faults under load")
    r.add_argument("--keys", type=int, default=8)
    r.add_argument("--threads", type=int, default=6)
    r.add_argument("--blobs", type=int, default=4)
    r.add_argument("--settle", type=float, default=90, help="seconds allowed to heal after the faults stop")
    r.add_argument("--out", default="chaos-out")
    args = p.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
