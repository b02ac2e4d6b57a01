"""The frontend process: the S3 app on hypercorn's trio worker."""

from __future__ import annotations

import ctypes
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

# hypercorn reads the socket 64 KiB at a time, which costs CPU per byte on large
# uploads. Each read may be buffered several times per connection (h11, hypercorn's
# queue, the body) while the app is busy, so bigger is not free: 256 KiB measured best
# here (2 GiB PUT 95 -> 123 MB/s against 1 MiB reads; 10 parallel parts 184 -> 144 MiB RSS).
hypercorn_tcp.MAX_RECV = 256 * 1024


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


def _never_block_on_a_finished_app() -> None:
    """hypercorn bug (0.18): the connection's reader hands request-body messages to the
    app through a small queue. When the app answers early (an error before the body was
    read) and returns, nobody drains that queue: the reader blocks on it forever, and so
    does the close that would follow, leaving the client stuck sending its body until its
    own timeout. Here, once the app has returned, messages for it are dropped instead."""
    from hypercorn.trio import task_group

    original = task_group.TaskGroup.spawn_app
    if getattr(original, "_cairn_patched", False):
        return

    async def spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Any:
        finished = trio.Event()

        async def app_send(message: Any) -> None:
            if message is None:
                finished.set()
            await send(message)

        put = await original(self, app, config, scope, app_send)
        channel = put.__self__

        async def app_put(message: Any) -> None:
            while not finished.is_set():
                try:
                    channel.send_nowait(message)
                    return
                except trio.WouldBlock:
                    with trio.move_on_after(0.05):
                        await channel.send(message)
                        return
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

        return app_put

    spawn_app._cairn_patched = True  # type: ignore[attr-defined]
    task_group.TaskGroup.spawn_app = spawn_app


_never_block_on_a_finished_app()


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
    return CairnApp(Context(meta, blobs, data, args.region, access, secret, domains=tuple(getattr(args, "domain", []))))


async def serve(args: Any) -> None:
    app = build(args)
    hc = Config()
    hc.bind = [args.listen]
    hc.workers = max(1, getattr(args, "workers", 1))  # >1: hypercorn binds with SO_REUSEPORT
    hc.keep_alive_timeout = 75
    hc.accesslog = None
    if getattr(args, "certfile", None):
        if not args.keyfile:
            raise SystemExit("--certfile needs --keyfile")
        hc.certfile, hc.keyfile = args.certfile, args.keyfile
    hc.h11_max_incomplete_size = 64 * 1024
    # Body messages hypercorn may queue ahead of the app, per connection (each up to
    # MAX_RECV): with the app's own 1 MiB body buffer, a slow upload holds ~3 MiB.
    hc.max_app_queue_size = 2
    log.info("frontend: S3 on %s://%s, raftmeta %s", "https" if hc.certfile else "http", args.listen,
             ",".join(args.meta))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app.ctx.data.directory.refresh_loop)
        nursery.start_soon(app.ctx.data.read_repair_loop)
        nursery.start_soon(app.ctx.meta.follow_members)
        await hypercorn_serve(app, hc)
        nursery.cancel_scope.cancel()
