"""Tests of request-name handling: bucket names and keys (frontend.names), Range headers
(frontend.handlers.parse_range), and path/query parsing (frontend.app)."""

from __future__ import annotations

import pytest

from frontend.app import query_params, split_path
from frontend.errors import S3Error
from frontend.names import MAX_KEY_BYTES, check_bucket_name, check_key
from frontend.s3.object import parse_range

# ---------------------------------------------------------------------- bucket names

VALID_BUCKETS = [
    "abc",
    "a" * 63,
    "my-bucket",
    "my.bucket.example",
    "1bucket",
    "bucket1",
    "123",
    "a-b",
    "a.b",
    "a--b",
    "xn-a",  # only "xn--" is reserved
    "sthree",  # only "sthree-" is reserved
    "s3alias",
    "my-s3alias-bucket",
    "192.168.5",  # three parts: not an IP address
    "192.168.5.4.5",
    "1.2.3.a",
]

INVALID_BUCKETS = [
    "",
    "a",
    "ab",
    "a" * 64,
    "ABC",
    "myBucket",
    "my_bucket",
    "_cairn",
    "-abc",
    "abc-",
    ".abc",
    "abc.",
    "a..b",
    "my..bucket.com",
    "a b",
    "abc ",
    "ab\u00e9",
    "a/b",
    "a:b",
    "192.168.5.4",
    "10.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "xn--abc",
    "xn--",
    "sthree-abc",
    "sthree-configurator",
    "bucket-s3alias",
    "bucket--ol-s3",
    "\nabc",
    "abc\t",
]


@pytest.mark.parametrize("name", VALID_BUCKETS)
def test_valid_bucket_names(name: str) -> None:
    check_bucket_name(name)


@pytest.mark.parametrize("name", INVALID_BUCKETS)
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(S3Error) as info:
        check_bucket_name(name)
    assert info.value.code == "InvalidBucketName"
    assert info.value.status == 400
    assert info.value.fields == {"BucketName": name}


def test_bucket_name_length_bounds() -> None:
    for n in range(0, 70):
        name = "a" * n
        if 3 <= n <= 63:
            check_bucket_name(name)
        else:
            with pytest.raises(S3Error):
                check_bucket_name(name)


def test_bucket_name_with_trailing_newline_is_invalid() -> None:
    with pytest.raises(S3Error) as info:
        check_bucket_name("abc\n")
    assert info.value.code == "InvalidBucketName"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("amzn-s3-demo-bucket", id="prefix amzn-s3-demo-"),
        pytest.param("bucket.mrap", id="suffix .mrap"),
        pytest.param("bucket--x-s3", id="suffix --x-s3"),
    ],
)
def test_newer_reserved_prefixes_and_suffixes(name: str) -> None:
    with pytest.raises(S3Error) as info:
        check_bucket_name(name)
    assert info.value.code == "InvalidBucketName"


# ---------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "a" * MAX_KEY_BYTES,
        "\u00e9" * 512,  # 2 bytes each: exactly 1024
        "\U0001f600" * 256,  # 4 bytes each: exactly 1024
        "\u20ac" * 341 + "a",  # 3*341 + 1 = 1024
        "a/../b",
        "//",
        " ",
    ],
)
def test_keys_within_limit(key: str) -> None:
    check_key(key)


@pytest.mark.parametrize(
    ("key", "nbytes"),
    [
        ("a" * 1025, 1025),
        ("\u00e9" * 512 + "a", 1025),
        ("\U0001f600" * 257, 1028),
        ("\u20ac" * 342, 1026),  # only 342 characters, but 1026 bytes
        ("\u20ac" * 341 + "ab", 1025),
    ],
)
def test_keys_over_limit_count_utf8_bytes(key: str, nbytes: int) -> None:
    assert len(key) <= 1025
    with pytest.raises(S3Error) as info:
        check_key(key)
    assert info.value.code == "KeyTooLongError"
    assert info.value.status == 400
    assert info.value.fields["Size"] == nbytes
    assert info.value.fields["MaxSizeAllowed"] == 1024


def test_empty_key_is_rejected() -> None:
    with pytest.raises(S3Error) as info:
        check_key("")
    assert info.value.code == "InvalidArgument"


# ---------------------------------------------------------------------- Range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=0-9", 10, (0, 9)),
        ("bytes=2-5", 10, (2, 5)),
        ("bytes=9-9", 10, (9, 9)),
        ("bytes=5-", 10, (5, 9)),
        ("bytes=0-", 10, (0, 9)),
        ("bytes=9-", 10, (9, 9)),
        ("bytes=-5", 10, (5, 9)),
        ("bytes=-1", 10, (9, 9)),
        ("bytes=-10", 10, (0, 9)),
        ("bytes=-20", 10, (0, 9)),  # suffix longer than the object: all of it
        ("bytes=3-100", 10, (3, 9)),  # last beyond the end clamps
        ("bytes=0-18446744073709551616", 10, (0, 9)),
        ("bytes=0-0", 1, (0, 0)),
        ("Bytes=1-2", 10, (1, 2)),  # range units are case-insensitive
        ("BYTES=1-2", 10, (1, 2)),
    ],
)
def test_parse_range_satisfiable(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=-0", 10),
        ("bytes=10-", 10),
        ("bytes=10-20", 10),
        ("bytes=11-11", 10),
        ("bytes=0-0", 0),
        ("bytes=0-", 0),
        ("bytes=5-9", 0),
    ],
)
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(S3Error) as info:
        parse_range(header, size)
    assert info.value.code == "InvalidRange"
    assert info.value.status == 416
    assert info.value.fields["ActualObjectSize"] == size
    assert info.value.fields["RangeRequested"] == header


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=0-1,3-4",  # multi-range: served whole
        "bytes=0-1, 3-4",
        "bytes=-1,-2",
        "items=0-1",
        "bits=0-1",
        "bytes 0-1",
        "bytes=",
        "bytes=5",
        "bytes=-",
        "bytes=abc",
        "bytes=a-5",
        "bytes=0x1-2",
        "bytes=1.5-2",
        "bytes=5-2",  # last < first: syntactically invalid, ignored
        "bytes=-5-3",
        "bytes=5--3",
    ],
)
def test_parse_range_malformed_means_whole_object(header: str | None) -> None:
    assert parse_range(header, 10) is None


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("bytes=--5", id="double-dash"),
        pytest.param("bytes=-+5", id="signed-suffix"),
        pytest.param("bytes=+1-2", id="signed-first"),
        pytest.param("bytes=0-1_0", id="underscore-digits"),
        pytest.param("bytes=\u0665-", id="arabic-indic-digit"),
    ],
)
def test_parse_range_non_digit_positions_are_malformed(header: str) -> None:
    assert parse_range(header, 10) is None


@pytest.mark.parametrize("header", ["bytes=-5", "bytes=-0", "bytes=-1"])
def test_parse_range_suffix_on_empty_object(header: str) -> None:
    try:
        result = parse_range(header, 0)
    except S3Error as exc:
        assert exc.code == "InvalidRange"
    else:
        assert result is None


# ---------------------------------------------------------------------- split_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/", ("", None)),
        (b"/bucket", ("bucket", None)),
        (b"/bucket/", ("bucket", None)),
        (b"/bucket/key", ("bucket", "key")),
        (b"/bucket/a/b/c.txt", ("bucket", "a/b/c.txt")),
        (b"/bucket/key?acl", ("bucket", "key")),
        (b"/bucket?list-type=2&prefix=a/b", ("bucket", None)),
        (b"/bucket/key%3Fx?y", ("bucket", "key?x")),  # an encoded '?' belongs to the key
        (b"/bucket/a+b", ("bucket", "a+b")),  # '+' is literal in a path
        (b"/bucket/a%2Bb", ("bucket", "a+b")),
        (b"/bucket/a%20b", ("bucket", "a b")),
        (b"/bucket/a%2Fb", ("bucket", "a/b")),
        (b"/bucket/%252F", ("bucket", "%2F")),  # decoded exactly once
        (b"/bucket/%2525", ("bucket", "%25")),
        (b"/bucket//x", ("bucket", "/x")),
        (b"/bucket/a//b", ("bucket", "a//b")),
        (b"/bucket/a/", ("bucket", "a/")),
        (b"/bucket///", ("bucket", "//")),
        (b"/bucket/../x", ("bucket", "../x")),
        (b"/bucket/a/./b/../c", ("bucket", "a/./b/../c")),
        (b"/bucket/%2E%2E/x", ("bucket", "../x")),
        (b"/bucket/..", ("bucket", "..")),
        (b"/bucket/%E2%82%AC", ("bucket", "\u20ac")),
        (b"/bucket/\xe2\x82\xac", ("bucket", "\u20ac")),  # raw UTF-8 too
        (b"/bucket/%F0%9F%98%80", ("bucket", "\U0001f600")),
        (b"/my%2Dbucket/k", ("my-bucket", "k")),
        (b"/_cairn/health", ("_cairn", "health")),
    ],
)
def test_split_path(raw: bytes, expected: tuple[str, str | None]) -> None:
    assert split_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/bucket/%FF",
        b"/bucket/\xff",
        b"/bucket/%C3",  # truncated sequence
        b"/bucket/%C0%AF",  # overlong '/'
        b"/bucket/%ED%A0%80",  # a UTF-16 surrogate
        b"/%FF/key",
        b"/%FF",
        b"/bucket/ok/%E2%82",
    ],
)
def test_split_path_invalid_utf8_is_invalid_uri(raw: bytes) -> None:
    with pytest.raises(S3Error) as info:
        split_path(raw)
    assert info.value.code == "InvalidURI"
    assert info.value.status == 400


def test_split_path_must_start_with_slash() -> None:
    with pytest.raises(S3Error) as info:
        split_path(b"bucket/key")
    assert info.value.code == "InvalidRequest"


# ---------------------------------------------------------------------- query_params


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", {}),
        (b"acl", {"acl": ""}),
        (b"versioning=", {"versioning": ""}),
        (b"list-type=2&max-keys=5", {"list-type": "2", "max-keys": "5"}),
        (b"prefix=a%2Fb&delimiter=%2F", {"prefix": "a/b", "delimiter": "/"}),
        (b"prefix=%252F", {"prefix": "%2F"}),  # decoded exactly once
        (b"prefix=%E2%82%AC", {"prefix": "\u20ac"}),
        (b"prefix=\xe2\x82\xac", {"prefix": "\u20ac"}),
        (b"uploads&prefix=x", {"uploads": "", "prefix": "x"}),
        (b"prefix=a%26b%3Dc", {"prefix": "a&b=c"}),
        (b"start-after=a%20b", {"start-after": "a b"}),
    ],
)
def test_query_params(raw: bytes, expected: dict[str, str]) -> None:
    assert query_params(raw) == expected


def test_query_params_raw_invalid_utf8() -> None:
    with pytest.raises(S3Error) as info:
        query_params(b"prefix=\xff")
    assert info.value.code == "InvalidArgument"


def test_query_params_percent_encoded_invalid_utf8() -> None:
    with pytest.raises(S3Error):
        query_params(b"prefix=%FF")
