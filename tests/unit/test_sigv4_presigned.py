"""SigV4 presigned URLs (query-string authentication): AWS's documented example, URLs
from a real boto3 client and from botocore's presigners (``S3SigV4QueryAuth``, and the
CRT's with boto3[crt]); lifetimes, signed headers and strict parameters."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from frontend.errors import S3Error
from frontend.sigv4 import verify_request
from tests.unit.sigv4_helpers import (
    ACCESS_KEY,
    DOC_NOW,
    ODD_KEYS,
    QUERY_SIGNERS,
    boto_client,
    doc_lookup,
    expect_error,
    key_url,
    lookup,
    presign,
    replace_header,
    verify,
)

DOC_PRESIGNED_QUERY = (
    b"X-Amz-Algorithm=AWS4-HMAC-SHA256"
    b"&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    b"&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    b"&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
)


def test_documented_presigned_url_and_its_lifetime():
    headers = [("host", "examplebucket.s3.amazonaws.com")]
    for now in (DOC_NOW, DOC_NOW + 86400, DOC_NOW - 15 * 60):
        result = verify_request("GET", b"/test.txt", DOC_PRESIGNED_QUERY, headers, doc_lookup, now=now)
        assert result is not None and result.presigned and result.content_sha256 == "UNSIGNED-PAYLOAD"
    with pytest.raises(S3Error) as info:
        verify_request("GET", b"/test.txt", DOC_PRESIGNED_QUERY, headers, doc_lookup, now=DOC_NOW + 86401)
    assert (info.value.code, info.value.message) == ("AccessDenied", "Request has expired")
    with pytest.raises(S3Error) as info:
        verify_request("GET", b"/test.txt", DOC_PRESIGNED_QUERY, headers, doc_lookup, now=DOC_NOW - 15 * 60 - 1)
    assert info.value.code == "AccessDenied"


# ---------------------------------------------------------------------------
# presigned URLs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ODD_KEYS)
def test_boto3_presigned_urls_verify(key: str):
    client, _ = boto_client()
    for operation, method in (("get_object", "GET"), ("put_object", "PUT"), ("head_object", "HEAD")):
        url = client.generate_presigned_url(operation, Params={"Bucket": "bucket", "Key": key}, ExpiresIn=300)
        parts = urlsplit(url)
        headers = [("Host", parts.netloc)]
        result = verify_request(method, parts.path.encode(), parts.query.encode(), headers, lookup)
        assert result is not None and result.presigned and result.content_sha256 == "UNSIGNED-PAYLOAD"
        assert result.access_key == ACCESS_KEY
        # the holder of the URL cannot change the key, method or query
        with pytest.raises(S3Error) as info:
            verify_request(method, parts.path.encode() + b"2", parts.query.encode(), headers, lookup)
        assert info.value.code == "SignatureDoesNotMatch"
        other = "DELETE" if method != "DELETE" else "GET"
        with pytest.raises(S3Error) as info:
            verify_request(other, parts.path.encode(), parts.query.encode(), headers, lookup)
        assert info.value.code == "SignatureDoesNotMatch"


def test_presigned_with_operation_params_and_signed_headers():
    client, _ = boto_client()
    url = client.generate_presigned_url(
        "get_object",
        Params={"Bucket": "b", "Key": "k k", "VersionId": "v+1/2", "ResponseContentDisposition": "attachment; x=1"},
        ExpiresIn=60,
    )
    parts = urlsplit(url)
    headers = [("Host", parts.netloc)]
    assert verify(("GET", parts.path.encode(), parts.query.encode(), headers)) is not None
    expect_error(
        "SignatureDoesNotMatch", ("GET", parts.path.encode(), parts.query.encode().replace(b"v%2B1", b"v%2B2"), headers)
    )

    # a presigned PUT that signs x-amz-meta-* and content-type
    method, path, query, headers = presign(
        "PUT", key_url("b", "k"), headers={"x-amz-meta-owner": "me", "Content-Type": "text/plain"}
    )
    assert b"X-Amz-SignedHeaders=content-type%3Bhost%3Bx-amz-meta-owner" in query
    assert verify((method, path, query, headers)) is not None
    expect_error("SignatureDoesNotMatch", (method, path, query, replace_header(headers, "x-amz-meta-owner", "you")))


@pytest.mark.parametrize("key", ODD_KEYS[:5])
@pytest.mark.parametrize("signer", QUERY_SIGNERS)
def test_botocore_presigners_verify(key: str, signer):
    method, path, query, headers = presign("GET", key_url("bucket", key), headers={"x-amz-meta-a": "b"}, signer=signer)
    result = verify((method, path, query, headers))
    assert result is not None and result.presigned
    expect_error("SignatureDoesNotMatch", (method, path + b"x", query, headers))


def test_presigned_expiry_and_unsigned_headers():
    method, path, query, headers = presign("PUT", key_url("b", "k"), expires=60)
    now = time.time()
    assert verify((method, path, query, headers), now=now + 59) is not None
    error = expect_error("AccessDenied", (method, path, query, headers), now=now + 120)
    assert error.message == "Request has expired" and error.fields["X-Amz-Expires"] == 60
    assert (
        expect_error("AccessDenied", (method, path, query, headers), now=now - 3600).message
        == "Request is not valid yet"
    )
    # a URL for a plain PUT must not be turned into a CopyObject or a public object
    error = expect_error("AccessDenied", (method, path, query, headers + [("x-amz-copy-source", "/secret/obj")]))
    assert error.fields["HeadersNotSigned"] == "x-amz-copy-source"
    # a client may send x-amz-content-sha256 unsigned; it does not change the payload hash
    result = verify((method, path, query, headers + [("x-amz-content-sha256", "UNSIGNED-PAYLOAD")]))
    assert result is not None and result.content_sha256 == "UNSIGNED-PAYLOAD"


def test_presigned_signature_is_excluded_from_canonical_query_and_params_are_strict():
    method, path, query, headers = presign("GET", key_url("b", "k"))
    assert verify((method, path, query, headers)) is not None
    params = dict(p.split(b"=", 1) for p in query.split(b"&"))

    def rebuild(**changes: bytes | None) -> bytes:
        merged = {**params, **{k.replace("_", "-").encode(): v for k, v in changes.items()}}
        return b"&".join(k + b"=" + v for k, v in merged.items() if v is not None)

    expect_error("SignatureDoesNotMatch", (method, path, rebuild(X_Amz_Signature=b"0" * 64), headers))
    expect_error("SignatureDoesNotMatch", (method, path, rebuild(X_Amz_Expires=b"3599"), headers))
    expect_error("AccessDenied", (method, path, rebuild(X_Amz_Expires=b"0"), headers))  # expired on arrival
    for bad_expires in (b"604801", b"-5", b"abc", b"1e3", b"9" * 5000, b"%C2%B2"):
        with pytest.raises(S3Error) as info:
            verify((method, path, rebuild(X_Amz_Expires=bad_expires), headers))
        assert info.value.code in ("AuthorizationQueryParametersError", "InvalidArgument")
    for missing in ("X_Amz_Date", "X_Amz_Credential", "X_Amz_SignedHeaders", "X_Amz_Expires", "X_Amz_Signature"):
        with pytest.raises(S3Error) as info:
            verify((method, path, rebuild(**{missing: None}), headers))
        assert info.value.code in ("AuthorizationQueryParametersError", "InvalidArgument"), missing
    with pytest.raises(S3Error) as info:
        verify((method, path, rebuild(X_Amz_Algorithm=b"AWS4-HMAC-SHA1"), headers))
    assert info.value.code in ("AuthorizationQueryParametersError", "InvalidArgument")
    with pytest.raises(S3Error) as info:
        verify((method, path, rebuild(X_Amz_SignedHeaders=b"x-amz-date"), headers))
    assert info.value.code == "AccessDenied" and info.value.fields["HeadersNotSigned"] == "host"
    bad_cred = params[b"X-Amz-Credential"].replace(b"%2Fs3%2F", b"%2Fsqs%2F")
    with pytest.raises(S3Error) as info:
        verify((method, path, rebuild(X_Amz_Credential=bad_cred), headers))
    assert info.value.code in ("AuthorizationQueryParametersError", "InvalidArgument")
    unknown = params[b"X-Amz-Credential"].replace(ACCESS_KEY.encode(), b"NOBODY")
    expect_error("InvalidAccessKeyId", (method, path, rebuild(X_Amz_Credential=unknown), headers))


def test_presigned_week_long_expiry_is_the_maximum():
    method, path, query, headers = presign("GET", key_url("b", "k"), expires=604800)
    now = time.time()
    assert verify((method, path, query, headers), now=now + 604800 - 5) is not None
    expect_error("AccessDenied", (method, path, query, headers), now=now + 604800 + 5)
