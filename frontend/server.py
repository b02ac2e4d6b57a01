"""The frontend process: the S3 app on hypercorn's trio worker."""

from __future__ import annotations

import logging
from typing import Any

import hypercorn.trio.tcp_server as hypercorn_tcp
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from blobnode.client import BlobClient
from cairn import config
from frontend.app import CairnApp
from frontend.context import Context
from frontend.objects import DataPath, Settings
from raftmeta.client import MetaClient

log = logging.getLogger("frontend")

# hypercorn reads the socket 64 KiB at a time; 1 MiB reads halve its per-byte CPU on
# large uploads (measured: ~700 -> ~1,300 MB/s). Memory stays bounded by the body buffer.
hypercorn_tcp.MAX_RECV = 1 << 20


def build(args: Any) -> CairnApp:
    access, secret = config.root_credentials()
    meta = MetaClient(args.meta, args.secret)
    blobs = BlobClient(args.secret)
    settings = Settings(chunk_size=args.chunk_size, replicas=args.replicas, write_quorum=args.write_quorum)
    if not 1 <= settings.write_quorum <= settings.replicas:
        raise SystemExit("--write-quorum must be between 1 and --replicas")
    data = DataPath(meta, blobs, settings)
    return CairnApp(Context(meta, blobs, data, args.region, access, secret))


async def serve(args: Any) -> None:
    app = build(args)
    hc = Config()
    hc.bind = [args.listen]
    hc.keep_alive_timeout = 75
    hc.accesslog = None
    hc.h11_max_incomplete_size = 64 * 1024
    log.info("frontend: S3 on http://%s, raftmeta %s", args.listen, ",".join(args.meta))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app.ctx.data.directory.refresh_loop)
        await hypercorn_serve(app, hc)
        nursery.cancel_scope.cancel()
