"""Server-side AWS Signature Version 4 verification for S3 requests (pure, no I/O).

``verify_request`` checks either form AWS S3 accepts:

* the ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``
  header, with the payload hash taken from ``x-amz-content-sha256`` (required);
* a presigned URL (``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
  ``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature`` query parameters), whose
  payload hash is ``UNSIGNED-PAYLOAD`` (or the ``X-Amz-Content-Sha256`` query parameter
  when the signer put one there).

The canonical request is built the way S3 does it: the path is percent-decoded once and
re-encoded (every byte but ``A-Za-z0-9-_.~`` and ``/``), without normalising ``.``,
``..`` or ``//`` segments; query names and values likewise (``/`` encoded too, ``+`` is a
literal plus), sorted; the signed headers lower-cased, trimmed, inner whitespace runs
collapsed, repeats joined by ``,``.

Header values are taken as text decoded from the wire as latin-1 (what ASGI servers
give); they are re-encoded as latin-1 so the signature covers the bytes on the wire.

As S3 does, every ``x-amz-*`` header present must be signed (``x-amz-content-sha256``
excepted), otherwise AccessDenied with ``HeadersNotSigned``; ``host`` must be signed.

``verify_request`` is also where the scheme is chosen: ``Authorization: AWS AKID:sig``
and presigned URLs with ``AWSAccessKeyId``/``Signature``/``Expires`` are Signature
Version 2, verified by ``frontend.sigv2`` and answered with the same ``AuthResult``
(no signing key or scope; the payload unsigned).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_tz
from urllib.parse import quote_from_bytes, unquote_to_bytes

from frontend.errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_SECONDS = 15 * 60
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600  # 604800

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_UNSIGNED_PAYLOAD_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
PAYLOAD_CONSTANTS = frozenset(
    {UNSIGNED_PAYLOAD, STREAMING_UNSIGNED_PAYLOAD_TRAILER, STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER}
)

# AWS answers malformed presigned-URL parameters with AuthorizationQueryParametersError.
_QUERY_ERROR = "AuthorizationQueryParametersError"

_AMZ_DATE_RE = re.compile(r"\d{8}T\d{6}Z\Z")
_SHORT_DATE_RE = re.compile(r"\d{8}\Z")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}\Z")


@dataclass(frozen=True)
class AuthResult:
    access_key: str
    signing_key: bytes = field(repr=False)  # HMAC key derived from secret/date/region/service
    seed_signature: str  # the request signature (hex), seeds aws-chunked chunk signatures
    amz_date: str  # e.g. 20261125T101500Z
    scope: str  # "20261125/us-east-1/s3/aws4_request"
    content_sha256: str  # x-amz-content-sha256: lower-case hex digest, UNSIGNED-PAYLOAD or STREAMING-...
    presigned: bool = False  # True for query-string (presigned URL) authentication


# ---------------------------------------------------------------------------
# signing key derivation, cached
# ---------------------------------------------------------------------------

_KEY_CACHE: dict[tuple[str, str, str, str], bytes] = {}
_KEY_CACHE_MAX = 256


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def derive_signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    cache_key = (secret, date, region, service)
    key = _KEY_CACHE.get(cache_key)
    if key is None:
        k_date = _hmac(("AWS4" + secret).encode("utf-8"), date.encode("utf-8"))
        k_region = _hmac(k_date, region.encode("utf-8"))
        k_service = _hmac(k_region, service.encode("utf-8"))
        key = _hmac(k_service, b"aws4_request")
        if len(_KEY_CACHE) >= _KEY_CACHE_MAX:
            _KEY_CACHE.pop(next(iter(_KEY_CACHE)))  # the oldest entry
        _KEY_CACHE[cache_key] = key
    return key


# ---------------------------------------------------------------------------
# canonical request pieces
# ---------------------------------------------------------------------------


def canonical_uri(raw_path: bytes) -> str:
    """S3's canonical URI: decode once, encode every byte but unreserved and '/'."""
    return quote_from_bytes(unquote_to_bytes(raw_path or b"/"), safe="/")


def canonical_query(query_string: bytes, exclude: bytes | None = None) -> str:
    """Decode each name/value ('+' is literal), re-encode ('/' too), sort, join with '&'."""
    pairs = []
    for part in query_string.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        raw_name = unquote_to_bytes(name)
        if exclude is not None and raw_name == exclude:
            continue
        pairs.append((quote_from_bytes(raw_name, safe=""), quote_from_bytes(unquote_to_bytes(value), safe="")))
    pairs.sort()
    return "&".join(f"{n}={v}" for n, v in pairs)


def _parse_query(query_string: bytes) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for part in query_string.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        key = unquote_to_bytes(name).decode("utf-8", "replace")
        params.setdefault(key, []).append(unquote_to_bytes(value).decode("utf-8", "replace"))
    return params


def _header_map(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for name, value in headers:
        result.setdefault(name.lower(), []).append(value)
    return result


def _wire_bytes(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _canonical_headers(header_map: dict[str, list[str]], signed: list[str]) -> bytes:
    lines = []
    for name in signed:
        values = header_map.get(name, [])
        value = ",".join(" ".join(v.split()) for v in values)
        lines.append(name.encode("latin-1") + b":" + _wire_bytes(value) + b"\n")
    return b"".join(lines)


def build_canonical_request(
    method: str,
    raw_path: bytes,
    query_string: bytes,
    header_map: dict[str, list[str]],
    signed_headers: list[str],
    payload_hash: str,
    exclude_query: bytes | None = None,
) -> bytes:
    return b"\n".join(
        (
            method.upper().encode("ascii"),
            canonical_uri(raw_path).encode("ascii"),
            canonical_query(query_string, exclude_query).encode("ascii"),
            _canonical_headers(header_map, signed_headers),
            ";".join(signed_headers).encode("latin-1"),
            payload_hash.encode("latin-1"),
        )
    )


def string_to_sign(amz_date: str, scope: str, canonical_request: bytes) -> bytes:
    return "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request).hexdigest())).encode("utf-8")


# ---------------------------------------------------------------------------
# dates
# ---------------------------------------------------------------------------


def _parse_amz_date(value: str) -> float | None:
    if not _AMZ_DATE_RE.match(value):
        return None
    try:
        return float(calendar.timegm(time.strptime(value, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None


def _parse_http_date(value: str) -> float | None:
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    try:
        return float(calendar.timegm(parsed[:6] + (0, 0, 0)) - (parsed[9] or 0))
    except (ValueError, OverflowError):
        return None


def _format_amz_date(timestamp: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(timestamp))


def _server_time(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


# ---------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------


def _credential(value: str, error: Callable[[str], S3Error], expected_region: str | None) -> tuple[str, str, str, str]:
    parts = value.rsplit("/", 4)
    if len(parts) != 5 or not parts[0] or not _SHORT_DATE_RE.match(parts[1]) or not parts[2]:
        raise error('the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".')
    access_key, date, region, service, terminal = parts
    if service != "s3":
        raise error(f'incorrect service "{service}". This endpoint belongs to "s3".')
    if terminal != "aws4_request":
        raise error(f'incorrect terminal "{terminal}". This endpoint uses "aws4_request".')
    if expected_region is not None and region != expected_region:
        exc = error(f"the region '{region}' is wrong; expecting '{expected_region}'")
        exc.fields["Region"] = expected_region
        raise exc
    return access_key, date, region, service


def _header_error(detail: str) -> S3Error:
    return S3Error("AuthorizationHeaderMalformed", f"The authorization header is malformed; {detail}")


def _query_error(detail: str) -> S3Error:
    return S3Error(_QUERY_ERROR, f"Error parsing the X-Amz-Credential parameter; {detail}")


def _signed_header_list(value: str, error: Callable[[str], S3Error]) -> list[str]:
    names = [n.strip().lower() for n in value.split(";")]
    if not value or any(not n for n in names):
        raise error("the SignedHeaders list is malformed.")
    if "host" not in names:
        raise S3Error(
            "AccessDenied", "There were headers present in the request which were not signed", HeadersNotSigned="host"
        )
    return names


def _check_unsigned_amz_headers(header_map: dict[str, list[str]], signed: list[str]) -> None:
    signed_set = set(signed)
    missing = sorted(
        name
        for name in header_map
        if name.startswith("x-amz-") and name != "x-amz-content-sha256" and name not in signed_set
    )
    if missing:
        raise S3Error(
            "AccessDenied",
            "There were headers present in the request which were not signed",
            HeadersNotSigned=", ".join(missing),
        )


def _lookup(access_key: str, lookup_secret: Callable[[str], str | None]) -> str:
    secret = lookup_secret(access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key)
    return secret


def _verify_signature(
    access_key: str,
    secret: str,
    date: str,
    region: str,
    service: str,
    amz_date: str,
    canonical_request: bytes,
    signature: str,
) -> tuple[bytes, str]:
    scope = f"{date}/{region}/{service}/aws4_request"
    signing_key = derive_signing_key(secret, date, region, service)
    sts = string_to_sign(amz_date, scope, canonical_request)
    expected = hmac.new(signing_key, sts, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace")):
        raise S3Error(
            "SignatureDoesNotMatch",
            AWSAccessKeyId=access_key,
            StringToSign=sts.decode("utf-8", "replace"),
            SignatureProvided=signature,
            CanonicalRequest=canonical_request.decode("latin-1"),
        )
    return signing_key, scope


def _check_content_sha256(value: str) -> str:
    if value in PAYLOAD_CONSTANTS:
        return value
    if _HEX64_RE.match(value):
        return value.lower()
    raise S3Error(
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.",
        ArgumentName="x-amz-content-sha256",
        ArgumentValue=value,
    )


def _verify_header_auth(
    method: str,
    raw_path: bytes,
    query_string: bytes,
    header_map: dict[str, list[str]],
    authorization: str,
    lookup_secret: Callable[[str], str | None],
    now: float,
    expected_region: str | None = None,
) -> AuthResult:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise S3Error(
            "InvalidRequest",
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
        )
    components: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name in components:
            raise _header_error(
                "the authorization header requires three components: Credential, SignedHeaders, and Signature."
            )
        components[name] = value.strip()
    if set(components) != {"Credential", "SignedHeaders", "Signature"}:
        raise _header_error(
            "the authorization header requires three components: Credential, SignedHeaders, and Signature."
        )
    access_key, date, region, service = _credential(components["Credential"], _header_error, expected_region)
    signed = _signed_header_list(components["SignedHeaders"], _header_error)
    signature = components["Signature"]

    content_values = header_map.get("x-amz-content-sha256")
    if not content_values:
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    content_sha256 = content_values[0].strip()
    normalized_sha256 = _check_content_sha256(content_sha256)

    secret = _lookup(access_key, lookup_secret)

    if "x-amz-date" in header_map:
        amz_date = header_map["x-amz-date"][0].strip()
        timestamp = _parse_amz_date(amz_date)
    elif "date" in header_map:
        timestamp = _parse_http_date(header_map["date"][0])
        amz_date = _format_amz_date(timestamp) if timestamp is not None else ""
    else:
        timestamp = None
    if timestamp is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    if amz_date[:8] != date:
        raise _header_error("Invalid credential date. Date is not the same as X-Amz-Date.")
    if abs(now - timestamp) > MAX_SKEW_SECONDS:
        raise S3Error(
            "RequestTimeTooSkewed",
            RequestTime=amz_date,
            ServerTime=_server_time(now),
            MaxAllowedSkewMilliseconds=MAX_SKEW_SECONDS * 1000,
        )

    canonical = build_canonical_request(method, raw_path, query_string, header_map, signed, content_sha256)
    signing_key, scope = _verify_signature(access_key, secret, date, region, service, amz_date, canonical, signature)
    _check_unsigned_amz_headers(header_map, signed)
    return AuthResult(access_key, signing_key, signature, amz_date, scope, normalized_sha256)


def _single(params: dict[str, list[str]], name: str) -> str:
    values = params.get(name)
    if not values or len(values) != 1:
        raise S3Error(
            _QUERY_ERROR,
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
        )
    return values[0]


def _verify_query_auth(
    method: str,
    raw_path: bytes,
    query_string: bytes,
    header_map: dict[str, list[str]],
    params: dict[str, list[str]],
    lookup_secret: Callable[[str], str | None],
    now: float,
    expected_region: str | None = None,
) -> AuthResult:
    algorithm = _single(params, "X-Amz-Algorithm")
    credential = _single(params, "X-Amz-Credential")
    amz_date = _single(params, "X-Amz-Date")
    expires_text = _single(params, "X-Amz-Expires")
    signed_text = _single(params, "X-Amz-SignedHeaders")
    signature = _single(params, "X-Amz-Signature")
    if algorithm != ALGORITHM:
        raise S3Error(_QUERY_ERROR, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    access_key, date, region, service = _credential(credential, _query_error, expected_region)
    if expires_text.startswith("-") and expires_text[1:].isdigit():
        raise S3Error(_QUERY_ERROR, "X-Amz-Expires must be non-negative")
    if not expires_text.isdigit() or not expires_text.isascii() or len(expires_text) > 12:
        raise S3Error(_QUERY_ERROR, "X-Amz-Expires should be a number")
    expires = int(expires_text)  # 0 parses, and has expired by the time it arrives
    if expires > MAX_PRESIGN_EXPIRES:
        raise S3Error(_QUERY_ERROR, "X-Amz-Expires must be less than a week (in seconds) that is 604800")
    timestamp = _parse_amz_date(amz_date)
    if timestamp is None:
        raise S3Error(_QUERY_ERROR, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if amz_date[:8] != date:
        raise _query_error("Invalid credential date. Date is not the same as X-Amz-Date.")
    signed = _signed_header_list(signed_text, lambda d: S3Error(_QUERY_ERROR, d))

    secret = _lookup(access_key, lookup_secret)
    if timestamp - now > MAX_SKEW_SECONDS:
        raise S3Error("AccessDenied", "Request is not valid yet")
    if now > timestamp + expires or expires == 0:
        raise S3Error(
            "AccessDenied",
            "Request has expired",
            **{"X-Amz-Expires": expires, "Expires": _server_time(timestamp + expires), "ServerTime": _server_time(now)},
        )

    payload_values = params.get("X-Amz-Content-Sha256")
    payload_hash = payload_values[0] if payload_values else UNSIGNED_PAYLOAD
    normalized = _check_content_sha256(payload_hash)
    canonical = build_canonical_request(
        method, raw_path, query_string, header_map, signed, payload_hash, exclude_query=b"X-Amz-Signature"
    )
    signing_key, scope = _verify_signature(access_key, secret, date, region, service, amz_date, canonical, signature)
    _check_unsigned_amz_headers(header_map, signed)
    return AuthResult(access_key, signing_key, signature, amz_date, scope, normalized, presigned=True)


_QUERY_AUTH_MARKERS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")


def verify_request(
    method: str,
    raw_path: bytes,
    query_string: bytes,
    headers: list[tuple[str, str]],
    lookup_secret: Callable[[str], str | None],
    now: float | None = None,
    region: str | None = None,
    domains: tuple[str, ...] | None = None,
) -> AuthResult | None:
    """Verify a request's SigV4 (signed for ``region``, if given) or SigV2 authentication.

    Returns None for an anonymous request (no Authorization header and no presigned-URL
    parameters), an AuthResult when the signature is valid, and raises S3Error
    otherwise. ``lookup_secret(access_key)`` returns the secret key or None if unknown.
    ``now`` defaults to time.time(). ``Authorization: AWS AKID:signature`` and the
    ``AWSAccessKeyId``/``Signature``/``Expires`` query parameters are Signature Version 2,
    verified by ``frontend.sigv2`` (``domains``: the frontend's virtual-hosted domains,
    whose bucket is part of V2's string to sign; None, not known: V2 only for a Host
    that is an IP address or localhost).
    """
    if now is None:
        now = time.time()
    header_map = _header_map(headers)
    authorization = header_map.get("authorization")
    markers = (b"X-Amz-", b"Signature", b"AWSAccessKeyId")
    params = _parse_query(query_string) if any(m in query_string for m in markers) else {}
    query_auth = any(marker in params for marker in _QUERY_AUTH_MARKERS)
    v2_query_auth = not query_auth and ("AWSAccessKeyId" in params or "Signature" in params)
    if authorization and (query_auth or v2_query_auth):
        raise S3Error(
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
            "parameter or the Authorization header should be specified",
        )
    if authorization:
        if authorization[0].strip().partition(" ")[0] == sigv2.ALGORITHM:
            return sigv2.verify_header(method, raw_path, query_string, header_map, authorization[0], lookup_secret,
                                       now, domains)
        return _verify_header_auth(method, raw_path, query_string, header_map, authorization[0], lookup_secret, now,
                                   region)
    if query_auth:
        return _verify_query_auth(method, raw_path, query_string, header_map, params, lookup_secret, now, region)
    if v2_query_auth:
        return sigv2.verify_query(method, raw_path, query_string, header_map, params, lookup_secret, now, domains)
    return None


from frontend import sigv2  # noqa: E402  (sigv2 builds on this module's AuthResult and date helpers)

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
    region: str = "us-east-1",
    amz_date: str | None = None,
    payload_hash: str = UNSIGNED_PAYLOAD,
) -> list[tuple[str, str]]:
    """Return headers plus x-amz-date, x-amz-content-sha256 and Authorization, signing all headers given.

    ``headers`` must include ``host``. A minimal signer following the same canonical
    rules as the verifier; the tests check the verifier against botocore instead.
    """
    if amz_date is None:
        amz_date = _format_amz_date(time.time())
    out = [(n, v) for n, v in headers if n.lower() not in ("authorization", "x-amz-date", "x-amz-content-sha256")]
    out += [("x-amz-date", amz_date), ("x-amz-content-sha256", payload_hash)]
    header_map = _header_map(out)
    signed = sorted(header_map)
    date = amz_date[:8]
    canonical = build_canonical_request(method, raw_path, query_string, header_map, signed, payload_hash)
    scope = f"{date}/{region}/s3/aws4_request"
    key = derive_signing_key(secret, date, region, "s3")
    signature = hmac.new(key, string_to_sign(amz_date, scope, canonical), hashlib.sha256).hexdigest()
    out.append(
        (
            "authorization",
            f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={';'.join(signed)}, Signature={signature}",
        )
    )
    return out
