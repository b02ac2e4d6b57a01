"""SigV4's canonical request: how queries, paths and header values are encoded and
normalised before signing, checked against botocore's signer (``S3SigV4Auth``, and the
CRT's with boto3[crt]) and Cairn's own ``sign_headers``."""

from __future__ import annotations

import pytest

from frontend.sigv4 import sign_headers
from tests.unit.sigv4_helpers import (
    ACCESS_KEY,
    ENDPOINT,
    HEADER_SIGNERS,
    SECRET_KEY,
    expect_error,
    key_url,
    replace_header,
    sign,
    verify,
)


@pytest.mark.parametrize(
    "query",
    [
        "a=1&a=0&b=&c",  # repeated names sort by value; empty value; no '='
        "prefix=a%20b%2Bc%2F~%25&delimiter=%2F",  # space, '+', '/', '~', '%'
        "uploads",
        "x-id=GetObject&versionId=3%2FL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY",
        "empty=&empty=",
        "k%C3%A9y=v%C3%A4l%E4%B8%AD",  # unicode names and values
        "list-type=2&start-after=&encoding-type=url",
    ],
)
@pytest.mark.parametrize("signer", HEADER_SIGNERS)
def test_botocore_signed_queries_verify_and_tampering_is_rejected(query: str, signer):
    method, path, raw_query, headers = sign("GET", f"{ENDPOINT}/bucket/key?{query}", signer=signer)
    assert verify((method, path, raw_query, headers)) is not None
    for tampered in (raw_query + b"&extra=1", raw_query + b"x", b"z=1&" + raw_query):
        expect_error("SignatureDoesNotMatch", (method, path, tampered, headers))
    # param order on the wire does not matter
    reordered = b"&".join(reversed(raw_query.split(b"&")))
    assert verify((method, path, reordered, headers)) is not None


def test_plus_in_query_is_a_literal_plus():
    # botocore encodes '+' as %2B; a raw '+' must mean the same byte, not a space
    method, path, query, headers = sign("GET", f"{ENDPOINT}/bucket?prefix=a%2Bb")
    assert verify((method, path, b"prefix=a+b", headers)) is not None
    expect_error("SignatureDoesNotMatch", (method, path, b"prefix=a%20b", headers))


def test_unreserved_characters_may_arrive_percent_encoded():
    method, path, query, headers = sign("GET", f"{ENDPOINT}/bucket/a-b_c.d~e?x=a-b_c.d~e")
    assert verify((method, b"/bucket/a%2Db%5Fc%2Ed%7Ee", b"x=a%2db%5fc%2ed%7ee", headers)) is not None


def test_header_values_are_canonicalised():
    parts = sign("PUT", key_url("bucket", "k"), {"x-amz-meta-a": "  x   y  ", "x-amz-meta-b": "tab\tsep"}, b"z")
    method, path, query, headers = parts
    assert verify(parts) is not None
    # an HTTP server strips the outer whitespace; the inner runs are still collapsed
    stripped = [(n, v.strip()) for n, v in headers]
    assert verify((method, path, query, stripped)) is not None
    # header names arrive in any case
    assert verify((method, path, query, [(n.upper(), v) for n, v in headers])) is not None
    expect_error("SignatureDoesNotMatch", (method, path, query, replace_header(headers, "x-amz-meta-a", "x y z")))


def test_repeated_header_values_are_joined():
    base = [("Host", "127.0.0.1:9000"), ("x-amz-meta-r", "one"), ("x-amz-meta-r", "two")]
    signed = sign_headers("GET", b"/b/k", b"", base, ACCESS_KEY, SECRET_KEY)
    assert verify(("GET", b"/b/k", b"", signed)) is not None
    # botocore signs the joined value the same way
    parts = sign("GET", key_url("b", "k"), {"x-amz-meta-r": "one,two"})
    method, path, query, headers = parts
    unjoined = [h for h in headers if h[0].lower() != "x-amz-meta-r"] + [
        ("x-amz-meta-r", "one"),
        ("x-amz-meta-r", "two"),
    ]
    assert verify((method, path, query, unjoined)) is not None
