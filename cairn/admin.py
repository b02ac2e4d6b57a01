"""``cairn admin``: the operator endpoints of a frontend, from the command line.

Requests are SigV4-signed with admin credentials: $CAIRN_ROOT_ACCESS_KEY /
$CAIRN_ROOT_SECRET_KEY (or --access-key/--secret-key), against --endpoint
(default $CAIRN_ENDPOINT or http://127.0.0.1:9000).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit

from core import config
from frontend.sigv4 import sign_headers


def request(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    url = args.endpoint.rstrip("/") + "/_cairn/" + path
    parts = urlsplit(url)
    data = json.dumps(body).encode() if body is not None else b""
    headers = [("host", parts.netloc), ("content-type", "application/json")]
    signed = sign_headers(method, parts.path.encode(), parts.query.encode(), headers, args.access_key, args.secret_key)
    req = urllib.request.Request(url, data=data if method in ("POST", "PUT") else None, method=method,
                                 headers=dict(signed))
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")
    except OSError as exc:
        return 0, f"cannot reach {args.endpoint}: {exc}"


def _replace_member(args: argparse.Namespace, q: Any) -> tuple[int, Any]:
    """One change at a time, the safe order: the cluster grows to N+1, then shrinks."""
    status, result = request(args, "POST", f"raft/add?raft={q(args.new)}")
    if not 200 <= status < 300:
        return status, result
    return request(args, "POST", f"raft/remove?raft={q(args.old)}")


def main(argv: list[str]) -> int:
    access, secret = config.root_credentials()
    p = argparse.ArgumentParser(prog="cairn admin", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", default=os.environ.get("CAIRN_ENDPOINT", "http://127.0.0.1:9000"))
    p.add_argument("--access-key", default=access)
    p.add_argument("--secret-key", default=secret)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("health", help="can this frontend serve writes?")
    sub.add_parser("status", help="Raft leader and members, blob nodes, GC, expiry, repair")
    repair = sub.add_parser("repair", help="re-replication of chunks that lost replicas")
    repair.add_argument("--run-now", action="store_true")
    users = sub.add_parser("user", help="users").add_subparsers(dest="action", required=True)
    add = users.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may use the operator endpoints")
    add.add_argument("--email", help="an e-mail address ACL grants may name (AmazonCustomerByEmail)")
    users.add_parser("ls", help="list users, their access key ids and grants")
    users.add_parser("rm", help="delete a user (its keys and grants go too)").add_argument("name")
    keys = sub.add_parser("key", help="access keys").add_subparsers(dest="action", required=True)
    keys.add_parser("add", help="issue a key; its secret is shown once").add_argument("user")
    keys.add_parser("rm", help="revoke a key").add_argument("key_id", metavar="ACCESS_KEY")
    grant = sub.add_parser("grant", help="give USER a permission on BUCKET")
    grant.add_argument("bucket")
    grant.add_argument("user")
    grant.add_argument("permission", choices=("read", "write", "list", "full"))
    revoke = sub.add_parser("revoke", help="take USER's permission on BUCKET away")
    revoke.add_argument("bucket")
    revoke.add_argument("user")
    node = sub.add_parser("node", help="blob nodes").add_subparsers(dest="action", required=True)
    node.add_parser("drain", help="take no new chunks; repair moves its replicas away").add_argument("node_id")
    node.add_parser("activate", help="take new chunks again").add_argument("node_id")
    node.add_parser("rm", help="decommission a drained node").add_argument("node_id")
    uploads = sub.add_parser("uploads", help="the incomplete multipart upload expiry task")
    uploads.add_argument("--expire-now", action="store_true")
    scrub = sub.add_parser("scrub", help="blob-node scrubbers: counters, or start a pass now")
    scrub.add_argument("--run-now", action="store_true")
    raft = sub.add_parser("raft", help="raftmeta members (Raft dynamic membership)")
    raft_sub = raft.add_subparsers(dest="action")
    raft_sub.add_parser("add", help="add a started raftmeta node as a voting member").add_argument("raft_addr")
    raft_sub.add_parser("remove", help="remove a member").add_argument("raft_addr")
    replace = raft_sub.add_parser("replace", help="add NEW, then remove OLD (start NEW first, --peers = members)")
    replace.add_argument("old")
    replace.add_argument("new")
    bucket = sub.add_parser("bucket", help="a bucket's versioning, object lock and lifecycle rules")
    bucket.add_argument("name")
    lifecycle = sub.add_parser("lifecycle", help="the lifecycle worker: rules and progress per bucket")
    lifecycle.add_argument("--run-now", action="store_true")
    gc = sub.add_parser("gc", help="chunk garbage collection")
    gc.add_argument("--run-now", action="store_true")
    args = p.parse_args(argv)

    q = lambda value: quote(value, safe="")  # noqa: E731
    calls = {
        ("health", None): lambda: request(args, "GET", "health"),
        ("status", None): lambda: request(args, "GET", "status"),
        ("repair", None): lambda: request(args, "POST" if args.run_now else "GET", "repair"),
        ("user", "add"): lambda: request(args, "POST", "users", {"name": args.name, "admin": args.admin,
                                                              **({"email": args.email} if args.email else {})}),
        ("user", "ls"): lambda: request(args, "GET", "users"),
        ("user", "rm"): lambda: request(args, "DELETE", f"users/{q(args.name)}"),
        ("key", "add"): lambda: request(args, "POST", f"users/{q(args.user)}/keys"),
        ("key", "rm"): lambda: request(args, "DELETE", f"keys/{q(args.key_id)}"),
        ("node", "drain"): lambda: request(args, "POST", f"nodes/{q(args.node_id)}/drain"),
        ("node", "activate"): lambda: request(args, "POST", f"nodes/{q(args.node_id)}/activate"),
        ("node", "rm"): lambda: request(args, "DELETE", f"nodes/{q(args.node_id)}"),
        ("grant", None): lambda: request(args, "PUT", f"buckets/{q(args.bucket)}/grants/{q(args.user)}",
                                         {"permission": args.permission}),
        ("revoke", None): lambda: request(args, "DELETE", f"buckets/{q(args.bucket)}/grants/{q(args.user)}"),
        ("uploads", None): lambda: request(args, "POST" if args.expire_now else "GET",
                                           "uploads/expire" if args.expire_now else "uploads"),
        ("scrub", None): lambda: request(args, "POST" if args.run_now else "GET", "scrub"),
        ("gc", None): lambda: request(args, "POST" if args.run_now else "GET", "gc"),
        ("bucket", None): lambda: request(args, "GET", f"buckets/{q(args.name)}"),
        ("lifecycle", None): lambda: request(args, "POST" if args.run_now else "GET", "lifecycle"),
        ("raft", None): lambda: request(args, "GET", "raft"),
        ("raft", "add"): lambda: request(args, "POST", f"raft/add?raft={q(args.raft_addr)}"),
        ("raft", "remove"): lambda: request(args, "POST", f"raft/remove?raft={q(args.raft_addr)}"),
        ("raft", "replace"): lambda: _replace_member(args, q),
    }
    status, result = calls[(args.command, getattr(args, "action", None))]()
    if result is not None:
        print(json.dumps(result, indent=2) if not isinstance(result, str) else result)
    if not 200 <= status < 300:
        print(f"cairn admin: failed (HTTP {status or 'no answer'})", file=sys.stderr)
        return 1
    return 0
