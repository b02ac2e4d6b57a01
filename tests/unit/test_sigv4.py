"""SigV4 verification: AWS's documented examples, and requests signed by botocore itself.

Requests are produced by botocore's own signers (``S3SigV4Auth``, ``S3SigV4QueryAuth``)
and by a real ``boto3`` S3 client whose ``before-send`` hook captures the prepared
request instead of sending it, so the exact bytes a boto3 user would put on the wire are
what ``verify_request`` sees.
"""

from __future__ import annotations

import calendar
import hashlib
import time
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, _host_from_url
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials

from frontend import sigv4
from frontend.errors import S3Error
from frontend.sigv4 import AuthResult, derive_signing_key, sign_headers, verify_request

try:  # boto3[crt]: botocore then signs with the AWS Common Runtime (aws-c-auth), a second implementation
    from botocore.crt.auth import CrtS3SigV4Auth, CrtS3SigV4QueryAuth
except ImportError:  # pragma: no cover - depends on the environment
    HEADER_SIGNERS: list = [S3SigV4Auth]
    QUERY_SIGNERS: list = [S3SigV4QueryAuth]
else:
    HEADER_SIGNERS = [S3SigV4Auth, CrtS3SigV4Auth]
    QUERY_SIGNERS = [S3SigV4QueryAuth, CrtS3SigV4QueryAuth]

ACCESS_KEY = "AKIDCAIRNTEST"
SECRET_KEY = "s3cr3t/K7MDENG+bPxRfiCY~EXAMPLEKEY"
KEYS = {ACCESS_KEY: SECRET_KEY, "OTHERKEY": "another-secret"}
CREDS = Credentials(ACCESS_KEY, SECRET_KEY)
ENDPOINT = "http://127.0.0.1:9000"

# The examples in AWS's S3 SigV4 documentation
DOC_KEY = "AKIAIOSFODNN7EXAMPLE"
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_NOW = calendar.timegm((2013, 5, 24, 0, 0, 0))
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def lookup(access_key: str) -> str | None:
    return KEYS.get(access_key)


def doc_lookup(access_key: str) -> str | None:
    return DOC_SECRET if access_key == DOC_KEY else None


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def split(request) -> tuple[str, bytes, bytes, list[tuple[str, str]]]:
    """An AWSRequest / AWSPreparedRequest as the ASGI app would see it."""
    parts = urlsplit(request.url)
    headers = [(name, _text(value)) for name, value in request.headers.items()]
    if not any(name.lower() == "host" for name, _ in headers):
        headers.append(("Host", _host_from_url(request.url)))  # what the HTTP client adds
    return request.method, parts.path.encode("ascii"), parts.query.encode("ascii"), headers


def sign(
    method: str,
    url: str,
    headers: dict | None = None,
    body: bytes = b"",
    creds: Credentials = CREDS,
    signer=S3SigV4Auth,
):
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=body)
    signer(creds, "s3", "us-east-1").add_auth(request)
    return split(request)


def presign(method: str, url: str, expires: int = 3600, headers: dict | None = None, signer=S3SigV4QueryAuth):
    request = AWSRequest(method=method, url=url, headers=headers or {})
    signer(CREDS, "s3", "us-east-1", expires=expires).add_auth(request)
    return split(request)


def verify(parts, now: float | None = None, secrets=lookup) -> AuthResult | None:
    method, path, query, headers = parts
    return verify_request(method, path, query, headers, secrets, now=now)


def expect_error(code: str, parts, now: float | None = None, secrets=lookup) -> S3Error:
    with pytest.raises(S3Error) as info:
        verify(parts, now=now, secrets=secrets)
    assert info.value.code == code, info.value
    return info.value


def key_url(bucket: str, key: str, query: str = "") -> str:
    # botocore's S3 serializer: quote the key with '/' and '~' left alone
    url = f"{ENDPOINT}/{bucket}/{quote(key.encode('utf-8'), safe='/~')}"
    return f"{url}?{query}" if query else url


def replace_header(headers: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n.lower() == name else v) for n, v in headers]


# ---------------------------------------------------------------------------
# a real boto3 client, its requests captured before they are sent
# ---------------------------------------------------------------------------


class _EmptyRaw:
    def stream(self, **kwargs):
        yield b""


def boto_client(endpoint: str = ENDPOINT):
    captured: list = []

    def before_send(request, **kwargs):
        captured.append(request)
        return AWSResponse(request.url, 200, {}, _EmptyRaw())

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    client.meta.events.register("before-send.s3", before_send)
    return client, captured


def captured_call(client, captured, operation: str, **params):
    before = len(captured)
    try:
        getattr(client, operation)(**params)
    except Exception:  # the empty fake response may not parse; the request is what matters
        pass
    assert len(captured) == before + 1, f"{operation} sent {len(captured) - before} requests"
    return captured[-1]


ODD_KEYS = [
    "plain.txt",
    "with space/and  two",
    "unicodé/ключ/中文",
    "plus+sign+",
    "tilde~and-under_score.dot",
    "100%pct%20literal",
    "../up/../x",
    "a//double//slash/",
    "./dot/./seg",
    "question?hash#amp&eq=",
    "*!'()$,;:@[]{}|^`\"<>\\",
    "trailing space ",
    "é",
]


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
        ("AWS {ak}:c2lnbmF0dXJl", "InvalidRequest"),  # SigV2
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


def test_sigv2_presigned_url_is_not_supported():
    expect_error("InvalidRequest", ("GET", b"/b/k", b"AWSAccessKeyId=AK&Expires=1&Signature=abc", [("Host", "h")]))


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
    for bad_expires in (b"604801", b"0", b"-5", b"abc", b"1e3", b"9" * 5000, b"%C2%B2"):
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
