"""Bucket CORS: Put/Get/DeleteBucketCors, preflight OPTIONS, and the CORS headers of
actual requests, matched rule by rule as S3 does (first matching rule wins).

A rule matches when the request's Origin matches one of its AllowedOrigins, its method
(a preflight's Access-Control-Request-Method) is one of its AllowedMethods, and each
header a preflight names in Access-Control-Request-Headers matches one of its
AllowedHeaders. An AllowedOrigin or AllowedHeader holds at most one ``*`` (PutBucketCors
refuses more), which stands for any run of characters, none included: ``*.example.com``,
``http://*.example.com``, ``start*end``, ``x-amz-*``, ``*``. Every other character stands
for itself (``?`` and ``[`` are no wildcards, as they were under fnmatch); origins are
compared case-sensitively, header names not.
"""

from __future__ import annotations

import functools
import re
from typing import Any
from xml.sax.saxutils import escape

from quart import Response

from core import wire
from frontend import s3xml
from frontend.context import Context, decimal, empty_response, meta_call, read_body, xml_response
from frontend.errors import S3Error

METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
MAX_RULES = 100


async def put_cors(ctx: Context, request: Any, bucket: str) -> Response:
    root = s3xml.parse(await read_body(request, 64 * 1024))
    if root is None or s3xml.local(root.tag) != "CORSConfiguration":
        raise S3Error("MalformedXML")
    rules = []
    for element in root:
        if s3xml.local(element.tag) != "CORSRule":
            raise S3Error("MalformedXML")
        rule: dict[str, Any] = {"origins": [], "methods": [], "headers": [], "expose": []}
        for field in element:
            name, text = s3xml.local(field.tag), (field.text or "").strip()
            if name == "AllowedOrigin":
                rule["origins"].append(_one_wildcard("AllowedOrigin", text))
            elif name == "AllowedMethod":
                if text not in METHODS:
                    raise S3Error("InvalidRequest", f"Found unsupported HTTP method in CORS config. Unsupported method is {text}")
                rule["methods"].append(text)
            elif name == "AllowedHeader":
                rule["headers"].append(_one_wildcard("AllowedHeader", text).lower())
            elif name == "ExposeHeader":
                rule["expose"].append(text)
            elif name == "MaxAgeSeconds":
                if decimal(text) is None:
                    raise S3Error("MalformedXML")
                rule["max_age"] = decimal(text)
            elif name == "ID":
                rule["id"] = text
            else:
                raise S3Error("MalformedXML")
        if not rule["origins"] or not rule["methods"]:
            raise S3Error("MalformedXML")
        rules.append(rule)
    if not rules or len(rules) > MAX_RULES:
        raise S3Error("MalformedXML")
    await meta_call(ctx.meta.write({"op": "set_bucket_config", "bucket": bucket, "name": "cors", "value": rules}))
    return empty_response()


async def _rules(ctx: Context, bucket: str) -> list[dict[str, Any]] | None:
    return (await meta_call(ctx.meta.read({"q": "bucket_config", "bucket": bucket, "name": "cors"})))["value"]


async def get_cors(ctx: Context, bucket: str) -> Response:
    rules = await _rules(ctx, bucket)
    if not rules:
        raise S3Error("NoSuchCORSConfiguration", BucketName=bucket)
    out = [f'{s3xml.HEAD}<CORSConfiguration xmlns="{s3xml.NS}">']
    for rule in rules:
        out.append("<CORSRule>")
        if "id" in rule:
            out.append(f"<ID>{escape(rule['id'])}</ID>")
        out += [f"<AllowedOrigin>{escape(o)}</AllowedOrigin>" for o in rule["origins"]]
        out += [f"<AllowedMethod>{m}</AllowedMethod>" for m in rule["methods"]]
        out += [f"<AllowedHeader>{escape(h)}</AllowedHeader>" for h in rule["headers"]]
        out += [f"<ExposeHeader>{escape(h)}</ExposeHeader>" for h in rule["expose"]]
        if "max_age" in rule:
            out.append(f"<MaxAgeSeconds>{rule['max_age']}</MaxAgeSeconds>")
        out.append("</CORSRule>")
    out.append("</CORSConfiguration>")
    return xml_response("".join(out).encode())


async def delete_cors(ctx: Context, bucket: str) -> Response:
    await meta_call(ctx.meta.write({"op": "set_bucket_config", "bucket": bucket, "name": "cors", "value": None}))
    return empty_response(204)


def _one_wildcard(element: str, value: str) -> str:
    if value.count("*") > 1:
        raise S3Error("InvalidRequest", f'{element} "{value}" can not have more than one wildcard.')
    return value


@functools.lru_cache(maxsize=1024)
def _pattern(wildcard: str) -> re.Pattern[str]:
    # each ``*`` any run of characters (a rule stored before two were refused keeps both)
    return re.compile(".*".join(re.escape(part) for part in wildcard.split("*")), re.DOTALL)


def wildcard_match(wildcard: str, value: str) -> bool:
    """S3's CORS wildcard: ``*`` matches any characters (none too), the rest itself."""
    if "*" not in wildcard:
        return value == wildcard
    return _pattern(wildcard).fullmatch(value) is not None


def match_rule(rules: list[dict[str, Any]], origin: str, method: str, headers: list[str]) -> dict[str, Any] | None:
    """The first rule allowing this origin, method and (lower-case) request headers."""
    for rule in rules:
        if not any(wildcard_match(pattern, origin) for pattern in rule["origins"]):
            continue
        if method not in rule["methods"]:
            continue
        if all(any(wildcard_match(p, h) for p in rule["headers"]) for h in headers):
            return rule
    return None


def _allow(rule: dict[str, Any], origin: str) -> dict[str, str]:
    headers = {"Access-Control-Allow-Origin": "*" if rule["origins"] == ["*"] else origin,
               "Access-Control-Allow-Methods": ", ".join(rule["methods"]), "Vary": "Origin"}
    if rule["origins"] != ["*"]:
        headers["Access-Control-Allow-Credentials"] = "true"
    if rule["expose"]:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule["expose"])
    if "max_age" in rule:
        headers["Access-Control-Max-Age"] = str(rule["max_age"])
    return headers


async def preflight(ctx: Context, request: Any, bucket: str) -> Response:
    origin = request.headers.get("origin")
    method = request.headers.get("access-control-request-method")
    if not origin or not method:
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.")
    wanted = [h.strip().lower() for h in request.headers.get("access-control-request-headers", "").split(",") if h.strip()]
    rules = await _rules(ctx, bucket) if bucket else None
    rule = match_rule(rules or [], origin, method, wanted)
    if rule is None:
        raise S3Error("AccessForbidden")
    response = empty_response(200, _allow(rule, origin))
    if wanted:
        response.headers["Access-Control-Allow-Headers"] = ", ".join(wanted)
    return response


async def decorate(ctx: Context, request: Any, bucket: str, response: Response) -> None:
    """Add CORS headers to the response of an actual cross-origin request."""
    origin = request.headers.get("origin")
    if not origin or not bucket:
        return
    try:
        reply = await ctx.meta.read({"q": "bucket_config", "bucket": bucket, "name": "cors"})
    except wire.WireError:
        return
    rule = match_rule(reply.get("value") or [], origin, request.method, [])
    if rule is not None:
        for name, value in _allow(rule, origin).items():
            response.headers[name] = value
