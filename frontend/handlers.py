"""S3 operations: each handler validates, talks to raftmeta and the byte path, and
answers as AWS does. Routing (method, bucket, key, sub-resource) is ``dispatch``."""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from quart import Response

from core import wire
from frontend import acl, conditions, copyobject, cors, iam, metrics, multipart, post_upload, s3xml, tagging
from frontend.context import (
    STORED_HEADERS,
    Context,
    decimal,
    empty_response,
    meta_call,
    meta_call_many,
    read_body,
    user_metadata,
    xml_response,
)
from frontend.datapath import SMALL_BODY, PrefetchingBody
from frontend.errors import S3Error
from frontend.names import check_bucket_name, check_key
from frontend.upload import UploadBody, commit_object

log = logging.getLogger("frontend")

_DIGITS = re.compile(r"[0-9]*")


# ---------------------------------------------------------------------- routing


async def dispatch(ctx: Context, request: Any, bucket: str, key: str | None, params: dict[str, str]) -> Response:
    method = request.method
    principal = request.principal
    if not bucket:
        if method == "GET":
            return await list_buckets(ctx, request)
        raise S3Error("MethodNotAllowed")
    if key is None and method == "PUT" and not params:
        if principal.user is None:
            raise S3Error("AccessDenied")
        return await create_bucket(ctx, request, bucket)
    if key is None and method == "POST" and not params:  # browser form upload, authorized by its policy
        return await post_upload.presigned_post(ctx, request, bucket)
    if key is not None:
        check_key(key)
    await iam.authorize(ctx, principal, bucket, iam.required(method, key, params))
    if key is None:
        return await _bucket_op(ctx, request, method, bucket, params)
    if "uploads" in params and method == "POST":
        return await multipart.create(ctx, request, bucket, key)
    if "uploadId" in params:
        upload_id = params["uploadId"]
        if method == "PUT":
            return await multipart.upload_part(ctx, request, bucket, key, params)
        if method == "POST":
            return await multipart.complete(ctx, request, bucket, key, upload_id)
        if method == "DELETE":
            return await multipart.abort(ctx, bucket, key, upload_id)
        if method == "GET":
            return await multipart.list_parts(ctx, bucket, key, params)
        raise S3Error("MethodNotAllowed")
    if "tagging" in params:
        if method == "PUT":
            return await tagging.put_tagging(ctx, request, bucket, key)
        if method == "GET":
            return await tagging.get_tagging(ctx, bucket, key)
        if method == "DELETE":
            return await tagging.delete_tagging(ctx, bucket, key)
        raise S3Error("MethodNotAllowed")
    handler: Callable[..., Any] | None = {
        "PUT": put_object, "GET": get_object, "HEAD": get_object, "DELETE": delete_object,
    }.get(method)
    if handler is None:
        raise S3Error("MethodNotAllowed")
    for sub in ("uploads", "acl", "retention", "legal-hold", "torrent", "restore", "select"):
        if sub in params:
            raise S3Error("NotImplemented", f"The {sub} sub-resource is not implemented yet.")
    if method == "PUT" and "x-amz-copy-source" in request.headers:
        return await copyobject.copy_object(ctx, request, bucket, key)
    return await handler(ctx, request, bucket, key, params)


async def _bucket_op(ctx: Context, request: Any, method: str, bucket: str, params: dict[str, str]) -> Response:
    if "cors" in params:
        handler = {"PUT": lambda: cors.put_cors(ctx, request, bucket), "GET": lambda: cors.get_cors(ctx, bucket),
                   "DELETE": lambda: cors.delete_cors(ctx, bucket)}.get(method)
        if handler is None:
            raise S3Error("MethodNotAllowed")
        return await handler()
    if "acl" in params and method in ("GET", "PUT"):
        return await (acl.get_bucket_acl(ctx, bucket) if method == "GET" else acl.put_bucket_acl(ctx, request, bucket))
    if method == "HEAD":
        await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket}))
        return empty_response(headers={"x-amz-bucket-region": ctx.region})
    if method == "DELETE" and not params:
        await meta_call(ctx.meta.write({"op": "delete_bucket", "bucket": bucket, "ts": time.time()}))
        return empty_response(204)
    if method == "GET":
        if "location" in params:
            await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket}))
            return xml_response(s3xml.location(ctx.region))
        if "versioning" in params:
            await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket}))
            return xml_response(f'{s3xml.HEAD}<VersioningConfiguration xmlns="{s3xml.NS}"/>'.encode())
        if "uploads" in params:
            return await multipart.list_uploads(ctx, bucket, params)
        unsupported = {"policy", "lifecycle", "tagging", "website", "replication",
                       "encryption", "notification", "logging", "object-lock", "ownershipControls"}
        hit = unsupported.intersection(params)
        if hit:
            raise S3Error("NotImplemented", f"The {hit.pop()} sub-resource is not implemented yet.")
        return await list_objects(ctx, bucket, params)
    if method == "POST" and "delete" in params:
        return await tagging.delete_objects(ctx, request, bucket)
    raise S3Error("MethodNotAllowed")


# ---------------------------------------------------------------------- buckets


async def list_buckets(ctx: Context, request: Any) -> Response:
    principal = request.principal
    if principal.user is None:
        raise S3Error("AccessDenied")
    query = {"q": "buckets"} if principal.admin else {"q": "visible_buckets", "user": principal.user}
    reply = await meta_call(ctx.meta.read(query))
    return xml_response(s3xml.list_buckets(reply["buckets"], principal.user))


async def create_bucket(ctx: Context, request: Any, bucket: str) -> Response:
    check_bucket_name(bucket)
    root = s3xml.parse(await read_body(request, s3xml.MAX_XML_BODY))
    if root is not None:
        if s3xml.local(root.tag) != "CreateBucketConfiguration":
            raise S3Error("MalformedXML")
        for child in root:
            if s3xml.local(child.tag) == "LocationConstraint" and (child.text or "") not in ("", ctx.region):
                raise S3Error("InvalidLocationConstraint",
                              f"The {child.text} location constraint is not this cluster's region ({ctx.region}).")
    canned = acl.canned_acl(request)
    await meta_call(ctx.meta.write({
        "op": "create_bucket", "bucket": bucket, "owner": request.principal.user, "acl": canned, "ts": time.time(),
    }))
    return empty_response(headers={"Location": f"/{bucket}"})


async def bucket_exists(ctx: Context, bucket: str) -> None:
    """Fail fast, before any byte is stored: a cheap local read first; only a "no" is
    confirmed linearizably (the bucket may have been created a moment ago elsewhere)."""
    try:
        await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket}, linear=False))
    except S3Error as exc:
        if exc.code != "NoSuchBucket":
            raise
        await meta_call(ctx.meta.read({"q": "bucket", "bucket": bucket}))


# ---------------------------------------------------------------------- listing


def _max_keys(params: dict[str, str]) -> int:
    value = decimal(params.get("max-keys", "1000"))
    if value is None:
        raise S3Error("InvalidArgument", "Provided max-keys not an integer or within integer range", ArgumentName="max-keys")
    return min(value, 1000)


def _token(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode("utf-8", "surrogatepass")).decode()


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect", ArgumentName="continuation-token") from None


async def list_objects(ctx: Context, bucket: str, params: dict[str, str]) -> Response:
    v2 = params.get("list-type") == "2"
    encoding = params.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request", ArgumentName="encoding-type")
    p: dict[str, Any] = {
        "bucket": bucket, "prefix": params.get("prefix", ""), "delimiter": params.get("delimiter", ""),
        "max_keys": _max_keys(params), "encoding_type": encoding, "owner": "",
    }
    if v2:
        p["start_after"] = params.get("start-after", "")
        p["token"] = params.get("continuation-token")
        p["fetch_owner"] = params.get("fetch-owner") == "true"
        after = _untoken(p["token"]) if p["token"] is not None else p["start_after"]
    else:
        p["marker"] = params.get("marker", "")
        after = p["marker"]
    # The bucket's owner and the page, behind one Raft barrier.
    bucket_info, page = await meta_call_many(ctx, [{"q": "bucket", "bucket": bucket}, {
        "q": "list", "bucket": bucket, "prefix": p["prefix"], "delimiter": p["delimiter"],
        "after": after, "max_keys": p["max_keys"],
    }])
    p["owner"] = bucket_info["owner"]
    if page["truncated"]:
        p["next_token"] = _token(page["last"])
    return xml_response(s3xml.list_objects(page, p, v2))


# ---------------------------------------------------------------------- objects


async def put_object(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    body = UploadBody(request, request.auth)
    cond = conditions.write_condition(request.headers)
    tags = tagging.header_tags(request.headers.get("x-amz-tagging"))
    user_meta = user_metadata(request)
    headers = {h: request.headers[h] for h in STORED_HEADERS if h in request.headers}
    if body.content_encoding:
        headers["content-encoding"] = body.content_encoding
    if body.length is None or body.length > ctx.data.settings.inline_max:
        await bucket_exists(ctx, bucket)  # fail fast before chunks are written (the commit checks anyway)
    stored, checksum = await body.store(ctx.data)
    etag = await commit_object(
        ctx.meta, ctx.data, bucket, key, stored, cond=cond,
        content_type=request.headers.get("content-type", "binary/octet-stream"),
        meta_fields={"user": user_meta, "headers": headers, "checksum": checksum, **({"tags": tags} if tags else {})})
    response = empty_response(headers={"ETag": f'"{etag}"'})
    for algo, value in checksum.items():
        response.headers[f"x-amz-checksum-{algo}"] = value
    return response


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _position(digits: str) -> int:
    """A byte position of any length: past 19 digits it is past every object's end."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else 10**19


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """RFC 9110 single byte range -> (first, last) inclusive; None = whole object."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # not a range we serve: the whole representation, as RFC 9110 allows
    first_s, dash, last_s = (part.strip() for part in spec.partition("-"))
    if not dash or not _DIGITS.fullmatch(first_s + last_s) or not (first_s or last_s):
        return None  # syntactically invalid: ignored, as RFC 9110 says
    if not first_s:
        suffix = _position(last_s)
        if suffix == 0 or size == 0:
            raise S3Error("InvalidRange", ActualObjectSize=size, RangeRequested=header)
        return max(0, size - suffix), size - 1
    first = _position(first_s)
    last = _position(last_s) if last_s else None
    if last is not None and first > last:
        return None
    if first >= size:
        raise S3Error("InvalidRange", ActualObjectSize=size, RangeRequested=header)
    return first, size - 1 if last is None else min(last, size - 1)


_OVERRIDES = (("response-content-type", "Content-Type"), ("response-content-language", "Content-Language"),
              ("response-expires", "Expires"), ("response-cache-control", "Cache-Control"),
              ("response-content-disposition", "Content-Disposition"),
              ("response-content-encoding", "Content-Encoding"))
_HEADER_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


def response_overrides(request: Any, params: dict[str, str]) -> dict[str, str]:
    """The response-* query parameters of a GET: signed requests only, as S3 says (an
    anonymous one could make a public text file be served as HTML), and only values a
    header can carry."""
    out = {}
    for param, header in _OVERRIDES:
        if param in params:
            if request.principal.user is None:
                raise S3Error("InvalidRequest", "Request specific response headers cannot be used for anonymous "
                              "GET requests.")
            if not _HEADER_VALUE.fullmatch(params[param]) or not params[param].isascii():
                raise S3Error("InvalidArgument", f"{param} must be a valid header value", ArgumentName=param)
            out[header] = params[param]
    return out


def object_headers(obj: dict[str, Any]) -> dict[str, str]:
    headers = {
        "ETag": f'"{obj["etag"]}"',
        "Last-Modified": _http_date(obj["created"]),
        "Content-Type": obj["content_type"],
        "Accept-Ranges": "bytes",
    }
    meta = obj.get("meta", {})
    for name, value in meta.get("headers", {}).items():
        headers[name] = value
    for name, value in meta.get("user", {}).items():
        headers[f"x-amz-meta-{name}"] = value
    if meta.get("tags"):
        headers["x-amz-tagging-count"] = str(len(meta["tags"]))
    return headers


async def get_object(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    obj = (await meta_call(ctx.meta.read({"q": "object", "bucket": bucket, "key": key})))["obj"]
    size = obj["size"]
    headers = object_headers(obj)
    if conditions.check_read(request.headers, obj["etag"], obj["created"]):
        return empty_response(304, {k: v for k, v in headers.items() if k in ("ETag", "Last-Modified")})
    headers.update(response_overrides(request, params))
    if "partNumber" in params:
        first, last, count = multipart.part_range(obj, multipart.part_number(params))
        byte_range: tuple[int, int] | None = (first, last) if size else None
        headers["x-amz-mp-parts-count"] = str(count)
    else:
        byte_range = parse_range(request.headers.get("range"), size)
    status = 200
    first, last = 0, size - 1
    if byte_range is not None:
        first, last = byte_range
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    elif request.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
        # Whole-object checksums only describe whole-object responses.
        for algo, value in obj.get("meta", {}).get("checksum", {}).items():
            headers[f"x-amz-checksum-{algo}"] = value
            headers["x-amz-checksum-type"] = obj["meta"].get("checksum_type") or "FULL_OBJECT"
    length = last - first + 1 if size else 0
    if request.method == "HEAD" or length == 0:
        response = empty_response(status, headers)
    else:
        def on_bad(chunk_id: str, node_id: str) -> None:
            ctx.data.report_bad(bucket, key, obj["version"], chunk_id, node_id)

        chunks = obj["chunks"]
        if len(chunks) == 1 and size <= SMALL_BODY:
            # Small: read and verify it before answering (an unreadable object gets a 503,
            # not a cut connection) and send it at once, without a prefetching task.
            data = await ctx.data.read_chunk(chunks[0], on_bad)
            response = Response(bytes(memoryview(data)[first : last + 1]), status=status, headers=headers)
        else:
            response = Response(PrefetchingBody(ctx.data, chunks, first, last, on_bad), status=status,
                                headers=headers)
    response.headers["Content-Length"] = str(length)
    return response


async def delete_object(ctx: Context, request: Any, bucket: str, key: str, params: dict[str, str]) -> Response:
    await meta_call(ctx.meta.write({"op": "delete_object", "bucket": bucket, "key": key, "ts": time.time()}))
    return empty_response(204)


# ---------------------------------------------------------------------- operator endpoints


async def admin(ctx: Context, request: Any, path: str) -> Response:
    if path == "health" and request.method in ("GET", "HEAD"):
        try:
            reply = await ctx.meta.read({"q": "stats"}, deadline=3.0)
            meta_ok = bool(reply.get("ok"))
        except wire.WireError:
            meta_ok = False
        nodes = ctx.data.directory.writable(ctx.data.settings.chunk_size)
        healthy = meta_ok and len(nodes) >= ctx.data.settings.write_quorum
        body = json.dumps({"status": "ok" if healthy else "degraded", "raftmeta": meta_ok,
                           "blobnodes_writable": len(nodes), "chunk_buffers_free": ctx.data.buffers.value,
                           "chunk_buffers": ctx.data.buffer_count})
        return Response(body, status=200 if healthy else 503, content_type="application/json")
    if path == "status" and request.method == "GET":
        return Response(json.dumps(await cluster_status(ctx), indent=1), status=200, content_type="application/json")
    if path == "scrub" and request.method in ("GET", "POST"):
        return Response(json.dumps(await scrub(ctx, start=request.method == "POST")), status=200,
                        content_type="application/json")
    if path == "metrics" and request.method == "GET":
        return Response(await metrics.render(ctx), status=200, content_type="text/plain; version=0.0.4")
    parts = [unquote(p) for p in path.split("/") if p]
    if parts and parts[0] in ("users", "keys", "buckets", "nodes"):
        raw = await read_body(request, 65536)
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("not an object")
            status, result = await iam.admin_users(ctx, request.method, parts, body, time.time())
        except ValueError:
            status, result = 400, {"error": "MalformedJSON", "message": "the body must be a JSON object"}
        except iam.AdminError as exc:
            status, result = exc.status, {"error": exc.code, "message": exc.message}
        return Response(b"" if result is None else json.dumps(result), status=status, content_type="application/json")
    if parts and parts[0] == "raft":
        return await raft_admin(ctx, request, parts[1:])
    chores = {("GET", "uploads"): "status", ("POST", "uploads"): "expire_uploads",
              ("POST", "uploads/expire"): "expire_uploads", ("POST", "gc"): "gc",
              ("GET", "gc"): "status", ("GET", "repair"): "status", ("POST", "repair"): "repair",
              ("POST", "orphans"): "orphans"}
    chore = chores.get((request.method, path))
    if chore is not None:
        try:
            reply = await ctx.meta.call({"op": "chore", "name": chore}, deadline=30)
        except wire.WireError:
            reply = {"ok": False, "err": "Unavailable", "msg": "no Raft leader answered"}
        return Response(json.dumps(reply), status=200 if reply.get("ok") else 503, content_type="application/json")
    return Response(json.dumps({"error": "unknown admin endpoint"}), status=404, content_type="application/json")


async def raft_admin(ctx: Context, request: Any, parts: list[str]) -> Response:
    """GET raft: the members and each one's view. POST raft/add?raft=H:P, raft/remove?raft=H:P:
    one membership change (start a new member first, with --peers naming the current ones)."""
    def answer(status: int, body: dict[str, Any]) -> Response:
        return Response(json.dumps(body, indent=1), status=status, content_type="application/json")

    try:
        if request.method == "GET" and not parts:
            members = (await ctx.meta.call({"op": "members"}, deadline=5))["members"]
            for member in members:
                try:
                    status = await ctx.meta.status(member["rpc"]) if member["rpc"] else {}
                    member.update(up=bool(status), **{k: status.get(k) for k in (
                        "is_leader", "term", "commit_index", "last_applied")})
                except wire.WireError:
                    member["up"] = False
            return answer(200, {"members": members})
        if request.method == "POST" and parts in (["add"], ["remove"]):
            raft = request.args.get("raft", "")
            reply = await ctx.meta.call({"op": "membership", "action": parts[0], "raft": raft}, deadline=30)
            if not reply.get("ok"):
                status = 400 if reply.get("err") == wire.ERR_BAD_REQUEST else 503
                return answer(status, {"error": reply.get("err"), "message": reply.get("msg")})
            await ctx.meta.refresh_members()
            return answer(200, {"members": reply["members"]})
    except wire.WireError:
        return answer(503, {"error": "Unavailable", "message": "no Raft leader answered"})
    return answer(404, {"error": "unknown admin endpoint"})


async def cluster_status(ctx: Context) -> dict[str, Any]:
    """What an operator asks first: who leads Raft, which blob nodes are up, how much
    is stored, what GC, expiry and repair are doing."""
    raft = []
    for addr in ctx.meta.addrs:
        try:
            status = await ctx.meta.status(addr)
            raft.append({"rpc": addr, "up": True, **{k: status.get(k) for k in (
                "self", "leader", "is_leader", "term", "commit_index", "last_applied", "log_size")}})
        except wire.WireError:
            raft.append({"rpc": addr, "up": False})
    out: dict[str, Any] = {"raftmeta": raft}
    try:
        chores = await ctx.meta.call({"op": "chore", "name": "status"}, deadline=5)
        stats = await ctx.meta.read({"q": "stats"}, deadline=5)
        nodes = (await ctx.meta.read({"q": "nodes"}, deadline=5))["nodes"]
    except wire.WireError:
        out["error"] = "no Raft leader answered"
        return out
    now = time.time()
    dead_after = chores.get("repair", {}).get("dead_after", 600)
    for node in nodes:
        age = now - node["heartbeat"]
        node["state"] = "dead" if age >= dead_after else ("unavailable" if age >= 12 else "up")
        node["heartbeat_age_s"] = round(age, 1)
        node["free"] = max(0, node["capacity"] - node["used"])  # above the node's reserve
        node["disk_full"] = node["free"] < ctx.data.settings.chunk_size
    out.update(blobnodes=nodes, objects=stats.get("objects"), bytes=stats.get("bytes"), buckets=stats.get("buckets"),
               gc=chores.get("gc"), uploads=chores.get("uploads"), expiry=chores.get("expiry"),
               repair=chores.get("repair"))
    return out


async def scrub(ctx: Context, start: bool) -> dict[str, Any]:
    """Each blob node's scrubber: its counters, and with ``start`` a pass begun now."""
    out: dict[str, Any] = {}
    for node in (await ctx.meta.read({"q": "nodes"}, linear=False, deadline=5))["nodes"]:
        try:
            started = await ctx.blobs.scrub(node["addr"]) if start else None
            info = await ctx.blobs.info(node["addr"])
            out[node["node_id"]] = {"addr": node["addr"], "started": started, **(info.get("scrub") or {})}
        except wire.WireError as exc:
            out[node["node_id"]] = {"addr": node["addr"], "error": str(exc)}
    return out
