"""The operator endpoints, everything under ``/_cairn/`` (JSON, admin credentials;
``health`` answers anyone): health, cluster status, scrub, metrics, users, keys and
grants, node states, Raft membership, and the leader's chores (GC, upload expiry,
repair, orphan sweep). ``cairn admin`` is their client."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any
from urllib.parse import unquote

from quart import Response

from core import acl, wire
from core.nodes import DEFAULT_DEAD_AFTER, BlobNode, liveness
from frontend import metrics
from frontend.context import Context, read_body
from frontend.iam import ROOT_USER

MAX_ADMIN_BODY = 65536


async def serve(ctx: Context, request: Any, path: str) -> Response:
    """One operator request: ``path`` is what follows ``/_cairn/``."""
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
        raw = await read_body(request, MAX_ADMIN_BODY)
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("not an object")
            status, result = await admin_users(ctx, request.method, parts, body, time.time())
        except ValueError:
            status, result = 400, {"error": "MalformedJSON", "message": "the body must be a JSON object"}
        except AdminError as exc:
            status, result = exc.status, {"error": exc.code, "message": exc.message}
        return Response(b"" if result is None else json.dumps(result), status=status, content_type="application/json")
    if parts and parts[0] == "raft":
        return await raft_admin(ctx, request, parts[1:])
    chores = {("GET", "uploads"): "status", ("POST", "uploads"): "expire_uploads",
              ("POST", "uploads/expire"): "expire_uploads", ("POST", "gc"): "gc",
              ("GET", "gc"): "status", ("GET", "repair"): "status", ("POST", "repair"): "repair",
              ("POST", "orphans"): "orphans", ("GET", "lifecycle"): "status", ("POST", "lifecycle"): "lifecycle"}
    chore = chores.get((request.method, path))
    if chore is not None:
        try:
            reply = await ctx.meta.call({"op": "chore", "name": chore}, deadline=30)
        except wire.WireError:
            reply = {"ok": False, "err": "Unavailable", "msg": "no Raft leader answered"}
        if path == "lifecycle" and reply.get("ok"):
            reply = {"ok": True, "leader": reply.get("leader"), "lifecycle": reply.get("lifecycle")}
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
    dead_after = chores.get("repair", {}).get("dead_after", DEFAULT_DEAD_AFTER)
    for node in nodes:
        blob = BlobNode.from_record(node)
        age = now - blob.heartbeat
        node["state"] = liveness(age, dead_after).value  # up / unavailable / dead (core.nodes)
        node["heartbeat_age_s"] = round(age, 1)
        node["free"] = blob.free  # above the node's reserve
        node["disk_full"] = node["free"] < ctx.data.settings.chunk_size
    out.update(blobnodes=nodes, objects=stats.get("objects"), bytes=stats.get("bytes"), buckets=stats.get("buckets"),
               gc=chores.get("gc"), uploads=chores.get("uploads"), expiry=chores.get("expiry"),
               repair=chores.get("repair"), lifecycle=chores.get("lifecycle"),
               versions={k: stats.get(k) for k in ("noncurrent_versions", "noncurrent_bytes", "delete_markers")})
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


# ---------------------------------------------------------------------- users, keys, grants, nodes


def _name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.@+=-]{1,64}", value) or value == ROOT_USER:
        raise AdminError(400, "InvalidUserName", "user names are 1-64 of A-Z a-z 0-9 _ . @ + = -, and not 'root'")
    return value


class AdminError(Exception):
    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


_STATUS = {"UserAlreadyExists": 409, "NoSuchUser": 404, "UserOwnsBuckets": 409, "KeyAlreadyExists": 409,
           "NoSuchNode": 404, "NodeNotEmpty": 409,
           "NoSuchKeyId": 404, "NoSuchBucket": 404, "InvalidArgument": 400, "EmailInUse": 409}


async def _write(ctx: Context, cmd: dict[str, Any]) -> dict[str, Any]:
    try:
        reply = await ctx.meta.write(cmd)
    except wire.WireError:
        raise AdminError(503, "Unavailable", "no Raft leader answered") from None
    if not reply.get("ok"):
        raise AdminError(_STATUS.get(reply.get("err", ""), 500), reply.get("err", "InternalError"))
    return reply


async def bucket_state(ctx: Context, bucket: str) -> dict[str, Any]:
    """A bucket's owner, versioning, object lock and lifecycle rules (GET /_cairn/buckets/B)."""
    names = ("versioning", "object_lock", "lifecycle")
    try:
        info, *configs = await ctx.meta.read_many(
            [{"q": "bucket", "bucket": bucket}, *({"q": "bucket_config", "bucket": bucket, "name": n} for n in names)])
    except wire.WireError as exc:
        raise AdminError(503, "Unavailable", str(exc)) from None
    if not info.get("ok"):
        raise AdminError(404, "NoSuchBucket", bucket)
    versioning, lock, rules = (c.get("value") for c in configs)
    return {"bucket": bucket, "owner": info["owner"], "created": info["created"],
            "versioning": versioning or "Unversioned", "object_lock": lock or {"enabled": False},
            "lifecycle_rules": [{"id": r.get("id"), "status": r.get("status")} for r in rules or []]}


async def admin_users(ctx: Context, method: str, parts: list[str], body: dict[str, Any], ts: float) -> tuple[int, Any]:
    """/_cairn/users..., /_cairn/keys/..., /_cairn/buckets/B[/grants/U], /_cairn/nodes/N/...: (status, JSON)."""
    if parts == ["users"] and method == "GET":
        return 200, (await ctx.meta.read({"q": "users"}))["users"]
    if parts == ["users"] and method == "POST":
        name, email = _name(body.get("name")), body.get("email")
        if email is not None and (not isinstance(email, str) or not re.fullmatch(r"[^@\s]{1,64}@[^@\s]{1,190}", email)):
            raise AdminError(400, "InvalidArgument", "email must be an e-mail address")
        await _write(ctx, {"op": "create_user", "name": name, "admin": bool(body.get("admin")), "ts": ts,
                           **({"email": email} if email else {})})
        return 201, {"name": name, "canonical_id": acl.canonical_id(name), **({"email": email} if email else {})}
    if len(parts) == 2 and parts[0] == "users" and method == "DELETE":
        await _write(ctx, {"op": "delete_user", "name": _name(parts[1])})
        return 204, None
    if len(parts) == 3 and parts[0] == "users" and parts[2] == "keys" and method == "POST":
        access_key = "CK" + secrets.token_hex(9).upper()
        secret = secrets.token_urlsafe(30)
        await _write(ctx, {"op": "create_key", "user": _name(parts[1]), "access_key": access_key,
                           "secret": secret, "ts": ts})
        return 201, {"user": parts[1], "access_key": access_key, "secret_key": secret,
                     "note": "the secret key is shown only now"}
    if len(parts) == 2 and parts[0] == "keys" and method == "DELETE":
        await _write(ctx, {"op": "delete_key", "access_key": parts[1]})
        return 204, None
    if len(parts) == 2 and parts[0] == "buckets" and method == "GET":
        return 200, await bucket_state(ctx, parts[1])
    if len(parts) == 4 and parts[0] == "buckets" and parts[2] == "grants":
        if method == "PUT":
            permission = body.get("permission")
            if permission not in ("read", "write", "list", "full"):
                raise AdminError(400, "InvalidArgument", "permission must be read, write, list or full")
            await _write(ctx, {"op": "grant", "bucket": parts[1], "user": _name(parts[3]), "permission": permission})
            return 200, {"bucket": parts[1], "user": parts[3], "permission": permission}
        if method == "DELETE":
            await _write(ctx, {"op": "grant", "bucket": parts[1], "user": _name(parts[3]), "permission": None})
            return 204, None
    if len(parts) == 3 and parts[0] == "nodes" and method == "POST" and parts[2] in ("drain", "activate"):
        state = "draining" if parts[2] == "drain" else "active"
        await _write(ctx, {"op": "set_node_state", "node_id": parts[1], "state": state})
        return 200, {"node_id": parts[1], "state": state}
    if len(parts) == 2 and parts[0] == "nodes" and method == "DELETE":
        await _write(ctx, {"op": "set_node_state", "node_id": parts[1], "state": "removed"})
        return 204, None
    raise AdminError(404, "NoSuchEndpoint", "unknown admin endpoint")
