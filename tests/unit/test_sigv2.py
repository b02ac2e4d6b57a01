"""AWS Signature Version 2 (frontend.sigv2) through sigv4.verify_request, the hook that
chooses the scheme: AWS's documented examples, botocore's signers, dates, expiry and the
CanonicalizedResource's sub-resources."""

from __future__ import annotations

import calendar
import time
from email.utils import formatdate
from urllib.parse import urlsplit

import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from frontend import sigv2
from frontend.errors import S3Error
from frontend.iam import requested_access_key
from frontend.sigv4 import AuthResult, verify_request

# The credentials of AWS's Signature Version 2 examples (RESTAuthentication.html).
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ACCESS_KEY, SECRET_KEY = "AKIDCAIRNTEST", "cairn-test-secret"
SECRETS = {AWS_KEY: AWS_SECRET, ACCESS_KEY: SECRET_KEY}
DOMAINS = ("s3.amazonaws.com",)


def epoch(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%a, %d %b %Y %H:%M:%S +0000")))


def verify(method: str, path: bytes, query: bytes, headers: list[tuple[str, str]], now: float | None = None,
           domains: tuple[str, ...] = ()) -> AuthResult | None:
    return verify_request(method, path, query, headers, SECRETS.get, now=now, region="us-east-1", domains=domains)


def error(code: str, *args, **kwargs) -> S3Error:
    with pytest.raises(S3Error) as info:
        verify(*args, **kwargs)
    assert info.value.code == code, info.value
    return info.value


# ---------------------------------------------------------------------------
# AWS's examples: the string to sign and its signature
# ---------------------------------------------------------------------------

AWS_EXAMPLES = [
    # (verb, Content-MD5, Content-Type, Date line, x-amz-* headers, resource, signature)
    ("GET", "", "", "Tue, 27 Mar 2007 19:36:42 +0000", {}, "/johnsmith/photos/puppy.jpg",
     "bWq2s1WEIj+Ydj0vQ697zp+IXMU="),
    ("PUT", "", "image/jpeg", "Tue, 27 Mar 2007 21:15:45 +0000", {}, "/johnsmith/photos/puppy.jpg",
     "MyyxeRY7whkBe+bq8fHCL/2kKUg="),
    ("GET", "", "", "Tue, 27 Mar 2007 19:42:41 +0000", {}, "/johnsmith/", "htDYFYduRNen8P9ZfE/s9SuKy0U="),
    ("GET", "", "", "Tue, 27 Mar 2007 19:44:46 +0000", {}, "/johnsmith/?acl", "c2WLPFtWHVgbEmeEG93a4cG37dM="),
    ("DELETE", "", "", "Tue, 27 Mar 2007 21:20:26 +0000", {}, "/johnsmith/photos/puppy.jpg",
     "lx3byBScXR6KzyMaifNkardMwNk="),
    ("PUT", "4gJE4saaMU4BqNR0kLY+lw==", "application/x-download", "Tue, 27 Mar 2007 21:06:08 +0000",
     {"x-amz-acl": ["public-read"], "x-amz-meta-reviewedby": ["joe@johnsmith.net", "jane@johnsmith.net"],
      "x-amz-meta-filechecksum": ["0x02661779"], "x-amz-meta-checksumalgorithm": ["crc32"]},
     "/static.johnsmith.net/db-backup.dat.gz", "ilyl83RwaSoYIEdixDQcA4OnAnc="),
    ("GET", "", "", "Wed, 28 Mar 2007 01:29:59 +0000", {}, "/", "qGdzdERIC03wnaRNKh6OqZehG9s="),
    ("GET", "", "", "Wed, 28 Mar 2007 01:49:49 +0000", {}, "/dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re",
     "DNEZGsoieTZ92F3bUfSPQcbGmlM="),
    ("GET", "", "", "1175139620", {}, "/johnsmith/photos/puppy.jpg", "NpgCjnDzrM+WFzoENXmpNDUsSn8="),  # query form
]


@pytest.mark.parametrize("example", AWS_EXAMPLES, ids=lambda e: f"{e[0]} {e[5]}")
def test_aws_examples(example):
    method, md5, ctype, date, amz, resource, signature = example
    assert sigv2.sign(AWS_SECRET, sigv2.string_to_sign(method, md5, ctype, date, amz, resource)) == signature


def test_aws_upload_example_string_to_sign():
    amz = AWS_EXAMPLES[5][4]
    sts = sigv2.string_to_sign("PUT", "4gJE4saaMU4BqNR0kLY+lw==", "application/x-download",
                               "Tue, 27 Mar 2007 21:06:08 +0000", amz, "/static.johnsmith.net/db-backup.dat.gz")
    assert sts == (b"PUT\n4gJE4saaMU4BqNR0kLY+lw==\napplication/x-download\nTue, 27 Mar 2007 21:06:08 +0000\n"
                   b"x-amz-acl:public-read\nx-amz-meta-checksumalgorithm:crc32\nx-amz-meta-filechecksum:0x02661779\n"
                   b"x-amz-meta-reviewedby:joe@johnsmith.net,jane@johnsmith.net\n/static.johnsmith.net/db-backup.dat.gz")


def test_aws_get_example_virtual_hosted_and_path_style():
    date = "Tue, 27 Mar 2007 19:36:42 +0000"
    auth = f"AWS {AWS_KEY}:bWq2s1WEIj+Ydj0vQ697zp+IXMU="
    headers = [("Host", "johnsmith.s3.amazonaws.com"), ("Date", date), ("Authorization", auth)]
    result = verify("GET", b"/photos/puppy.jpg", b"", headers, now=epoch(date), domains=DOMAINS)
    assert result is not None and result.access_key == AWS_KEY and not result.presigned
    assert result.content_sha256 == "UNSIGNED-PAYLOAD" and result.amz_date == "20070327T193642Z"
    path_style = [("Host", "s3.amazonaws.com"), ("Date", date), ("Authorization", auth)]
    assert verify("GET", b"/johnsmith/photos/puppy.jpg", b"", path_style, now=epoch(date), domains=DOMAINS)
    # without the domain configured, the Host names no bucket: the resource is /photos/puppy.jpg
    error("SignatureDoesNotMatch", "GET", b"/photos/puppy.jpg", b"", headers, now=epoch(date))


def test_aws_list_example_ignores_plain_query_parameters():
    date = "Tue, 27 Mar 2007 19:42:41 +0000"
    headers = [("Host", "johnsmith.s3.amazonaws.com"), ("Date", date), ("User-Agent", "Mozilla/5.0"),
               ("Authorization", f"AWS {AWS_KEY}:htDYFYduRNen8P9ZfE/s9SuKy0U=")]
    assert verify("GET", b"/", b"prefix=photos&max-keys=50&marker=puppy", headers, now=epoch(date), domains=DOMAINS)


def test_aws_delete_example_with_x_amz_date():
    date = "Tue, 27 Mar 2007 21:20:26 +0000"
    headers = [("Host", "s3.amazonaws.com"), ("Date", "Tue, 27 Mar 2007 21:20:27 +0000"), ("x-amz-date", date),
               ("Authorization", f"AWS {AWS_KEY}:lx3byBScXR6KzyMaifNkardMwNk=")]
    assert verify("DELETE", b"/johnsmith/photos/puppy.jpg", b"", headers, now=epoch(date))


def test_aws_query_string_example_and_expiry():
    query = (b"AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620")
    headers = [("Host", "johnsmith.s3.amazonaws.com")]
    result = verify("GET", b"/photos/puppy.jpg", query, headers, now=1175139620 - 3600, domains=DOMAINS)
    assert result is not None and result.presigned and result.access_key == AWS_KEY
    assert verify("GET", b"/photos/puppy.jpg", query, headers, now=1175139620, domains=DOMAINS)
    expired = error("AccessDenied", "GET", b"/photos/puppy.jpg", query, headers, now=1175139621, domains=DOMAINS)
    assert expired.message == "Request has expired"
    # the signature covers Expires
    later = query.replace(b"1175139620", b"1175139999")
    error("SignatureDoesNotMatch", "GET", b"/photos/puppy.jpg", later, headers, now=1175139000, domains=DOMAINS)


# ---------------------------------------------------------------------------
# header form: dates, malformed headers, keys
# ---------------------------------------------------------------------------


def signed(method: str = "PUT", path: bytes = b"/b/k", query: bytes = b"", extra: list | None = None,
           date: str | None = None, secret: str = SECRET_KEY) -> list[tuple[str, str]]:
    headers = [("Host", "127.0.0.1:9000"), *(extra or [])]
    return sigv2.sign_headers(method, path, query, headers, ACCESS_KEY, secret, date=date)


def http_date(offset: float = 0.0) -> str:
    return formatdate(time.time() + offset, usegmt=True)


def test_signed_request_and_wrong_secret():
    result = verify("PUT", b"/b/k", b"", signed(extra=[("Content-Type", "text/plain"), ("x-amz-meta-a", " 1 ")]))
    assert result is not None and result.access_key == ACCESS_KEY and result.signing_key == b""
    bad = error("SignatureDoesNotMatch", "PUT", b"/b/k", b"", signed(secret="not-the-secret"))
    assert bad.fields["StringToSign"].startswith("PUT\n\n\n")
    # the verb, the path, a sub-resource and every x-amz-* header are signed
    headers = signed()
    error("SignatureDoesNotMatch", "GET", b"/b/k", b"", headers)
    error("SignatureDoesNotMatch", "PUT", b"/b/other", b"", headers)
    error("SignatureDoesNotMatch", "PUT", b"/b/k", b"acl", headers)
    error("SignatureDoesNotMatch", "PUT", b"/b/k", b"", [*headers, ("x-amz-acl", "public-read")])
    error("SignatureDoesNotMatch", "PUT", b"/b/k", b"", [*headers, ("Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg==")])


def test_unknown_key_and_malformed_header():
    headers = [("Host", "h"), ("Date", http_date()), ("Authorization", "AWS NOSUCHKEY:c2lnbmF0dXJl")]
    assert error("InvalidAccessKeyId", "GET", b"/b", b"", headers).fields["AWSAccessKeyId"] == "NOSUCHKEY"
    for value in ("AWS HAHAHA", "AWS :sig", f"AWS {ACCESS_KEY}:", "AWS"):
        error("InvalidArgument", "GET", b"/b", b"", [("Host", "h"), ("Date", http_date()), ("Authorization", value)])


@pytest.mark.parametrize(
    "extra, code",
    [
        ([("x-amz-date", "Bad Date")], "AccessDenied"),
        ([("x-amz-date", "")], "AccessDenied"),
        ([("x-amz-date", "Tue, 07 Jul 1950 21:53:04 GMT")], "AccessDenied"),  # before the epoch
        ([("x-amz-date", "Tue, 07 Jul 2010 21:53:04 GMT")], "RequestTimeTooSkewed"),
        ([("x-amz-date", "Tue, 07 Jul 9999 21:53:04 GMT")], "RequestTimeTooSkewed"),
    ],
)
def test_bad_x_amz_date(extra, code):
    # as botocore sends it: a valid Date header, and the x-amz-date added (and signed)
    err = error(code, "PUT", b"/b/k", b"", signed(extra=extra))
    if code == "RequestTimeTooSkewed":
        assert err.fields["MaxAllowedSkewMilliseconds"] == 900000


def test_date_skew_limits():
    assert verify("GET", b"/b/k", b"", signed("GET", date=http_date(-14 * 60)))
    assert verify("GET", b"/b/k", b"", signed("GET", date=http_date(14 * 60)))
    error("RequestTimeTooSkewed", "GET", b"/b/k", b"", signed("GET", date=http_date(-16 * 60)))
    error("RequestTimeTooSkewed", "GET", b"/b/k", b"", signed("GET", date=http_date(16 * 60)))
    no_date = [(n, v) for n, v in signed("GET") if n != "date"]
    error("AccessDenied", "GET", b"/b/k", b"", no_date)
    error("AccessDenied", "GET", b"/b/k", b"", signed("GET", date="yesterday"))


def test_x_amz_date_signed_with_an_empty_date_line():
    # S3's rule: with x-amz-date present the Date line is empty (and the header is ignored)
    headers = signed("GET", extra=[("x-amz-date", http_date())])
    assert [n for n, _ in headers].count("date") == 0
    assert verify("GET", b"/b/k", b"", [*headers, ("Date", "Sat, 01 Jan 2000 00:00:00 GMT")])


def test_payload_hash_header_is_honoured():
    digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    result = verify("PUT", b"/b/k", b"", signed(extra=[("x-amz-content-sha256", digest.upper())]))
    assert result is not None and result.content_sha256 == digest
    error("InvalidRequest", "PUT", b"/b/k", b"",
          signed(extra=[("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")]))
    error("InvalidArgument", "PUT", b"/b/k", b"", signed(extra=[("x-amz-content-sha256", "nope")]))


def test_header_and_query_together_refused():
    query = b"AWSAccessKeyId=AKIDCAIRNTEST&Expires=1&Signature=abc"
    error("InvalidArgument", "GET", b"/b/k", query, signed("GET", query=query))


# ---------------------------------------------------------------------------
# CanonicalizedResource
# ---------------------------------------------------------------------------


def test_canonical_resource_subresources():
    cr = sigv2.canonical_resource
    assert cr(b"/b/k", b"") == "/b/k"
    assert cr(b"", b"") == "/"
    assert cr(b"/b/k", b"uploadId=2~x&partNumber=3&foo=bar&acl") == "/b/k?acl&partNumber=3&uploadId=2~x"
    assert cr(b"/b", b"versioning") == "/b?versioning"
    assert cr(b"/b", b"uploads&prefix=a&max-uploads=2") == "/b?uploads"
    assert cr(b"/b", b"delete=") == "/b?delete"
    assert cr(b"/b", b"delete=", subresources=sigv2.BOTOCORE_SUBRESOURCES, empty_values=True) == "/b?delete="
    # values decoded, names case-sensitive, sorted by name
    assert (cr(b"/b/k", b"response-content-type=text%2Fplain&versionId=v%201&Acl")
            == "/b/k?response-content-type=text/plain&versionId=v 1")
    for name in ("retention", "legal-hold", "object-lock", "tagging", "cors", "lifecycle", "publicAccessBlock",
                 "ownershipControls", "attributes", "encryption", "replication", "policy", "location", "website"):
        assert cr(b"/b", name.encode()) == f"/b?{name}"
    # the path as sent, not decoded or re-encoded; a virtual-hosted bucket is prepended
    assert cr(b"/b/a%2Fb%20c", b"") == "/b/a%2Fb%20c"
    assert cr(b"/k", b"acl", bucket="vb") == "/vb/k?acl"
    assert sigv2.virtual_host_bucket("vb.s3.example:9000", ("s3.example",)) == "vb"
    assert sigv2.virtual_host_bucket("127.0.0.1:9000", ("s3.example",)) is None


def test_sub_resources_are_signed():
    headers = signed("GET", query=b"acl")
    assert verify("GET", b"/b/k", b"acl", headers)
    assert verify("GET", b"/b/k", b"acl&max-keys=3", headers)  # not a sub-resource: unsigned
    error("SignatureDoesNotMatch", "GET", b"/b/k", b"tagging", headers)
    error("SignatureDoesNotMatch", "GET", b"/b/k", b"acl&versionId=x", headers)


def test_botocore_resource_accepted_for_later_sub_resources():
    # botocore's list has no 'retention': its signature covers /b/k alone
    headers = signed("PUT")
    assert verify("PUT", b"/b/k", b"retention", headers)
    assert verify("PUT", b"/b/k", b"retention", signed("PUT", query=b"retention"))


# ---------------------------------------------------------------------------
# botocore's own signers
# ---------------------------------------------------------------------------


def botocore_request(signer, method: str, url: str, headers: dict | None = None) -> tuple[str, bytes, bytes, list]:
    request = AWSRequest(method, url, headers=headers or {})
    signer.add_auth(request)
    parts = urlsplit(request.url)
    host = [("Host", parts.netloc)]
    return method, parts.path.encode(), parts.query.encode(), host + [(k, v) for k, v in request.headers.items()]


def test_botocore_header_signer():
    signer = HmacV1Auth(Credentials(ACCESS_KEY, SECRET_KEY))
    url = "http://127.0.0.1:9000/bkt/some%20key?uploadId=abc&partNumber=2"
    assert verify(*botocore_request(signer, "PUT", url, {"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="}))
    assert verify(*botocore_request(signer, "POST", "http://127.0.0.1:9000/bkt?delete", {"x-amz-meta-x": "y"}))
    # botocore signs the Date header even beside x-amz-date: accepted
    assert verify(*botocore_request(signer, "GET", "http://127.0.0.1:9000/bkt", {"x-amz-date": http_date()}))


def test_botocore_presigned_urls():
    signer = HmacV1QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY), expires=60)
    method, path, query, headers = botocore_request(signer, "GET", "http://127.0.0.1:9000/bkt/k?versionId=v1")
    result = verify(method, path, query, headers[:1])
    assert result is not None and result.presigned
    # Content-Type and x-amz-* go into the query string; the PUT need not send them
    method, path, query, headers = botocore_request(
        signer, "PUT", "http://127.0.0.1:9000/bkt/k", {"Content-Type": "text/plain", "x-amz-acl": "private"})
    assert b"content-type=text%2Fplain" in query and b"x-amz-acl=private" in query
    assert verify(method, path, query, headers[:1])
    assert verify(method, path, query, [*headers[:1], ("Content-Type", "text/plain")])
    error("SignatureDoesNotMatch", method, path, query, [*headers[:1], ("Content-Type", "text/html")])
    error("AccessDenied", method, path, query, headers[:1], now=time.time() + 61)


def test_presigned_parameters_required():
    for query in (b"AWSAccessKeyId=AKIDCAIRNTEST&Signature=abc", b"Signature=abc&Expires=99999999999",
                  b"AWSAccessKeyId=AKIDCAIRNTEST&Signature=abc&Expires=soon"):
        error("AccessDenied", "GET", b"/b/k", query, [("Host", "h")])
    error("InvalidAccessKeyId", "GET", b"/b/k", b"AWSAccessKeyId=NOPE&Signature=abc&Expires=99999999999",
          [("Host", "h")])
    presigned = sigv2.presign_query("GET", b"/b/k", b"", ACCESS_KEY, SECRET_KEY, int(time.time()) + 30)
    assert verify("GET", b"/b/k", presigned, [("Host", "h")])


def test_requested_access_key():
    assert requested_access_key([("Authorization", "AWS AKID1:c2ln")], b"") == "AKID1"
    assert requested_access_key([("authorization", "AWS HAHAHA")], b"") is None
    assert requested_access_key([], b"Expires=1&AWSAccessKeyId=AK%2BID&Signature=x") == "AK+ID"
    assert requested_access_key([("Authorization", "AWS4-HMAC-SHA256 Credential=AK4/2026/x")], b"") == "AK4"


def test_path_style_bucket_signed_with_trailing_slash():
    # botocore signs /bkt/ for PUT /bkt (CreateBucket, ?versioning, ...)
    assert verify("PUT", b"/bkt", b"", signed("PUT", path=b"/bkt/"))
    assert verify("PUT", b"/bkt", b"versioning", signed("PUT", path=b"/bkt/", query=b"versioning"))
    assert verify("PUT", b"/bkt", b"", signed("PUT", path=b"/bkt"))
    error("SignatureDoesNotMatch", "PUT", b"/bkt/k", b"", signed("PUT", path=b"/bkt/k/"))
    signer = HmacV1Auth(Credentials(ACCESS_KEY, SECRET_KEY))
    request = AWSRequest("PUT", "http://127.0.0.1:9000/bkt")
    request.auth_path = "/bkt/"
    signer.add_auth(request)
    assert verify("PUT", b"/bkt", b"", [("Host", "127.0.0.1:9000"), *request.headers.items()])


def test_unknown_domains_serve_only_hosts_that_name_no_bucket():
    # V2 does not sign the Host: without the frontend's domains, vb.example/k could be a
    # replay of a signature for path-style /k
    def unknown(host: str):
        headers = [(n, v) for n, v in signed("GET", path=b"/k") if n.lower() != "host"] + [("Host", host)]
        return verify_request("GET", b"/k", b"", headers, SECRETS.get, domains=None)

    for host in ("127.0.0.1:9000", "127.0.0.1", "[::1]:9000", "localhost:9000", "::1"):
        assert unknown(host) is not None, host
    with pytest.raises(S3Error) as info:
        unknown("vb.example.com")
    assert info.value.code == "InvalidRequest"
    assert verify("GET", b"/k", b"", [*signed("GET", path=b"/k")[1:], ("Host", "vb.example.com")])  # domains ()
