"""Server-side AWS Signature Version 2 verification for S3 requests (pure, no I/O).

``sigv4.verify_request`` hands a request here when it carries either V2 form:

* the ``Authorization: AWS AKID:signature`` header (``verify_header``);
* a presigned URL with the ``AWSAccessKeyId``, ``Signature`` and ``Expires`` query
  parameters (``verify_query``), which is what boto3's ``generate_presigned_url`` still
  produces with a default client.

The signature is base64(HMAC-SHA1(secret, StringToSign)), where::

    StringToSign = VERB "\\n" Content-MD5 "\\n" Content-Type "\\n" Date "\\n"
                   CanonicalizedAmzHeaders CanonicalizedResource

* ``Date`` is the Date header, or empty when an ``x-amz-date`` header is present (as S3
  documents it; botocore signs the Date header there anyway, and S3's own DELETE example
  signs x-amz-date's value there and leaves it out of the headers: both are accepted);
  in the query form it is the ``Expires`` value (epoch seconds).
* ``CanonicalizedAmzHeaders``: every ``x-amz-*`` header, names lower-cased, values
  trimmed (folding whitespace unfolded), repeats joined by ``,``, sorted by name, each
  line ``name:value\\n``. In the query form ``x-amz-*``, ``Content-MD5`` and
  ``Content-Type`` may also come as query parameters (botocore puts them there).
* ``CanonicalizedResource``: ``/bucket`` when the bucket is named by a virtual-hosted
  Host (``BUCKET.DOMAIN`` for a configured domain, as ``frontend.app`` splits it), then
  the path exactly as sent (not decoded), then the S3 sub-resources present
  (``SUBRESOURCES`` and the ``response-*`` overrides), sorted by name, each with its
  decoded value if it has one: ``/b/k?acl``, ``/b/k?uploadId=2&partNumber=...``. The
  sub-resources S3 added after botocore's list was frozen (``retention``,
  ``legal-hold``...) are not in botocore's string to sign; a signature over botocore's
  resource is accepted as well, and so is ``/bucket/`` for a path-style ``/bucket``
  (what botocore signs for every bucket-level request).

V2 does not sign the Host header, so the verifier must split it exactly as the
frontend does: with ``domains`` unknown (None), only a Host that cannot name a bucket (an
IP address, localhost) is served, lest a signature for path-style ``/k`` be replayed as
``BUCKET.DOMAIN/k``.

The signature is compared in constant time with each candidate string to sign. Header
form: the Date (or x-amz-date) must be parseable (AccessDenied otherwise) and within 15
minutes of the server's clock (RequestTimeTooSkewed). Query form: past ``Expires`` the
request is refused (AccessDenied, "Request has expired"); there is no upper bound.
V2 signs no payload: the body is covered only by a Content-MD5 the request carries
(checked on upload), or an ``x-amz-content-sha256`` header, which V2 signs like any
``x-amz-*`` header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Callable
from urllib.parse import quote, unquote_to_bytes

from frontend.errors import S3Error
from frontend.names import virtual_host_bucket
from frontend.sigv4 import (
    MAX_SKEW_SECONDS,
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    UNSIGNED_PAYLOAD,
    AuthResult,
    _check_content_sha256,
    _format_amz_date,
    _parse_amz_date,
    _parse_http_date,
    _server_time,
)

ALGORITHM = "AWS"

# Query parameters that are part of the CanonicalizedResource (with their values).
SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "analytics", "attributes", "cors", "delete", "encryption", "intelligent-tiering",
        "inventory", "legal-hold", "lifecycle", "location", "logging", "metrics", "notification", "object-lock",
        "ownershipControls", "partNumber", "policy", "policyStatus", "publicAccessBlock", "replication",
        "requestPayment", "restore", "retention", "select", "select-type", "storageClass", "tagging", "torrent",
        "uploadId", "uploads", "versionId", "versioning", "versions", "website",
        "response-cache-control", "response-content-disposition", "response-content-encoding",
        "response-content-language", "response-content-type", "response-expires",
    }
)

# What botocore's HmacV1Auth signs (botocore.auth.HmacV1Auth.QSAOfInterest).
BOTOCORE_SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber", "policy",
        "requestPayment", "torrent", "versioning", "versionId", "versions", "website", "uploads", "uploadId",
        "response-content-type", "response-content-language", "response-expires", "response-cache-control",
        "response-content-disposition", "response-content-encoding", "delete", "lifecycle", "tagging", "restore",
        "storageClass", "notification", "replication", "analytics", "metrics", "inventory", "select",
        "select-type", "object-lock",
    }
)

QUERY_PARAMETERS = ("AWSAccessKeyId", "Signature", "Expires")
_FOLD_RE = re.compile(r"\s*\r?\n\s*")
_HEADER_INVALID = "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature"


# ---------------------------------------------------------------------------
# string to sign
# ---------------------------------------------------------------------------


def _split_query(query_string: bytes) -> list[tuple[str, str | None]]:
    """[(name, decoded value or None when the part has no '=')] in request order."""
    pairs: list[tuple[str, str | None]] = []
    for part in query_string.split(b"&"):
        if not part:
            continue
        name, sep, value = part.partition(b"=")
        decoded_name = unquote_to_bytes(name).decode("utf-8", "replace")
        pairs.append((decoded_name, unquote_to_bytes(value).decode("utf-8", "replace") if sep else None))
    return pairs


def canonical_resource(
    raw_path: bytes,
    query_string: bytes,
    bucket: str | None = None,
    subresources: frozenset[str] = SUBRESOURCES,
    empty_values: bool = False,
) -> str:
    """``[/bucket]`` + the path as sent + ``?``-joined sub-resources sorted by name.

    ``bucket`` is the virtual-hosted bucket (the path is then all key). A sub-resource
    with an empty value is written bare (``acl``), unless ``empty_values`` keeps the
    ``=`` of one sent as ``acl=`` (botocore signs what it sends)."""
    path = (raw_path or b"/").split(b"?", 1)[0].decode("latin-1")
    if bucket is not None:
        path = "/" + bucket + path
    chosen = [(n, v) for n, v in _split_query(query_string) if n in subresources]
    if not chosen:
        return path
    chosen.sort(key=lambda item: item[0])
    parts = []
    for name, value in chosen:
        if value is None or (value == "" and not empty_values):
            parts.append(name)
        else:
            parts.append(f"{name}={value}")
    return path + "?" + "&".join(parts)


def canonical_amz_headers(amz: dict[str, list[str]]) -> str:
    """``name:v1,v2\\n`` for every ``x-amz-*`` header, sorted by (lower-case) name."""
    lines = []
    for name in sorted(amz):
        value = ",".join(_FOLD_RE.sub(" ", v.strip()) for v in amz[name])
        lines.append(f"{name}:{value}\n")
    return "".join(lines)


def string_to_sign(
    method: str, content_md5: str, content_type: str, date: str, amz: dict[str, list[str]], resource: str
) -> bytes:
    text = "\n".join((method.upper(), content_md5.strip(), content_type.strip(), date.strip(), ""))
    return (text + canonical_amz_headers(amz) + resource).encode("utf-8")


def sign(secret: str, sts: bytes) -> str:
    """base64(HMAC-SHA1(secret, StringToSign))."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), sts, hashlib.sha1).digest()).decode("ascii")


# ---------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------


def _amz_headers(header_map: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: values for name, values in header_map.items() if name.startswith("x-amz-")}


def _first(header_map: dict[str, list[str]], name: str) -> str:
    values = header_map.get(name)
    return values[0] if values else ""


def _names_no_bucket(host: str) -> bool:
    """An IP literal or localhost: a Host no virtual-hosted domain can match."""
    if host.startswith("["):
        return True
    name = host.rsplit(":", 1)[0] if host.count(":") <= 1 else host
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name.lower() == "localhost"
    return True


def _resources(raw_path: bytes, query_string: bytes, header_map: dict[str, list[str]],
               domains: tuple[str, ...] | None) -> list[str]:
    host = _first(header_map, "host").strip()
    if domains is None and not _names_no_bucket(host):
        # V2 does not sign the Host: which bucket it names must be known (see module doc)
        raise S3Error("InvalidRequest",
                      "Signature Version 2 is not enabled on this endpoint. Please use AWS4-HMAC-SHA256.")
    bucket = virtual_host_bucket(host, domains) if domains else None
    paths = [raw_path]
    path = (raw_path or b"/").split(b"?", 1)[0]
    if bucket is None and path.count(b"/") == 1 and len(path) > 1:  # path-style /bucket: botocore signs /bucket/
        paths.append(path + b"/")
    resources: list[str] = []
    for p in paths:
        for resource in (canonical_resource(p, query_string, bucket),
                         canonical_resource(p, query_string, bucket, BOTOCORE_SUBRESOURCES, empty_values=True)):
            if resource not in resources:
                resources.append(resource)
    return resources


def _match(
    access_key: str,
    secret: str,
    signature: str,
    method: str,
    content_md5: str,
    content_type: str,
    variants: list[tuple[str, dict[str, list[str]]]],
    resources: list[str],
) -> None:
    """SignatureDoesNotMatch unless some (Date line, x-amz-* headers) variant with some
    resource gives ``signature``; every candidate is computed and compared in constant time."""
    provided = signature.encode("ascii", "replace")
    first = b""
    matched = False
    for date, amz in variants:
        for resource in resources:
            sts = string_to_sign(method, content_md5, content_type, date, amz, resource)
            first = first or sts
            matched |= hmac.compare_digest(sign(secret, sts).encode("ascii"), provided)
    if not matched:
        raise S3Error(
            "SignatureDoesNotMatch",
            AWSAccessKeyId=access_key,
            StringToSign=first.decode("utf-8", "replace"),
            SignatureProvided=signature,
            StringToSignBytes=" ".join(f"{b:02x}" for b in first),
        )


def _payload(amz: dict[str, list[str]]) -> str:
    values = amz.get("x-amz-content-sha256")
    if not values:
        return UNSIGNED_PAYLOAD
    value = _check_content_sha256(values[0].strip())
    if value in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER):
        raise S3Error("InvalidRequest", f"x-amz-content-sha256 {value} requires AWS4-HMAC-SHA256 authentication")
    return value


def _lookup(access_key: str, lookup_secret: Callable[[str], str | None]) -> str:
    secret = lookup_secret(access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key)
    return secret


def parse_authorization(authorization: str) -> tuple[str, str]:
    """``AWS AKID:signature`` -> (AKID, signature); InvalidArgument when malformed."""
    scheme, _, credentials = authorization.strip().partition(" ")
    access_key, sep, signature = credentials.strip().rpartition(":")
    if scheme != ALGORITHM or not sep or not access_key.strip() or not signature.strip():
        raise S3Error("InvalidArgument", _HEADER_INVALID, ArgumentName="Authorization", ArgumentValue=authorization)
    return access_key.strip(), signature.strip()


def _request_time(header_map: dict[str, list[str]]) -> tuple[float | None, str]:
    """(epoch seconds or None, the value) of x-amz-date if present, else of Date."""
    name = "x-amz-date" if "x-amz-date" in header_map else "date"
    value = _first(header_map, name).strip()
    timestamp = _parse_http_date(value) if value else None
    if timestamp is None and value:
        timestamp = _parse_amz_date(value)
    if timestamp is not None and timestamp < 0:  # before the epoch: not a date S3 takes
        timestamp = None
    return timestamp, value


def verify_header(
    method: str,
    raw_path: bytes,
    query_string: bytes,
    header_map: dict[str, list[str]],
    authorization: str,
    lookup_secret: Callable[[str], str | None],
    now: float,
    domains: tuple[str, ...] | None = (),
) -> AuthResult:
    """Verify ``Authorization: AWS AKID:signature`` (``header_map``: lower-case names).

    ``domains``: the frontend's virtual-hosted domains; None (not known) serves only
    requests whose Host is an IP address or localhost."""
    access_key, signature = parse_authorization(authorization)
    secret = _lookup(access_key, lookup_secret)
    timestamp, value = _request_time(header_map)
    if timestamp is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    if abs(now - timestamp) > MAX_SKEW_SECONDS:
        raise S3Error(
            "RequestTimeTooSkewed",
            RequestTime=value,
            ServerTime=_server_time(now),
            MaxAllowedSkewMilliseconds=MAX_SKEW_SECONDS * 1000,
        )
    amz = _amz_headers(header_map)
    payload = _payload(amz)
    variants = [(_first(header_map, "date"), amz)]
    if "x-amz-date" in header_map:
        # S3's rule: the Date line is empty. botocore signs the Date header there anyway;
        # S3's own DELETE example puts x-amz-date's value there, and not among the headers.
        others = {name: v for name, v in amz.items() if name != "x-amz-date"}
        variants = [("", amz), (value, others)] + ([variants[0]] if variants[0][0] else [])
    _match(access_key, secret, signature, method, _first(header_map, "content-md5"),
           _first(header_map, "content-type"), variants, _resources(raw_path, query_string, header_map, domains))
    return AuthResult(access_key, b"", signature, _format_amz_date(timestamp), "", payload)


def verify_query(
    method: str,
    raw_path: bytes,
    query_string: bytes,
    header_map: dict[str, list[str]],
    params: dict[str, list[str]],
    lookup_secret: Callable[[str], str | None],
    now: float,
    domains: tuple[str, ...] | None = (),
) -> AuthResult:
    """Verify a V2 presigned URL (``params``: the decoded query parameters); ``domains``
    as for ``verify_header``."""
    values = [params.get(name) or [] for name in QUERY_PARAMETERS]
    if any(len(v) != 1 or not v[0] for v in values):
        raise S3Error(
            "AccessDenied", "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"
        )
    access_key, signature, expires_text = (v[0] for v in values)
    secret = _lookup(access_key, lookup_secret)
    expires_text = expires_text.strip()
    if not expires_text.isascii() or not expires_text.isdigit() or len(expires_text) > 12:
        raise S3Error("AccessDenied", "Invalid date (should be seconds since epoch): " + expires_text)
    expires = int(expires_text)
    if now > expires:
        raise S3Error("AccessDenied", "Request has expired", Expires=_server_time(expires),
                      ServerTime=_server_time(now))
    # botocore moves x-amz-*, Content-MD5 and Content-Type into the query string
    amz = _amz_headers(header_map)
    for name, value in _split_query(query_string):
        lower = name.lower()
        if lower.startswith("x-amz-") and value is not None:
            amz.setdefault(lower, []).append(value)
    query_values = {n.lower(): v for n, v in _split_query(query_string) if v is not None}
    content_md5 = _first(header_map, "content-md5") or query_values.get("content-md5", "")
    content_type = _first(header_map, "content-type") or query_values.get("content-type", "")
    payload = _payload(amz)
    _match(access_key, secret, signature, method, content_md5, content_type, [(expires_text, amz)],
           _resources(raw_path, query_string, header_map, domains))
    return AuthResult(access_key, b"", signature, _format_amz_date(now), "", payload, presigned=True)


# ---------------------------------------------------------------------------
# client side (tests, internal tools)
# ---------------------------------------------------------------------------


def sign_headers(
    method: str,
    raw_path: bytes,
    query_string: bytes,
    headers: list[tuple[str, str]],
    access_key: str,
    secret: str,
    date: str | None = None,
) -> list[tuple[str, str]]:
    """Return ``headers`` plus Date (unless given or x-amz-date is) and a V2 Authorization."""
    out = [(n, v) for n, v in headers if n.lower() != "authorization"]
    names = {n.lower() for n, _ in out}
    if "date" not in names and "x-amz-date" not in names:
        out.append(("date", date or time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())))
    header_map: dict[str, list[str]] = {}
    for name, value in out:
        header_map.setdefault(name.lower(), []).append(value)
    date_line = "" if "x-amz-date" in header_map else _first(header_map, "date")
    sts = string_to_sign(method, _first(header_map, "content-md5"), _first(header_map, "content-type"), date_line,
                         _amz_headers(header_map), canonical_resource(raw_path, query_string))
    out.append(("authorization", f"{ALGORITHM} {access_key}:{sign(secret, sts)}"))
    return out


def presign_query(method: str, raw_path: bytes, query_string: bytes, access_key: str, secret: str,
                  expires: int) -> bytes:
    """The query string of a V2 presigned URL for ``raw_path`` valid until ``expires`` (epoch)."""
    sts = string_to_sign(method, "", "", str(expires), {}, canonical_resource(raw_path, query_string))
    extra = f"AWSAccessKeyId={quote(access_key, safe='')}&Expires={expires}&Signature={quote(sign(secret, sts), safe='')}"
    return (query_string + b"&" if query_string else b"") + extra.encode("ascii")
