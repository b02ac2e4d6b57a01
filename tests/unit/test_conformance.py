"""The conformance runner's pure parts: the suite's config, features, the junit summary."""

from __future__ import annotations

import configparser
from pathlib import Path

from bench.conformance import config, feature_of, report, summarize

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
    text = report({**result, "seconds": 1.0})
    assert text.startswith("1 passed of 3 (33.3%)") and "test_versioning_obj_create: AssertionError" in text
