"""Run the community S3 conformance suite (ceph/s3-tests) against a fresh Cairn cluster.

    python -m bench.conformance --suite PATH [--venv DIR] [-k EXPR] [--out DIR]

Starts a real cluster (3 raftmeta, 3 blob nodes, 2 frontends) on free 127.0.0.1 ports,
creates the suite's ``alt`` and ``tenant`` users with keys of their own (the suite's
``main`` is the root account), writes its config, copies the suite to a scratch folder
(the original may be read-only), runs it in its own virtualenv (made from the suite's
requirements on first use) with the markers AWS itself passes (no ``fails_on_aws``
Ceph extensions, no bucket logging or cloud tiering), and prints a table per feature
(the tests' marks) of passed / failed / errors, with each failing test's first error
line. Results go to DIR/conformance.json.
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
from pathlib import Path
from typing import Any

from chaos.cluster import ACCESS_KEY, SECRET_KEY, Cluster

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
           f"[s3 main]\ndisplay_name = root\nuser_id = root\nemail = root@example.com\napi_name = default\n"
           f"access_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\nlc_debug_interval = {LC_DAY}\n"]
    for name, key in users.items():
        out.append(f"[s3 {name}]\ndisplay_name = {name}\nuser_id = {name}\nemail = {name}@example.com\n"
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
        status, reply = cluster.admin("POST", "users", body={"name": name})
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
        tests[name] = {"outcome": outcome, "first_error": first}
    features: dict[str, Counter[str]] = defaultdict(Counter)
    for name, result in tests.items():
        for feature in feature_of(name, marks.get(name, [])):
            features[feature][result["outcome"]] += 1
    totals = Counter(r["outcome"] for r in tests.values())
    return {"totals": dict(totals), "features": {k: dict(v) for k, v in sorted(features.items())}, "tests": tests}


def collect_marks(python: Path, workdir: Path, selection: list[str], env: dict[str, str]) -> dict[str, list[str]]:
    """Each selected test's marks, from pytest's own collection."""
    script = ("import sys, pytest\nclass P:\n    marks = {}\n    def pytest_collection_modifyitems(self, items):\n"
              "        for i in items:\n            self.marks[i.name] = sorted({m.name for m in i.iter_markers()}"
              " - {'parametrize', 'timeout'})\n"
              "p = P()\npytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', *sys.argv[1:]], plugins=[p])\n"
              "import json; print('MARKS' + json.dumps(p.marks))\n")
    done = subprocess.run([str(python), "-c", script, *selection], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("MARKS")), "MARKS{}")
    return json.loads(line[5:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.conformance", description=__doc__.splitlines()[0])
    ap.add_argument("--suite", required=True, help="a checkout of ceph/s3-tests")
    ap.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "cairn-s3tests-venv"))
    ap.add_argument("-k", dest="keyword", default="", help="pytest -k expression to run a subset")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds for the whole suite, at most")
    ap.add_argument("--out", default="conformance-out")
    args = ap.parse_args(argv)
    suite = Path(args.suite).resolve()
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
            marks = collect_marks(python, workdir, selection, env)
            junit = Path(tmp) / "junit.xml"
            started = time.monotonic()
            subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "120",
                            f"--junitxml={junit}", *selection], cwd=workdir, env=env, timeout=args.timeout,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds = time.monotonic() - started
        result = {"suite": str(suite), "selection": selection, "seconds": round(seconds, 1),
                  **summarize(junit, marks)}
    (out / "conformance.json").write_text(json.dumps(result, indent=1))
    print(report(result))
    return 0


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
