"""Run the community S3 conformance suite (ceph/s3-tests) against a fresh Cairn cluster.

    python -m bench.conformance --suite PATH [--venv DIR] [-k EXPR] [--out DIR]
    python -m bench.conformance --suite PATH --subset bench/conformance_subset.txt \
        --floor bench/conformance_floor.json [--record-floor [--allow-lower]]

Starts a real cluster (3 raftmeta, 3 blob nodes, 2 frontends) on free 127.0.0.1 ports,
creates the suite's ``alt`` and ``tenant`` users with keys of their own (the suite's
``main`` is the root account), writes its config, copies the suite to a scratch folder
(the original may be read-only), runs it in its own virtualenv (made from the suite's
requirements on first use) with the markers AWS itself passes (no ``fails_on_aws``
Ceph extensions, no bucket logging or cloud tiering), and prints a table per feature
(the tests' marks) of passed / failed / errors, with each failing test's first error
line. Results go to DIR/conformance.json.

The CI ratchet: ``--subset FILE`` runs exactly the tests a file names (a name the suite
does not have is an error), ``--floor FILE`` fails the run when fewer pass than the
floor file records and names the tests that passed at its recording and fail now;
``--record-floor`` rewrites the floor from the run, never lower without ``--allow-lower``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.cluster import ACCESS_KEY, SECRET_KEY, Cluster
from core.acl import canonical_id

# Markers of tests that are Ceph's own extensions, or features S3 has and no test here
# can use (cloud tiering, bucket logging); lifecycle runs with the shortened day.
EXCLUDED = ("fails_on_aws", "bucket_logging", "bucket_logging_cleanup", "cloud_transition", "cloud_restore",
            "lifecycle_transition")
LC_DAY = 10  # seconds: the suite's lc_debug_interval and the cluster's --lifecycle-day-seconds
FILES = ("s3tests/functional/test_s3.py", "s3tests/functional/test_headers.py")


def config(endpoint: str, users: dict[str, dict[str, str]]) -> str:
    host, port = endpoint.removeprefix("http://").split(":")
    out = [f"[DEFAULT]\nhost = {host}\nport = {port}\nis_secure = False\nssl_verify = False\n",
           "[fixtures]\nbucket prefix = s3t-{random}-\niam name prefix = s3-tests-\niam path prefix = /s3-tests/\n",
           f"[s3 main]\ndisplay_name = root\nuser_id = {canonical_id('root')}\nemail = root@example.com\n"
           "api_name = default\n"
           f"access_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\nlc_debug_interval = {LC_DAY}\n"]
    for name, key in users.items():
        out.append(f"[s3 {name}]\ndisplay_name = {name}\nuser_id = {canonical_id(name)}\nemail = {name}@example.com\n"
                   f"access_key = {key['access_key']}\nsecret_key = {key['secret_key']}\n"
                   + ("tenant = tenant\n" if name == "tenant" else ""))
    out.append(f"[iam]\nemail = root@example.com\nuser_id = root\ndisplay_name = root\n"
               f"access_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n")
    # IAM tests (Cairn has no IAM API) read these sections at import: the suite's own layout
    out.append(f"[iam root]\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\nuser_id = root\n"
               "email = root@example.com\n")
    alt = users["alt"]
    out.append(f"[iam alt root]\naccess_key = {alt['access_key']}\nsecret_key = {alt['secret_key']}\n"
               "user_id = alt\nemail = alt@example.com\n")
    return "\n".join(out)


def provision(cluster: Cluster) -> dict[str, dict[str, str]]:
    """The suite's alt and tenant users, each with a key of its own."""
    users = {}
    for name in ("alt", "tenant"):
        status, reply = cluster.admin("POST", "users", body={"name": name, "email": f"{name}@example.com"})
        if status != 201:
            raise RuntimeError(f"could not create user {name}: {status} {reply}")
        status, key = cluster.admin("POST", f"users/{name}/keys", body={})
        if status != 201:
            raise RuntimeError(f"could not issue a key for {name}: {status} {key}")
        users[name] = key
    return users


def ensure_venv(venv: Path, suite: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(suite / "requirements.txt"),
                        "pytest", "pytest-timeout"], check=True)
    return python


def feature_of(name: str, marks: list[str]) -> list[str]:
    """A test's features: its marks that name one (not ``fails_on_*``), else its name's
    first word (test_bucket_list_... -> bucket, test_versioning_... -> versioning)."""
    named = [m for m in marks if not m.startswith("fails_on")]
    if named:
        return named
    words = name.removeprefix("test_").split("_")
    return [words[0] if words and words[0] else "other"]


def summarize(junit: Path, marks: dict[str, list[str]]) -> dict[str, Any]:
    """Per test: passed / failed / error / skipped and the first error line; per feature
    (``feature_of``) the counts."""
    tests: dict[str, dict[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        outcome, first = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                first = (child.get("message") or (child.text or "")).strip().splitlines()[0][:200] \
                    if (child.get("message") or child.text) else ""
                break
        tests[name] = {"outcome": outcome, "first_error": first, "seconds": round(float(case.get("time") or 0), 2)}
    features: dict[str, Counter[str]] = defaultdict(Counter)
    for name, result in tests.items():
        for feature in feature_of(name, marks.get(name, [])):
            features[feature][result["outcome"]] += 1
    totals = Counter(r["outcome"] for r in tests.values())
    return {"totals": dict(totals), "features": {k: dict(v) for k, v in sorted(features.items())}, "tests": tests}


def collect(python: Path, workdir: Path, selection: list[str],
            env: dict[str, str]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Each selected test's marks and node ids (by name), from pytest's own collection."""
    script = ("import sys, pytest\nclass P:\n    marks = {}\n    nodes = {}\n"
              "    def pytest_collection_finish(self, session):\n"
              "        for i in session.items:\n            self.marks[i.name] = sorted({m.name for m in i.iter_markers()}"
              " - {'parametrize', 'timeout'})\n            self.nodes.setdefault(i.name, []).append(i.nodeid)\n"
              "p = P()\npytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', *sys.argv[1:]], plugins=[p])\n"
              "import json; print('MARKS' + json.dumps(p.marks)); print('NODES' + json.dumps(p.nodes))\n")
    done = subprocess.run([str(python), "-c", script, *selection], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = done.stdout.splitlines()
    marks = next((ln for ln in lines if ln.startswith("MARKS")), "MARKS{}")
    nodes = next((ln for ln in lines if ln.startswith("NODES")), "NODES{}")
    return json.loads(marks[5:]), json.loads(nodes[5:])


def read_subset(text: str) -> list[str]:
    """A subset file's test names: one a line, blank lines and lines starting with ``#``
    skipped; a name listed twice is an error."""
    names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    twice = sorted(name for name, count in Counter(names).items() if count > 1)
    if twice:
        raise ValueError(f"listed more than once: {', '.join(twice)}")
    return names


def resolve_subset(names: list[str], nodes: dict[str, list[str]]) -> list[str]:
    """The node ids that run exactly ``names``; a name the suite's selection lacks (gone,
    renamed, or excluded by marker) is an error."""
    missing = [name for name in names if name not in nodes]
    if missing:
        raise ValueError(f"{len(missing)} test(s) of the subset not in the suite's selection: {', '.join(missing)}")
    return [node for name in names for node in nodes[name]]


@dataclass
class FloorCheck:
    """A run against a recorded floor."""

    passed: int
    floor: int
    regressed: list[str] = field(default_factory=list)  # passed at the floor's recording, fail now
    not_run: list[str] = field(default_factory=list)  # passed at the recording, absent from this run
    newly_passing: list[str] = field(default_factory=list)  # pass now, not at the recording

    @property
    def ok(self) -> bool:
        return self.passed >= self.floor


def check_floor(floor: dict[str, Any], tests: dict[str, dict[str, Any]]) -> FloorCheck:
    passing = {name for name, r in tests.items() if r["outcome"] == "passed"}
    recorded = set(floor.get("passing", []))
    return FloorCheck(passed=len(passing), floor=int(floor["passed"]),
                      regressed=sorted(name for name in recorded - passing if name in tests),
                      not_run=sorted(name for name in recorded if name not in tests),
                      newly_passing=sorted(passing - recorded) if "passing" in floor else [])


def floor_report(check: FloorCheck, tests: dict[str, dict[str, Any]]) -> str:
    verdict = "ok" if check.ok else f"BELOW THE FLOOR by {check.floor - check.passed}"
    lines = [f"conformance floor: {check.passed} passed, floor {check.floor}: {verdict}"]
    if check.regressed:
        lines.append("passed when the floor was recorded, fail now:")
        lines += [f"  {name}: {tests[name].get('first_error', '')}" for name in check.regressed]
    if check.not_run:
        lines.append("passed when the floor was recorded, not in this run: " + ", ".join(check.not_run))
    if check.newly_passing or check.passed > check.floor:
        lines.append("newly passing (raise the floor: rerun with --record-floor and commit the floor file):")
        lines += [f"  {name}" for name in check.newly_passing]
    return "\n".join(lines)


def record_floor(old: dict[str, Any] | None, tests: dict[str, dict[str, Any]], subset: str | None,
                 when: str, allow_lower: bool = False) -> dict[str, Any]:
    """The floor file's new content from a run; lowering the floor is refused (ValueError)
    unless ``allow_lower``."""
    passing = sorted(name for name, r in tests.items() if r["outcome"] == "passed")
    if old is not None and len(passing) < int(old["passed"]) and not allow_lower:
        raise ValueError(f"{len(passing)} passed, below the floor's {old['passed']}: "
                         "refusing to lower it (--allow-lower to lower it on purpose)")
    return {"subset": subset, "passed": len(passing), "of": len(tests), "recorded": when, "passing": passing}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.conformance", description=__doc__.splitlines()[0])
    ap.add_argument("--suite", required=True, help="a checkout of ceph/s3-tests")
    ap.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "cairn-s3tests-venv"))
    ap.add_argument("-k", dest="keyword", default="", help="pytest -k expression to run a subset")
    ap.add_argument("--subset", help="a file naming the tests to run, one a line (# comments)")
    ap.add_argument("--floor", help="a JSON floor file: fail when fewer pass than it records")
    ap.add_argument("--record-floor", action="store_true", help="rewrite the --floor file from this run")
    ap.add_argument("--allow-lower", action="store_true", help="let --record-floor lower the floor")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds for the whole suite, at most")
    ap.add_argument("--out", default="conformance-out")
    args = ap.parse_args(argv)
    if args.subset and args.keyword:
        ap.error("--subset and -k exclude each other")
    if (args.record_floor or args.allow_lower) and not args.floor:
        ap.error("--record-floor and --allow-lower need --floor FILE")
    floor_path = Path(args.floor) if args.floor else None
    floor = json.loads(floor_path.read_text()) if floor_path and floor_path.exists() else None
    if floor_path and floor is None and not args.record_floor:
        ap.error(f"no floor file {floor_path} (make one with --record-floor)")
    try:
        subset = read_subset(Path(args.subset).read_text()) if args.subset else None
    except (OSError, ValueError) as e:
        ap.error(f"subset {args.subset}: {e}")
    suite = Path(args.suite).resolve()
    if not (suite / FILES[0]).is_file():
        ap.error(f"no s3-tests suite at {suite} (missing {FILES[0]})")
    python = ensure_venv(Path(args.venv), suite)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cairn-conformance-") as tmp:
        workdir = Path(tmp) / "s3-tests"
        shutil.copytree(suite, workdir, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        flags = ["--lifecycle-day-seconds", str(LC_DAY), "--lifecycle-interval", "1", "--min-part-size", str(5 << 20)]
        with Cluster(Path(tmp) / "cluster", chunk_size=8 << 20, gc_grace=5.0, gc_interval=1.0,
                     raftmeta_flags=flags) as cluster:
            conf = Path(tmp) / "s3tests.conf"
            conf.write_text(config(cluster.endpoints[0], provision(cluster)))
            env = dict(os.environ, S3TEST_CONF=str(conf))
            selection = [*FILES, "-m", " and ".join(f"not {m}" for m in EXCLUDED)]
            if args.keyword:
                selection += ["-k", args.keyword]
            marks, nodes = collect(python, workdir, selection, env)
            run = selection
            if subset is not None:
                try:
                    run = [*resolve_subset(subset, nodes), *selection[len(FILES):]]
                except ValueError as e:
                    print(f"subset {args.subset}: {e}", file=sys.stderr)
                    return 2
                marks = {name: marks[name] for name in subset}
            junit = Path(tmp) / "junit.xml"
            started = time.monotonic()
            subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "120",
                            f"--junitxml={junit}", *run], cwd=workdir, env=env, timeout=args.timeout,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds = time.monotonic() - started
        result = {"suite": str(suite), "selection": selection, "subset": args.subset, "seconds": round(seconds, 1),
                  **summarize(junit, marks)}
    (out / "conformance.json").write_text(json.dumps(result, indent=1))
    print(report(result))
    if floor_path is None:
        return 0
    if floor is not None:
        print("\n" + floor_report(check_floor(floor, result["tests"]), result["tests"]))
    if args.record_floor:
        try:
            new = record_floor(floor, result["tests"], args.subset, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               allow_lower=args.allow_lower)
        except ValueError as e:
            print(f"floor {floor_path}: {e}", file=sys.stderr)
            return 1
        floor_path.write_text(json.dumps(new, indent=1) + "\n")
        print(f"floor {floor_path}: recorded {new['passed']} passed of {new['of']}")
        return 0
    return 0 if check_floor(floor or {"passed": 0}, result["tests"]).ok else 1


def report(result: dict[str, Any]) -> str:
    totals = result["totals"]
    ran = sum(totals.get(k, 0) for k in ("passed", "failed", "error"))
    lines = [f"{totals.get('passed', 0)} passed of {ran} ({100 * totals.get('passed', 0) / max(ran, 1):.1f}%), "
             f"{totals.get('failed', 0)} failed, {totals.get('error', 0)} errors, {totals.get('skipped', 0)} skipped "
             f"in {result['seconds']:.0f} s", "", "| feature | passed | failed | errors |", "|---|---|---|---|"]
    for feature, counts in result["features"].items():
        lines.append(f"| {feature} | {counts.get('passed', 0)} | {counts.get('failed', 0)} | {counts.get('error', 0)} |")
    lines += ["", "failing:"]
    lines += [f"  {name}: {r['first_error']}" for name, r in sorted(result["tests"].items())
              if r["outcome"] in ("failed", "error")]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
