"""The benchmark's statistics, ratios, goals and tables, and its SigV4 signer (pure, no servers)."""

from __future__ import annotations

import datetime
import math
from unittest import mock

from bench.load import Signer, encode_query
from bench.report import TargetResult, best_peer, cell, goals, markdown, percentile, ratio, summarize


def test_percentile_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 50) == 50.0
    assert percentile(xs, 99) == 99.0
    assert percentile(xs, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_summarize_median_and_spread() -> None:
    s = summarize([100.0, 90.0, 110.0])
    assert s["median"] == 100.0 and s["min"] == 90.0 and s["max"] == 110.0
    assert s["spread_pct"] == 20.0
    assert summarize([]) == {}


def test_ratio_direction() -> None:
    assert ratio(200.0, 100.0, "higher") == 2.0
    assert ratio(0.5, 1.0, "lower") == 2.0  # half the seconds: twice as good
    assert ratio(None, 1.0, "higher") is None
    assert ratio(1.0, 0.0, "higher") is None


def _data() -> dict:
    targets = {}
    for name, reps, put, lst, p50 in (("cairn", 3, [90.0, 100.0, 110.0], 2.0, 8.0), ("seaweedfs", 3, [140.0], 4.0, 3.0),
                                      ("rclone", 1, [240.0], 1.0, 2.0)):
        t = TargetResult(name, replicas=reps)
        t.figure("put_large_x1", "PUT 64 MiB 1 stream", "MB/s", "higher", "large").runs.extend(put)
        t.figure("list_big_s", "list 100,000 keys", "s", "lower", "list").runs.append(lst)
        t.figure("small_put_c1_p50", "4 KiB PUT c1 p50", "ms", "lower", "small_lat").runs.append(p50)
        targets[name] = t.to_json()
    swift = TargetResult("swift", status="not run: apt-get failed", replicas=3)
    targets["swift"] = swift.to_json()
    return {"meta": {}, "machine": {}, "targets": targets}


def test_best_peer_respects_direction_and_replicas() -> None:
    data = _data()
    assert best_peer(data, "put_large_x1") == ("rclone", 240.0)
    assert best_peer(data, "put_large_x1", min_replicas=3) == ("seaweedfs", 140.0)
    assert best_peer(data, "list_big_s") == ("rclone", 1.0)
    assert best_peer(data, "nothing") is None


def test_goals_verdicts() -> None:
    by_fig = {g["figure"]: g for g in goals(_data())}
    assert by_fig["put_large_x1"]["verdict"] == "SHORT"
    assert "0.42x" in by_fig["put_large_x1"]["detail"]
    assert by_fig["list_big_s"]["verdict"] == "SHORT"  # 2 s against rclone's 1 s: 0.5x
    assert by_fig["small_put_c1_p50"]["verdict"] == "SHORT"  # 8 ms, limit 5
    assert by_fig["failover_leader_s"]["verdict"] == "NOT MEASURED"


def test_markdown_lists_every_target_and_not_run() -> None:
    text = markdown(_data())
    assert "**swift**: not run: apt-get failed" in text
    row = next(line for line in text.splitlines() if line.startswith("| PUT 64 MiB 1 stream"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "100 ±10%"  # cairn: median 100, spread 20 % -> ±10 %
    assert cells[4] == "not run"
    assert cells[5] == "0.42x (rclone)" and cells[6] == "0.71x (seaweedfs)"


def test_cell_shows_failures() -> None:
    assert cell(None) == "-"
    assert cell({"runs": [], "error": "boom"}) == "failed: boom"
    assert cell({"runs": [5.0], "median": 5.0, "spread_pct": 0.0}) == "5"


def test_signer_matches_botocore() -> None:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    now = 1_700_000_000.0
    signer = Signer("AKID", "secret", "us-east-1", now=now)
    query = encode_query({"list-type": "2", "prefix": "a/b c", "continuation-token": "x=y+z"})
    path, host = "/bucket/some%20key/x", "127.0.0.1:9000"
    ours = signer.headers("GET", host, path, query)
    req = AWSRequest("GET", f"http://{host}{path}?{query}",
                     headers={"x-amz-content-sha256": ours["x-amz-content-sha256"]})
    auth = S3SigV4Auth(Credentials("AKID", "secret"), "s3", "us-east-1")
    fixed = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=fixed):
        auth.add_auth(req)
    assert req.headers["X-Amz-Date"] == ours["x-amz-date"]
    assert req.headers["Authorization"] == ours["Authorization"]
