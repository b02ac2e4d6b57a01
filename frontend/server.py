"""The frontend process: the S3 app on hypercorn's trio worker."""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from blobnode.client import BlobClient
from core import config
from frontend import http_edge
from frontend.app import CairnApp
from frontend.context import Context, Limits
from frontend.datapath import DataPath, Settings
from frontend.lean import LeanApp
from raftmeta.client import MetaClient

log = logging.getLogger("frontend")


def _return_big_buffers_to_the_os() -> None:
    """Chunk buffers are 8 MiB each and short-lived. glibc raises its mmap threshold
    after such a buffer is freed and then serves the next ones from the heap, which it
    rarely gives back: RSS creeps up under parallel uploads. A fixed threshold keeps
    every buffer over 1 MiB in its own mapping, returned to the OS when freed."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_mmap_threshold = -3
    libc.mallopt(m_mmap_threshold, 1 << 20)


_return_big_buffers_to_the_os()
http_edge.install()


def build(args: Any) -> CairnApp:
    access, secret = config.root_credentials()
    meta = MetaClient(args.meta, args.secret)
    blobs = BlobClient(args.secret)
    workers = max(1, getattr(args, "workers", 1))
    settings = Settings(chunk_size=args.chunk_size, replicas=args.replicas, write_quorum=args.write_quorum,
                        inline_max=args.inline_max, buffer_budget=Settings.buffer_budget // workers)
    if not 1 <= settings.write_quorum <= settings.replicas:
        raise SystemExit("--write-quorum must be between 1 and --replicas")
    data = DataPath(meta, blobs, settings)
    default_root = (access, secret) == (config.DEFAULT_ROOT_ACCESS_KEY, config.DEFAULT_ROOT_SECRET_KEY)
    if default_root:
        log.warning("*** the root credentials are the documented defaults (%s): anyone who reads the README can "
                    "use them. Operator endpoints answer loopback clients only until CAIRN_ROOT_ACCESS_KEY and "
                    "CAIRN_ROOT_SECRET_KEY are set. ***", access)
    d = Limits()
    limits = Limits(header=getattr(args, "header_timeout", d.header), body_idle=getattr(args, "body_timeout", d.body_idle),
                    send=getattr(args, "send_timeout", d.send), form=getattr(args, "form_timeout", d.form),
                    connections_per_client=getattr(args, "max_connections_per_client", d.connections_per_client))
    return CairnApp(Context(meta, blobs, data, args.region, access, secret, domains=tuple(getattr(args, "domain", [])),
                            default_root=default_root, limits=limits))


async def serve(args: Any) -> None:
    app = build(args)
    hc = Config()
    hc.bind = [args.listen]
    hc.workers = max(1, getattr(args, "workers", 1))  # >1: hypercorn binds with SO_REUSEPORT
    http_edge.configure(hc, app.ctx.limits)
    hc.accesslog = None
    if getattr(args, "certfile", None):
        if not args.keyfile:
            raise SystemExit("--certfile needs --keyfile")
        hc.certfile, hc.keyfile = args.certfile, args.keyfile
    log.info("frontend: S3 on %s://%s, raftmeta %s", "https" if hc.certfile else "http", args.listen,
             ",".join(args.meta))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app.ctx.data.directory.refresh_loop)
        nursery.start_soon(app.ctx.data.read_repair_loop)
        nursery.start_soon(app.ctx.meta.follow_members)
        await hypercorn_serve(LeanApp(app) if getattr(args, "lean_path", True) else app, hc)
        nursery.cancel_scope.cancel()
