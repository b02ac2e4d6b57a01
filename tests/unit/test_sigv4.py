"""SigV4 header-based authentication: AWS's documented examples, requests signed by
botocore's own signer (``S3SigV4Auth``, and the CRT's with boto3[crt]) and whole
requests of a real boto3 client; what is refused and why.

Presigned URLs are in test_sigv4_presigned.py, the canonical request's encoding rules in
test_sigv4_canonical.py, what they share in sigv4_helpers.py.
"""

from __future__ import annotations

import hashlib
import time

import pytest
from botocore.credentials import Credentials

from frontend import sigv4
from frontend.errors import S3Error
from frontend.sigv4 import AuthResult, derive_signing_key, verify_request
from tests.unit.sigv4_helpers import (
    ACCESS_KEY,
    DOC_KEY,
    DOC_NOW,
    DOC_SECRET,
    EMPTY_SHA256,
    ENDPOINT,
    HEADER_SIGNERS,
    ODD_KEYS,
    SECRET_KEY,
    boto_client,
    captured_call,
    doc_lookup,
    expect_error,
    key_url,
    lookup,
    presign,
    replace_header,
    sign,
    split,
    verify,
)

# ---------------------------------------------------------------------------
# AWS's documented examples (sig-v4-header-based-auth, sigv4-query-string-auth)
# ---------------------------------------------------------------------------


def doc_authorization(signed_headers: str, signature: str) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential={DOC_KEY}/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


def test_documented_get_object():
    headers = [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
        (
            "Authorization",
            doc_authorization(
                "host;range;x-amz-content-sha256;x-amz-date",
                "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            ),
        ),
    ]
    result = verify_request("GET", b"/test.txt", b"", headers, doc_lookup, now=DOC_NOW)
    assert result == AuthResult(
        access_key=DOC_KEY,
        signing_key=derive_signing_key(DOC_SECRET, "20130524", "us-east-1"),
        seed_signature="f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        amz_date="20130524T000000Z",
        scope="20130524/us-east-1/s3/aws4_request",
        content_sha256=EMPTY_SHA256,
    )
    assert "signing_key" not in repr(result)
    # the Range value is signed
    with pytest.raises(S3Error) as info:
        verify_request(
            "GET", b"/test.txt", b"", replace_header(headers, "range", "bytes=0-99"), doc_lookup, now=DOC_NOW
        )
    assert info.value.code == "SignatureDoesNotMatch"
    assert "CanonicalRequest" in info.value.fields


def test_documented_put_object_with_date_header_and_dollar_in_path():
    headers = [
        ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("x-amz-content-sha256", "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        (
            "Authorization",
            doc_authorization(
                "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
            ),
        ),
    ]
    # '$' arrives raw but is %24 in the canonical URI; both spellings verify
    for path in (b"/test$file.text", b"/test%24file.text"):
        result = verify_request("PUT", path, b"", headers, doc_lookup, now=DOC_NOW)
        assert result is not None and result.content_sha256.startswith("44ce7dd6")


@pytest.mark.parametrize(
    ("query", "signature"),
    [
        (b"lifecycle", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        (b"max-keys=2&prefix=J", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
        (b"prefix=J&max-keys=2", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
    ],
)
def test_documented_bucket_requests(query: bytes, signature: str):
    headers = [
        ("host", "examplebucket.s3.amazonaws.com"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
        ("authorization", doc_authorization("host;x-amz-content-sha256;x-amz-date", signature)),
    ]
    assert verify_request("GET", b"/", query, headers, doc_lookup, now=DOC_NOW) is not None


def test_derive_signing_key_matches_the_documented_example():
    # AWS General Reference, "Examples of how to derive a signing key for Signature Version 4"
    key = derive_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_signing_key_cache_is_bounded():
    for i in range(sigv4._KEY_CACHE_MAX + 50):
        derive_signing_key(f"secret-{i}", "20260101", "us-east-1")
    assert len(sigv4._KEY_CACHE) <= sigv4._KEY_CACHE_MAX
    assert derive_signing_key("secret-0", "20260101", "us-east-1") == derive_signing_key(
        "secret-0", "20260101", "us-east-1"
    )


# ---------------------------------------------------------------------------
# botocore's S3 signer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("signer", HEADER_SIGNERS)
@pytest.mark.parametrize("key", ODD_KEYS)
def test_botocore_signed_keys_verify(key: str, signer):
    body = f"payload for {key}".encode()
    parts = sign("PUT", key_url("bucket", key), {"Content-Type": "text/plain"}, body, signer=signer)
    result = verify(parts)
    assert result is not None
    assert result.access_key == ACCESS_KEY
    assert result.content_sha256 == hashlib.sha256(body).hexdigest()
    assert result.scope.endswith("/us-east-1/s3/aws4_request") and result.scope[:8] == result.amz_date[:8]
    assert result.signing_key == derive_signing_key(SECRET_KEY, result.amz_date[:8], "us-east-1")
    assert not result.presigned


@pytest.mark.parametrize("key", ODD_KEYS)
def test_tampered_path_is_rejected(key: str):
    method, path, query, headers = sign("GET", key_url("bucket", key))
    for other in (path + b"x", path.replace(b"/bucket/", b"/bucket2/"), path + b"/"):
        expect_error("SignatureDoesNotMatch", (method, other, query, headers))


def test_tampered_method_signature_and_headers_are_rejected():
    method, path, query, headers = sign("DELETE", key_url("bucket", "k"), {"x-amz-meta-a": "1"})
    expect_error("SignatureDoesNotMatch", ("GET", path, query, headers))
    auth = next(v for n, v in headers if n.lower() == "authorization")
    signature = auth.rsplit("=", 1)[1]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    expect_error(
        "SignatureDoesNotMatch",
        (method, path, query, replace_header(headers, "authorization", auth.replace(signature, flipped))),
    )
    expect_error(
        "SignatureDoesNotMatch",
        (method, path, query, replace_header(headers, "authorization", auth.replace(signature, signature.upper()))),
    )
    expect_error("SignatureDoesNotMatch", (method, path, query, replace_header(headers, "x-amz-meta-a", "2")))
    expect_error("SignatureDoesNotMatch", (method, path, query, replace_header(headers, "host", "evil.example:9000")))
    expect_error(
        "SignatureDoesNotMatch",
        (method, path, query, replace_header(headers, "x-amz-content-sha256", EMPTY_SHA256.replace("e", "f", 1))),
    )


def test_unknown_key_and_wrong_secret():
    other = Credentials("NOSUCHKEY", SECRET_KEY)
    error = expect_error("InvalidAccessKeyId", sign("GET", key_url("b", "k"), creds=other))
    assert error.fields["AWSAccessKeyId"] == "NOSUCHKEY"
    wrong = Credentials(ACCESS_KEY, "not-the-secret")
    expect_error("SignatureDoesNotMatch", sign("GET", key_url("b", "k"), creds=wrong))
    # a key that exists, with another key's secret
    expect_error("SignatureDoesNotMatch", sign("GET", key_url("b", "k"), creds=Credentials("OTHERKEY", SECRET_KEY)))
    assert verify(sign("GET", key_url("b", "k"), creds=Credentials("OTHERKEY", "another-secret"))) is not None


def test_clock_skew():
    parts = sign("GET", key_url("b", "k"))
    now = time.time()
    for offset in (-14 * 60, 14 * 60, 0):
        assert verify(parts, now=now + offset) is not None
    for offset in (-16 * 60, 16 * 60, 86400):
        error = expect_error("RequestTimeTooSkewed", parts, now=now + offset)
        assert error.status == 403 and error.fields["MaxAllowedSkewMilliseconds"] == 900000


def test_date_header_instead_of_x_amz_date():
    # botocore, given a Date header, signs with it and sends no x-amz-date
    parts = sign("GET", key_url("b", "k"), {"Date": "Mon, 01 Jan 2001 00:00:00 GMT"})
    method, path, query, headers = parts
    names = {n.lower() for n, _ in headers}
    assert "date" in names and "x-amz-date" not in names
    result = verify(parts)
    assert result is not None and result.amz_date[:8] == result.scope[:8]
    expect_error("RequestTimeTooSkewed", parts, now=time.time() + 3600)
    no_date = [(n, v) for n, v in headers if n.lower() != "date"]
    assert expect_error("AccessDenied", (method, path, query, no_date)).message.startswith(
        "AWS authentication requires"
    )


def test_host_must_be_signed():
    method, path, query, headers = sign("GET", key_url("b", "k"))
    auth = next(v for n, v in headers if n.lower() == "authorization")
    without_host = auth.replace("SignedHeaders=host;", "SignedHeaders=")
    assert without_host != auth
    error = expect_error("AccessDenied", (method, path, query, replace_header(headers, "authorization", without_host)))
    assert error.fields["HeadersNotSigned"] == "host"


def test_unsigned_amz_headers_are_refused():
    method, path, query, headers = sign("PUT", key_url("b", "k"), body=b"x")
    added = headers + [("x-amz-copy-source", "/other/secret"), ("X-Amz-Acl", "public-read")]
    error = expect_error("AccessDenied", (method, path, query, added))
    assert error.fields["HeadersNotSigned"] == "x-amz-acl, x-amz-copy-source"
    # headers that are not x-amz-*, and x-amzn-trace-id, may be unsigned (botocore leaves User-Agent unsigned)
    extra = headers + [("User-Agent", "test"), ("X-Amzn-Trace-Id", "Root=1"), ("Expect", "100-continue")]
    assert verify((method, path, query, extra)) is not None


def test_missing_or_invalid_content_sha256():
    method, path, query, headers = sign("GET", key_url("b", "k"))
    without = [(n, v) for n, v in headers if n.lower() != "x-amz-content-sha256"]
    error = expect_error("InvalidRequest", (method, path, query, without))
    assert "x-amz-content-sha256" in error.message
    expect_error("InvalidArgument", (method, path, query, replace_header(headers, "x-amz-content-sha256", "nonsense")))


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (
            "AWS4-HMAC-SHA256 Credential={ak}/{d}/us-east-1/s3/aws4_request, SignedHeaders=host",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential={ak}/{d}/us-east-1/s3, SignedHeaders=host, Signature={sig}",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential={ak}/{d}/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature={sig}",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential={ak}/{d}/us-east-1/s3/aws5_request, SignedHeaders=host, Signature={sig}",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential={ak}/2001/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={sig}",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential={ak}/20010101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={sig}",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential={ak}/{d}/us-east-1/s3/aws4_request, SignedHeaders=, Signature={sig}",
            "AuthorizationHeaderMalformed",
        ),
        ("AWS4-HMAC-SHA256 garbage", "AuthorizationHeaderMalformed"),
        ("AWS4-HMAC-SHA256", "AuthorizationHeaderMalformed"),
        ("AWS {ak}:c2lnbmF0dXJl", "SignatureDoesNotMatch"),  # SigV2 (frontend.sigv2), a wrong signature
        ("AWS4-ECDSA-P256-SHA256 Credential={ak}/{d}/us-east-1/s3/aws4_request", "InvalidRequest"),
    ],
)
def test_malformed_authorization(authorization: str, code: str):
    method, path, query, headers = sign("GET", key_url("b", "k"))
    amz_date = next(v for n, v in headers if n.lower() == "x-amz-date")
    value = authorization.format(ak=ACCESS_KEY, d=amz_date[:8], sig="0" * 64)
    expect_error(code, (method, path, query, replace_header(headers, "authorization", value)))


def test_authorization_without_spaces_verifies():
    method, path, query, headers = sign("GET", key_url("b", "k"))
    auth = next(v for n, v in headers if n.lower() == "authorization")
    assert verify((method, path, query, replace_header(headers, "authorization", auth.replace(", ", ",")))) is not None


def test_anonymous_requests_return_none():
    assert verify_request("GET", b"/b/k", b"", [("Host", "h")], lookup) is None
    assert verify_request("GET", b"/b", b"list-type=2&prefix=X-Amz-&Signed=1", [("Host", "h")], lookup) is None


def test_two_auth_mechanisms_are_refused():
    method, path, query, headers = presign("GET", key_url("b", "k"))
    signed = sign("GET", key_url("b", "k"))[3]
    auth = next((n, v) for n, v in signed if n.lower() == "authorization")
    expect_error("InvalidArgument", (method, path, query, headers + [auth]))


def test_sigv2_presigned_url_goes_to_sigv2():
    # a key the lookup does not know: SigV2's verifier answers, as for V4
    expect_error("InvalidAccessKeyId", ("GET", b"/b/k", b"AWSAccessKeyId=AK&Expires=1&Signature=abc", [("Host", "h")]))


# ---------------------------------------------------------------------------
# whole boto3 operations
# ---------------------------------------------------------------------------


BOTO_CALLS = [
    ("put_object", {"Bucket": "bkt", "Key": "dir/a b+c~d%e", "Body": b"hello world", "Metadata": {"m": "  x   y  "}}),
    ("put_object", {"Bucket": "bkt", "Key": "../../etc//passwd", "Body": b"", "ContentType": "text/plain"}),
    ("put_object", {"Bucket": "bkt", "Key": "k", "Body": b"data", "ChecksumAlgorithm": "SHA256"}),
    ("get_object", {"Bucket": "bkt", "Key": "ünï/cödé", "Range": "bytes=0-9", "VersionId": "3/L4kqtJl+cp"}),
    ("head_object", {"Bucket": "bkt", "Key": "k", "IfMatch": '"etag"'}),
    ("delete_object", {"Bucket": "bkt", "Key": "k?x=1"}),
    ("list_objects_v2", {"Bucket": "bkt", "Prefix": "a b+c/~%", "Delimiter": "/", "StartAfter": ""}),
    ("list_objects", {"Bucket": "bkt", "Prefix": "", "Marker": "m&n=o"}),
    ("list_buckets", {}),
    ("create_bucket", {"Bucket": "new-bucket"}),
    ("create_multipart_upload", {"Bucket": "bkt", "Key": "big file"}),
    ("upload_part", {"Bucket": "bkt", "Key": "big file", "UploadId": "u/p+id==", "PartNumber": 3, "Body": b"x" * 1000}),
    ("copy_object", {"Bucket": "bkt", "Key": "dst", "CopySource": {"Bucket": "src", "Key": "a b/ü+"}}),
    ("delete_objects", {"Bucket": "bkt", "Delete": {"Objects": [{"Key": "a"}, {"Key": "b c"}]}}),
    ("list_multipart_uploads", {"Bucket": "bkt", "Prefix": "p", "KeyMarker": "k m"}),
    ("put_object_tagging", {"Bucket": "bkt", "Key": "k", "Tagging": {"TagSet": [{"Key": "a", "Value": "b c"}]}}),
]


@pytest.mark.parametrize("endpoint", [ENDPOINT, "https://s3.cairn.test"])
@pytest.mark.parametrize(("operation", "params"), BOTO_CALLS, ids=[f"{op}-{i}" for i, (op, _) in enumerate(BOTO_CALLS)])
def test_boto3_client_requests_verify(endpoint: str, operation: str, params: dict):
    client, captured = boto_client(endpoint)
    request = captured_call(client, captured, operation, **params)
    method, path, query, headers = split(request)
    result = verify((method, path, query, headers))
    assert result is not None and result.access_key == ACCESS_KEY
    content_sha256 = next(v for n, v in headers if n.lower() == "x-amz-content-sha256")
    assert result.content_sha256 == content_sha256
    # any signed header changed breaks it
    auth = next(v for n, v in headers if n.lower() == "authorization")
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    for name in signed:
        if name in ("x-amz-content-sha256", "x-amz-date"):  # validated before the signature
            continue
        changed = [(n, v + "X" if n.lower() == name else v) for n, v in headers]
        expect_error("SignatureDoesNotMatch", (method, path, query, changed))
