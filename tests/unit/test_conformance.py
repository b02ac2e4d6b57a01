"""The conformance runner's pure parts: the suite's config, features, the junit summary, the
subset file and the floor (the CI ratchet)."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import pytest

from bench.conformance import (
    check_floor,
    config,
    feature_of,
    floor_report,
    read_subset,
    record_floor,
    report,
    resolve_subset,
    summarize,
)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="s3tests.functional.test_s3" name="test_bucket_list_empty" time="0.1"/>
<testcase classname="s3tests.functional.test_s3" name="test_versioning_obj_create" time="0.1">
<failure message="AssertionError: assert 'a' == 'b'">long text</failure></testcase>
<testcase classname="s3tests.functional.test_s3" name="test_object_acl_get" time="0.1">
<error message="botocore.exceptions.ClientError: NotImplemented">trace</error></testcase>
<testcase classname="s3tests.functional.test_s3" name="test_tagging_x" time="0.1"><skipped message="no"/></testcase>
</testsuite></testsuites>"""


def test_config_names_every_identity_the_suite_reads() -> None:
    parsed = configparser.ConfigParser()
    parsed.read_string(config("http://127.0.0.1:9000", {"alt": {"access_key": "A", "secret_key": "a"},
                                                        "tenant": {"access_key": "T", "secret_key": "t"}}))
    assert parsed["DEFAULT"]["port"] == "9000"
    for section in ("s3 main", "s3 alt", "s3 tenant", "iam", "iam root", "iam alt root", "fixtures"):
        assert section in parsed, section
    assert parsed["s3 alt"]["access_key"] == "A" and parsed["iam alt root"]["secret_key"] == "a"


def test_features_come_from_marks_else_the_name() -> None:
    assert feature_of("test_bucket_list_empty", []) == ["bucket"]
    assert feature_of("test_x", ["fails_on_dbstore", "tagging"]) == ["tagging"]
    assert feature_of("test_versioning_obj", ["fails_on_dbstore"]) == ["versioning"]


def test_summary_counts_outcomes_per_feature_with_first_errors(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    result = summarize(junit, {"test_tagging_x": ["tagging"]})
    assert result["totals"] == {"passed": 1, "failed": 1, "error": 1, "skipped": 1}
    assert result["features"]["versioning"] == {"failed": 1} and result["features"]["tagging"] == {"skipped": 1}
    assert result["tests"]["test_object_acl_get"]["first_error"] == "botocore.exceptions.ClientError: NotImplemented"
    assert result["tests"]["test_bucket_list_empty"]["seconds"] == 0.1
    text = report({**result, "seconds": 1.0})
    assert text.startswith("1 passed of 3 (33.3%)") and "test_versioning_obj_create: AssertionError" in text


SUBSET = """# chosen by hand
test_b

test_a
  test_c[param]
"""


def test_subset_file_lists_names_skipping_comments_and_blanks() -> None:
    assert read_subset(SUBSET) == ["test_b", "test_a", "test_c[param]"]


def test_subset_file_refuses_a_name_listed_twice() -> None:
    with pytest.raises(ValueError, match="test_a"):
        read_subset("test_a\ntest_b\ntest_a\n")


def test_subset_resolves_to_node_ids_and_missing_tests_are_an_error() -> None:
    nodes = {"test_a": ["f.py::test_a"], "test_b": ["g.py::test_b"], "test_bb": ["g.py::test_bb"]}
    assert resolve_subset(["test_b", "test_a"], nodes) == ["g.py::test_b", "f.py::test_a"]
    with pytest.raises(ValueError, match="1 test.*test_gone"):
        resolve_subset(["test_a", "test_gone"], nodes)


def outcomes(**by_name: str) -> dict[str, dict[str, str]]:
    return {name: {"outcome": outcome, "first_error": "boom" if outcome != "passed" else ""}
            for name, outcome in by_name.items()}


def test_floor_check_names_regressions_and_newly_passing_tests() -> None:
    floor = {"passed": 2, "passing": ["test_a", "test_b", "test_gone"]}
    check = check_floor(floor, outcomes(test_a="passed", test_b="failed", test_c="passed", test_d="error"))
    assert (check.passed, check.floor, check.ok) == (2, 2, True)
    assert check.regressed == ["test_b"] and check.not_run == ["test_gone"] and check.newly_passing == ["test_c"]
    text = floor_report(check, outcomes(test_b="failed"))
    assert "2 passed, floor 2: ok" in text and "  test_b: boom" in text and "raise the floor" in text


def test_floor_check_fails_below_the_floor() -> None:
    check = check_floor({"passed": 3}, outcomes(test_a="passed", test_b="passed", test_c="failed"))
    assert not check.ok and check.newly_passing == [] and check.regressed == []
    assert "BELOW THE FLOOR by 1" in floor_report(check, {})
    assert check_floor({"passed": 1}, outcomes(test_a="passed", test_b="passed")).ok


def test_recording_the_floor_lists_passing_tests_and_refuses_to_lower_it() -> None:
    tests = outcomes(test_b="passed", test_a="passed", test_c="failed")
    new = record_floor({"passed": 1}, tests, "bench/conformance_subset.txt", "2026-12-02 05:00 UTC")
    assert new == {"subset": "bench/conformance_subset.txt", "passed": 2, "of": 3, "recorded": "2026-12-02 05:00 UTC",
                   "passing": ["test_a", "test_b"]}
    assert record_floor(None, tests, None, "now")["passed"] == 2
    with pytest.raises(ValueError, match="refusing to lower"):
        record_floor({"passed": 3}, tests, None, "now")
    assert record_floor({"passed": 3}, tests, None, "now", allow_lower=True)["passed"] == 2


ROOT = Path(__file__).resolve().parents[2]


def test_the_repositorys_subset_is_sorted_and_its_floor_names_only_subset_tests() -> None:
    text = (ROOT / "bench" / "conformance_subset.txt").read_text()
    names = read_subset(text)
    assert text.startswith("#") and names == sorted(names) and 250 <= len(names) <= 350
    floor = json.loads((ROOT / "bench" / "conformance_floor.json").read_text())
    assert floor["subset"] == "bench/conformance_subset.txt" and floor["of"] == len(names)
    assert floor["passed"] == len(floor["passing"]) and set(floor["passing"]) <= set(names)
