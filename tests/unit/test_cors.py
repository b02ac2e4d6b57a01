"""CORS rule matching (frontend.s3.cors): S3's one-``*`` wildcards in AllowedOrigin and
AllowedHeader, first matching rule wins."""

from __future__ import annotations

import pytest

from frontend.s3.cors import match_rule, wildcard_match


@pytest.mark.parametrize(("wildcard", "value", "matches"), [
    ("*", "", True),
    ("*", "http://anything:8080", True),
    ("*suffix", "foo.suffix", True),
    ("*suffix", "suffix", True),
    ("*suffix", "foo.suffix.get", False),
    ("start*end", "startend", True),
    ("start*end", "start12end", True),
    ("start*end", "0start12end", False),
    ("start*end", "start12end0", False),
    ("ab*ba", "aba", False),  # prefix and suffix may not overlap
    ("prefix*", "prefix.suffix", True),
    ("prefix*", "bla.prefix", False),
    ("http://*.example.com", "http://www.example.com", True),
    ("http://*.example.com", "https://www.example.com", False),
    ("http://*.example.com", "http://example.com", False),
    ("http://[::1]:8?", "http://[::1]:8?", True),  # ? and [ ] stand for themselves
    ("http://[::1]:8?", "http://1:80", False),
    ("a.b", "axb", False),
    ("exact", "exact", True),
    ("exact", "Exact", False),
    ("x-amz-*", "x-amz-meta-foo", True),
    ("x-*-*", "x-a-b", True),  # two, stored before PutBucketCors refused them: both wildcards
])
def test_wildcard_match(wildcard: str, value: str, matches: bool) -> None:
    assert wildcard_match(wildcard, value) is matches


RULES = [
    {"origins": ["*suffix"], "methods": ["GET"], "headers": [], "expose": []},
    {"origins": ["http://*.example.com"], "methods": ["PUT"], "headers": ["x-amz-*", "content-type"], "expose": []},
    {"origins": ["*"], "methods": ["GET", "HEAD"], "headers": ["*"], "expose": []},
]


def test_first_matching_rule_wins() -> None:
    assert match_rule(RULES, "foo.suffix", "GET", []) is RULES[0]
    assert match_rule(RULES, "foo.suffix", "GET", ["x-a"]) is RULES[2]  # the first allows no header
    assert match_rule(RULES, "http://a.example.com", "PUT", ["x-amz-date", "content-type"]) is RULES[1]
    assert match_rule(RULES, "http://a.example.com", "PUT", ["x-other"]) is None
    assert match_rule(RULES, "http://a.example.com", "DELETE", []) is None
    assert match_rule(RULES, "elsewhere", "HEAD", ["anything"]) is RULES[2]
    assert match_rule([], "foo.suffix", "GET", []) is None
