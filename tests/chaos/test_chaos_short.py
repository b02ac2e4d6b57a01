"""The short chaos run CI does: a fixed seed, faults under load, a clean verdict."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.cluster


def test_short_chaos_run(tmp_path):
    out = tmp_path / "chaos"
    done = subprocess.run([sys.executable, "-m", "cairn.cli", "chaos", "run", "--seed", "7", "--duration", "40",
                           "--out", str(out)], capture_output=True, text=True, timeout=400)
    print(done.stdout[-2000:], done.stderr[-4000:])
    report = json.loads((out / "report.json").read_text())
    assert report["operations"] > 200 and len(report["faults"]) >= 8
    assert report["verdict"] == "OK", report
    assert done.returncode == 0
