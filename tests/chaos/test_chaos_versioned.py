"""The versioned chaos workload: the checker catches what it should on a hand-made
history, and a short seeded run under faults comes back clean."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from chaos.versioned import check_versioned


def _history() -> tuple[list[dict], list[dict], dict[str, dict]]:
    """k0: put a (v1), put b (v2), marker (v3), put c (v4) of unknown outcome that did
    apply (v5), v1 deleted by id; one snapshot after v3."""
    history = [
        {"op": "put", "key": "k0", "value": "a", "etag": "ea", "vid": f"{1:016x}", "start": 0, "end": 1, "ok": True},
        {"op": "put", "key": "k0", "value": "b", "etag": "eb", "vid": f"{2:016x}", "start": 2, "end": 3, "ok": True},
        {"op": "mark", "key": "k0", "vid": f"{3:016x}", "marker": True, "start": 4, "end": 5, "ok": True},
        {"op": "put", "key": "k0", "value": "c", "etag": "ec", "start": 6, "end": None, "ok": False},
        {"op": "delete_version", "key": "k0", "vid": f"{1:016x}", "kind": "put", "start": 7, "end": 8, "ok": True},
        {"op": "get_version", "key": "k0", "vid": f"{2:016x}", "kind": "put", "start": 9, "end": 10, "ok": True,
         "status": "found", "value": "b", "intact": True},
        {"op": "list", "prefix": "k0", "start": 5.5, "end": 5.8, "ok": True, "pages": [[
            {"key": "k0", "vid": f"{3:016x}", "marker": True, "etag": "", "latest": True},
            {"key": "k0", "vid": f"{2:016x}", "marker": False, "etag": "eb", "latest": False}],
            [{"key": "k0", "vid": f"{1:016x}", "marker": False, "etag": "ea", "latest": False}]]},
    ]
    final = [{"key": "k0", "vid": f"{5:016x}", "marker": False, "etag": "ec", "latest": True},
             {"key": "k0", "vid": f"{3:016x}", "marker": True, "etag": "", "latest": False},
             {"key": "k0", "vid": f"{2:016x}", "marker": False, "etag": "eb", "latest": False}]
    reads = {f"{5:016x}": {"status": "found", "value": "c", "intact": True},
             f"{3:016x}": {"status": "marker"}, f"{2:016x}": {"status": "found", "value": "b", "intact": True},
             f"{1:016x}": {"status": "gone"}}
    return history, final, reads


def _found(history: list[dict], final: list[dict], reads: dict[str, dict]) -> set[str]:
    return {name for name, found in check_versioned(history, final, reads).items() if found}


def test_checker_clean_history() -> None:
    assert _found(*_history()) == set()


def test_checker_finds_each_kind_of_anomaly() -> None:
    h, f, r = _history()
    assert _found(h, f[:2], r) >= {"lost"}  # v2 missing from the final listing
    assert _found(h, [f[0], f[2], f[1]], r) >= {"order"}  # marker listed older than v2, acked before it
    assert _found(h, [f[0], dict(f[1], latest=True), f[2]], r) == {"latest"}
    assert _found(h, [f[0], f[1], dict(f[2], etag="zz")], r) == {"mismatch"}
    assert _found(h, [dict(f[0], vid=f"{6:016x}"), *f[1:]], r) >= {"unknown"}
    assert _found(h, f + [{"key": "k0", "vid": f"{1:016x}", "marker": False, "etag": "ea", "latest": False}],
                  dict(r, **{f"{1:016x}": {"status": "found", "value": "a", "intact": True}})) >= {"resurrected"}
    assert _found(h, f, dict(r, **{f"{2:016x}": {"status": "found", "value": "b", "intact": False}})) \
        == {"wrong_bytes"}
    h2 = copy.deepcopy(h)
    h2[1]["vid"] = f"{1:016x}"  # two acknowledged PUTs with one version id
    assert "duplicate" in _found(h2, f, r)
    h3 = copy.deepcopy(h)
    h3[6]["pages"][0] = h3[6]["pages"][0][:1]  # the snapshot skipped v2
    assert _found(h3, f, r) == {"lost"}
    h4 = copy.deepcopy(h)
    h4[5].update(status="gone")  # NoSuchVersion for a version nobody deleted
    assert _found(h4, f, r) == {"lost"}


@pytest.mark.cluster
def test_short_versioned_chaos_run(tmp_path) -> None:
    out = tmp_path / "vchaos"
    done = subprocess.run([sys.executable, "-m", "cairn.cli", "chaos", "run", "--workload", "versioned",
                           "--seed", "5", "--duration", "30", "--settle", "40", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    print(done.stdout[-3000:], done.stderr[-4000:])
    report = json.loads((out / "report.json").read_text())
    assert report["operations"] > 300 and len(report["faults"]) >= 6
    assert report["acknowledged"]["put"] > 50 and report["acknowledged"]["delete_version"] > 10
    assert report["longest_history"] > 30
    assert report["verdict"] == "OK", report["anomalies"]
    assert done.returncode == 0
