"""The ceiling of the HTTP layer the frontend is built on, on this machine.

    python -m bench.http_ceiling [--workers 1] [--seconds 3]

Serves a QuartTrio app on hypercorn's trio worker that does nothing (a PUT reads its
4 KiB body and answers 200, a GET answers 4 KiB, a HEAD its headers) and drives it with
the bench's load generator at concurrency 1 and 16. No auth, no Raft, no disk: whatever a
Cairn frontend does per request comes on top of these figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

from bench.load import Endpoint, LoadGenerator
from chaos.cluster import free_ports

BODY = b"x" * 4096


def _serve(port: int, workers: int) -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from quart import Response, request
    from quart_trio import QuartTrio

    app = QuartTrio("null")

    @app.route("/<path:path>", methods=["GET", "PUT", "HEAD"])
    async def answer(path: str) -> Response:
        if request.method == "PUT":
            await request.get_data()
            return Response(b"", headers={"ETag": '"0"'})
        return Response(BODY, headers={"ETag": '"0"'})

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.workers = workers  # > 1: each process binds the port with SO_REUSEPORT
    trio.run(serve, app, config)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    port = free_ports(1)[0]
    ctx = multiprocessing.get_context("spawn")
    servers = [ctx.Process(target=_serve, args=(port, args.workers), daemon=True) for _ in range(args.workers)]
    for server in servers:
        server.start()
    time.sleep(3)
    try:
        ep = Endpoint(f"http://127.0.0.1:{port}", "AK", "SK")
        keys = [f"k{i}" for i in range(1000)]
        print(f"| quart-trio on hypercorn, {args.workers} process(es), answering at once | ops/s | p50 ms | errors |")
        print("|---|---|---|---|")
        with LoadGenerator(2) as gen:
            for method in ("PUT", "GET", "HEAD"):
                for concurrency in (1, 16):
                    r = gen.run(ep, method, "null", keys, concurrency, args.seconds)
                    p50 = 1000 * sorted(r["latencies"])[len(r["latencies"]) // 2] if r["latencies"] else 0.0
                    print(f"| 4 KiB {method} c{concurrency} | {r['ops_per_s']:,.0f} | {p50:.2f} | {r['errors']} |", flush=True)
    finally:
        for server in servers:
            server.terminate()
            server.join(10)


if __name__ == "__main__":
    main()
