"""What the SigV4 tests share: botocore's signers (and the CRT's, with boto3[crt]), the
test keys, AWS's documented example key, and a real boto3 S3 client whose ``before-send``
hook captures the prepared request instead of sending it, so the exact bytes a boto3
user would put on the wire are what ``verify_request`` sees.
"""

from __future__ import annotations

import calendar
import hashlib
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, _host_from_url
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials

from frontend.errors import S3Error
from frontend.sigv4 import AuthResult, verify_request

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


def boto_client(endpoint: str = ENDPOINT, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):
    captured: list = []

    def before_send(request, **kwargs):
        captured.append(request)
        return AWSResponse(request.url, 200, {}, _EmptyRaw())

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
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
