"""Configuration of every role: command-line flags, a TOML file, and the environment.

Precedence: a flag on the command line, then the role's section of ``--config FILE``
(keys named like the flags, with ``_``), then the environment for secrets, then the
defaults below. Addresses are always ``host:port``; nothing assumes 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tomllib
from typing import Any

from core.nodes import DEFAULT_DEAD_AFTER

DEFAULT_ROOT_ACCESS_KEY = "cairnroot"
DEFAULT_ROOT_SECRET_KEY = "cairnroot-secret-key"
MIB = 1024 * 1024


def addr_list(value: str | list[str]) -> list[str]:
    if isinstance(value, list):
        return value
    return [v.strip() for v in value.split(",") if v.strip()]


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file; its [ROLE] section gives defaults for these flags")
    p.add_argument("--secret-file", help="file holding the cluster secret (else $CAIRN_CLUSTER_SECRET)")
    p.add_argument("--log-level", default="INFO")


def add_raftmeta(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raft", required=False, help="this node's Raft address host:port")
    p.add_argument("--peers", type=addr_list, default=[], help="the other nodes' Raft addresses, comma separated")
    p.add_argument("--rpc", help="this node's RPC address host:port")
    p.add_argument("--advertise-rpc", help="host:port clients reach the RPC at (default: --rpc)")
    p.add_argument("--data-dir", default="./data/raftmeta")
    p.add_argument("--gc-grace", type=float, default=300.0, help="seconds before an unreferenced chunk is deleted")
    p.add_argument("--gc-interval", type=float, default=5.0)
    p.add_argument("--upload-ttl", type=float, default=86400.0,
                   help="seconds after which an incomplete multipart upload is aborted")
    p.add_argument("--upload-expiry-interval", type=float, default=60.0)
    p.add_argument("--replicas", type=int, default=3, help="healthy copies of each chunk that repair maintains")
    p.add_argument("--dead-after", type=float, default=DEFAULT_DEAD_AFTER,
                   help="seconds without a heartbeat before a blob node's replicas are re-created elsewhere "
                        "(blob nodes heartbeat every 3 s: keep this well above that)")
    p.add_argument("--repair-interval", type=float, default=10.0)
    p.add_argument("--repair-rate", type=float, default=50.0, help="MB/s that repair copies at, at most")
    p.add_argument("--orphan-grace", type=float, default=21600.0,
                   help="seconds before a chunk file no manifest references is deleted (must exceed the longest upload)")
    p.add_argument("--orphan-interval", type=float, default=600.0)
    p.add_argument("--lifecycle-interval", type=float, default=60.0,
                   help="seconds between passes of the lifecycle worker over buckets with lifecycle rules")
    p.add_argument("--lifecycle-day-seconds", type=float, default=86400.0,
                   help="the length of a lifecycle rule's day (S3: 86400; shorten it only for tests)")
    p.add_argument("--lifecycle-rate", type=float, default=500.0,
                   help="lifecycle actions (expirations, deletions) per second, at most")
    p.add_argument("--min-part-size", type=int, default=5 * MIB,
                   help="smallest multipart part but the last (S3: 5 MiB; lower it only for tests)")
    p.add_argument("--commit-in-flight", type=int, default=2,
                   help="batch entries being committed at once; commands arriving meanwhile share the next entry "
                        "(0: every command its own entry)")
    p.add_argument("--snapshot-entries", type=int, default=50_000,
                   help="Raft log entries after which a snapshot is taken and the log compacted")
    p.add_argument("--unsafe-no-journal-sync", action="store_true",
                   help="do not sync the Raft journal (loses acknowledged writes on power loss; benchmarks only)")


def add_blobnode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", help="host:port to serve chunks on")
    p.add_argument("--advertise", help="host:port others reach this node at (default: --listen)")
    p.add_argument("--meta", type=addr_list, default=[], help="raftmeta RPC addresses, comma separated")
    p.add_argument("--data-dir", default="./data/blobnode")
    p.add_argument("--scrub-rate", type=float, default=20.0, help="MB/s the scrubber re-reads chunks at")
    p.add_argument("--scrub-interval", type=float, default=3600.0, help="seconds between scrub passes")
    p.add_argument("--reserve-mb", type=float, default=64.0,
                   help="MiB of disk kept free: a chunk that would eat into it is refused with NoSpace")


def add_frontend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", default="127.0.0.1:9000", help="host:port of the S3 endpoint")
    p.add_argument("--meta", type=addr_list, default=[], help="raftmeta RPC addresses, comma separated")
    p.add_argument("--chunk-size", type=int, default=8 * MIB)
    p.add_argument("--replicas", type=int, default=3, help="copies of each chunk (N)")
    p.add_argument("--write-quorum", type=int, default=2, help="acknowledged copies before a chunk counts (W)")
    p.add_argument("--workers", type=int, default=1,
                   help="frontend processes sharing --listen (SO_REUSEPORT); each gets 1/N of the buffer budget")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # set on the processes --workers starts
    p.add_argument("--inline-max", type=int, default=16 * 1024,
                   help="objects up to this size live in their manifest (Raft) instead of blob nodes; 0: never")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--domain", type=addr_list, default=[],
                   help="domains for virtual-hosted-style requests (BUCKET.DOMAIN), comma separated")
    p.add_argument("--header-timeout", type=float, default=20.0,
                   help="seconds a request's headers may take to arrive, from their first byte")
    p.add_argument("--body-timeout", type=float, default=20.0,
                   help="seconds a request body may go without a byte before RequestTimeout")
    p.add_argument("--send-timeout", type=float, default=60.0,
                   help="seconds a client may take to accept a piece of a response before it is cut off")
    p.add_argument("--form-timeout", type=float, default=30.0,
                   help="seconds a browser form upload's fields (read before its signature is checked) may take")
    p.add_argument("--max-connections-per-client", type=int, default=512,
                   help="open connections one client address may hold; more are closed at once")
    p.add_argument("--certfile", help="serve S3 over TLS with this certificate (PEM)")
    p.add_argument("--keyfile", help="the certificate's private key (PEM)")
    p.add_argument("--no-lean-path", dest="lean_path", action="store_false",
                   help="serve GET/HEAD/PUT of objects and UploadPart through Quart too (frontend.lean)")


ROLES = {"raftmeta": add_raftmeta, "blobnode": add_blobnode, "frontend": add_frontend}
REQUIRED = {"raftmeta": ("raft", "rpc"), "blobnode": ("listen", "meta"), "frontend": ("listen", "meta")}


def parse_role(role: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"cairn {role}")
    add_common(parser)
    ROLES[role](parser)
    first, _ = parser.parse_known_args(argv)
    if first.config:
        with open(first.config, "rb") as f:
            doc = tomllib.load(f)
        section = {k.replace("-", "_"): v for k, v in {**doc.get("cluster", {}), **doc.get(role, {})}.items()}
        known = {a.dest for a in parser._actions}
        parser.set_defaults(**{k: v for k, v in section.items() if k in known})
    args = parser.parse_args(argv)
    for name in REQUIRED[role]:
        if not getattr(args, name):
            parser.error(f"--{name.replace('_', '-')} is required (flag or config file)")
    for name in ("peers", "meta", "domain"):
        if hasattr(args, name):
            setattr(args, name, addr_list(getattr(args, name)))
    args.secret = load_secret(args.secret_file)
    return args


def load_secret(path: str | None) -> str:
    if path:
        with open(path) as f:
            return f.read().strip()
    value = os.environ.get("CAIRN_CLUSTER_SECRET")
    if not value:
        raise SystemExit("the cluster secret is required: --secret-file FILE or $CAIRN_CLUSTER_SECRET")
    return value


def ensure_secret_file(path: str) -> str:
    """Read the cluster secret at ``path``, making a random one the first time."""
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        value = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value


def root_credentials() -> tuple[str, str]:
    return (
        os.environ.get("CAIRN_ROOT_ACCESS_KEY", DEFAULT_ROOT_ACCESS_KEY),
        os.environ.get("CAIRN_ROOT_SECRET_KEY", DEFAULT_ROOT_SECRET_KEY),
    )


def namespace(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**kw)
