"""Measure Cairn and its peers with the same client code; write JSON, markdown and charts.

    python -m bench setup [--targets ...]          install what the peers need
    python -m bench [--targets cairn,seaweedfs,swift,rclone,moto] [--runs 3] [--quick]
                    [--only large,small,list,failover,machine] [--out bench-out]
    python -m bench --endpoint URL --access-key AK --secret-key SK   (any running S3 endpoint)

Targets run one after another, each alone on the machine, each in its own temp dir on
free 127.0.0.1 ports, and are stopped by process group when done. See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import machine, report, suites
from bench.load import LoadGenerator, ceiling
from bench.peers import Cairn, External, Moto, NotAvailable, Rclone, SeaweedFS, Target, free_ports
from bench.report import TargetResult
from bench.swift import Swift

SUITES = ("large", "small", "list", "failover", "machine")
TARGETS: dict[str, type[Target]] = {"cairn": Cairn, "seaweedfs": SeaweedFS, "swift": Swift, "rclone": Rclone,
                                    "moto": Moto}
MiB = 1 << 20


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("command", nargs="?", choices=["run", "setup"], default="run")
    ap.add_argument("--targets", default=None, help=f"comma separated, of {','.join(TARGETS)} (default: all)")
    ap.add_argument("--runs", type=int, default=None, help="runs of each figure (default 3, --quick 1)")
    ap.add_argument("--runs-big", type=int, default=1, help="runs of the 1 GiB and 100,000-key cases (default 1)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of about a minute a target")
    ap.add_argument("--only", default=",".join(SUITES), help=f"comma separated, of {','.join(SUITES)}")
    ap.add_argument("--out", default="bench-out", help="output dir (default bench-out/)")
    ap.add_argument("--endpoint", help="measure this already running S3 endpoint too")
    ap.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", ""))
    ap.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--client-procs", type=int, default=max(2, os.cpu_count() or 2),
                    help="load generator processes (default: one per core)")
    args = ap.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SUITES)
    if unknown:
        ap.error(f"unknown --only {unknown}")
    names = args.targets.split(",") if args.targets else ([] if args.endpoint else list(TARGETS))
    bad = [n for n in names if n not in TARGETS]
    if bad:
        ap.error(f"unknown targets {bad}")
    args.names = names
    return args


def plan_for(args: argparse.Namespace) -> suites.Plan:
    if args.quick:
        return suites.Plan(large=8 * MiB, huge=32 * MiB, streams=(1, 4), runs=args.runs or 1, runs_big=1,
                           small_seconds=0.5, concurrency=(1, 16), list_small=1000, list_big=3000)
    return suites.Plan(runs=args.runs or 3, runs_big=args.runs_big)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measure_machine(out: Path, gen: LoadGenerator, plan: suites.Plan, quick: bool) -> dict[str, Any]:
    say("machine: hashing, disk, loopback")
    limits = machine.measure(out, quick)
    say("machine: load generator ceiling against a null HTTP server")
    ceil: dict[str, float] = {}
    for c in plan.concurrency:
        for op, v in ceiling(gen, free_ports(1)[0], c, 1.0 if quick else 2.0).items():
            ceil[f"{op}_c{c}"] = v
    info = machine.info()
    return {"info": info, "limits": limits, "bounds": machine.bounds(limits, info["cores"] or 1),
            "loadgen_ceiling_ops": ceil, "loadgen_processes": gen.processes}


def show(res: TargetResult, group_prefix: str) -> None:
    for f in res.figures.values():
        if f.group.startswith(group_prefix):
            vals = ", ".join(f"{v:.3g}" for v in f.runs)
            say(f"  {res.name}: {f.label}: [{vals}] {f.unit}" + (f"  ERROR {f.error}" if f.error else ""))


def run_target(target: Target, tmp: Path, files: Path, args: argparse.Namespace, plan: suites.Plan,
               gen: LoadGenerator) -> TargetResult:
    res = TargetResult(target.name, note=target.note, replicas=target.replicas)
    with suites.OtherLoad() as other:
        _measure_target(target, res, tmp, files, args, plan, gen)
    res.background_cores = other.cores
    return res


def _measure_target(target: Target, res: TargetResult, tmp: Path, files: Path, args: argparse.Namespace,
                    plan: suites.Plan, gen: LoadGenerator) -> None:
    only = set(args.only.split(","))
    try:
        target.setup()
        say(f"{target.name}: starting")
        ep = target.start(tmp / target.name)
    except Exception as exc:
        res.status = f"not run: {exc}"[:400]
        say(f"{target.name}: {res.status}")
        return
    try:
        server = target.processes()
        steps = [("large", lambda: _large(target, res, plan, files, server)),
                 ("small", lambda: suites.small(ep, res, plan, gen, server)),
                 ("list", lambda: suites.listing(ep, res, plan, gen))]
        if target.name == "cairn":
            from bench.failover import leader_failover

            steps.append(("failover", lambda: leader_failover(target, res, plan.runs)))
        for name, step in steps:
            if name not in only:
                continue
            say(f"{target.name}: {name}")
            try:
                step()
            except Exception as exc:
                res.errors.append(f"{name}: {type(exc).__name__}: {exc}"[:400])
                say(f"{target.name}: {name} failed\n{traceback.format_exc()}")
            show(res, {"large": "large", "small": "small_ops", "list": "list", "failover": "failover"}[name])
    finally:
        target.stop()
        shutil.rmtree(tmp / target.name, ignore_errors=True)
    if target.name == "cairn" and "failover" in only:
        from bench.failover import rereplication

        say("cairn: re-replication after a blob node's death (4 blob nodes)")
        rereplication(tmp / "cairn-repair", res, plan, files)
        shutil.rmtree(tmp / "cairn-repair", ignore_errors=True)
        show(res, "failover")


def _large(target: Target, res: TargetResult, plan: suites.Plan, files: Path, server: dict[str, int]) -> None:
    with suites.Monitor(server) as mon:
        suites.large(target.endpoint, res, plan, files, server)
    peaks = {n: v / MiB for n, v in mon.peak.items()}
    if not peaks:
        return
    total = res.figure("rss_total_MiB", "peak RSS, all server processes (sum)", "MiB", "lower", "rss")
    total.runs.append(sum(peaks.values()))
    total.extra["per_process_MiB"] = {n: round(v) for n, v in peaks.items()}
    if target.frontend in peaks:
        res.figure("rss_frontend_MiB", "peak RSS, S3-facing process", "MiB", "lower", "rss").runs.append(
            peaks[target.frontend])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    targets: list[Target] = [TARGETS[n]() for n in args.names]
    if args.command == "setup":
        for t in targets:
            try:
                t.setup()
                print(f"{t.name}: ready")
            except NotAvailable as exc:
                print(f"{t.name}: not available: {exc}")
        return 0
    if args.endpoint:
        targets.append(External(args.endpoint, args.access_key, args.secret_key, args.region))
    out, plan = Path(args.out), plan_for(args)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data: dict[str, Any] = {
        "meta": {"command": "python -m bench " + " ".join(argv), "started": datetime.datetime.now().isoformat(
            timespec="seconds"), "quick": args.quick, "plan": plan.__dict__,
            "size_words": {"large": suites.size_word(plan.large), "big": f"{plan.list_big:,}"},
            "client": "large objects: boto3 defaults (payload SHA-256 signed over http); small objects and "
                      f"listings: {args.client_procs} processes of raw http.client with SigV4"},
        "machine": {}, "targets": {}}
    with tempfile.TemporaryDirectory(prefix="cairn-bench-") as tmpdir, LoadGenerator(args.client_procs) as gen:
        tmp = Path(tmpdir)
        files = tmp / "files"
        files.mkdir()
        if "machine" in args.only.split(","):
            data["machine"] = measure_machine(out, gen, plan, args.quick)
            say(f"machine: {data['machine']['limits']}")
        for t in targets:
            data["targets"][t.name] = run_target(t, tmp, files, args, plan, gen).to_json()
            data["meta"]["seconds"] = round(time.time() - started)
            report.write(data, out)  # after each target, so an interrupted run keeps what it measured
    data["meta"]["seconds"] = round(time.time() - started)
    text = report.write(data, out)
    print(text)
    say(f"done in {data['meta']['seconds']} s; results in {out}/ (results.json, results.md, *.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
