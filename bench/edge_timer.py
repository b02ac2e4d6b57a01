"""hypercorn's keep-alive timer against ``http_edge.KeepAliveTimer``, on a null app.

    python -m bench.edge_timer [--rounds 6] [--seconds 3]

Two processes serve ``bench.http_ceiling.raw_app`` on hypercorn with ``frontend.http_edge``
installed: one with hypercorn's own timer (a task started per request), one with
``KeepAliveTimer`` (one task per connection). The bench's load generator sends 4 KiB GETs
at 16 in flight to each in turn, in rounds whose order alternates, and the figure is the
server process's CPU per request (user + system, from /proc), the median of the rounds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.http_ceiling import raw_app
from bench.load import Endpoint, LoadGenerator
from chaos.cluster import free_ports


def _serve(port: int, variant: str) -> None:
    import hypercorn.trio.tcp_server as hypercorn_tcp
    import trio
    from hypercorn.config import Config
    from hypercorn.events import Updated
    from hypercorn.trio import serve

    from frontend import http_edge

    http_edge.install()
    if variant == "hypercorn":  # its TrioSingleTask and its handling of Updated
        guarded = http_edge.GuardedTCPServer
        guarded.__init__ = hypercorn_tcp.TCPServer.__init__  # type: ignore[method-assign]
        ours = guarded.protocol_send

        async def protocol_send(self: Any, event: Any) -> None:
            if isinstance(event, Updated):
                return await hypercorn_tcp.TCPServer.protocol_send(self, event)
            return await ours(self, event)

        guarded.protocol_send = protocol_send  # type: ignore[method-assign]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.keep_alive_timeout = http_edge.KEEP_ALIVE
    trio.run(serve, raw_app, config)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args(argv)
    variants = ("hypercorn", "KeepAliveTimer")
    procs = {}
    for variant, port in zip(variants, free_ports(2), strict=True):
        proc = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, variant), daemon=True)
        proc.start()
        procs[variant] = (proc, port)
    time.sleep(3)
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    ops: dict[str, list[float]] = {v: [] for v in variants}
    try:
        with LoadGenerator() as gen:
            for r in range(args.rounds):
                for variant in variants if r % 2 == 0 else variants[::-1]:
                    proc, port = procs[variant]
                    before = _cpu(proc.pid)
                    out = gen.run(Endpoint(f"http://127.0.0.1:{port}", "a", "b"), "GET", "x", ["k"], 16,
                                  duration=args.seconds)
                    cpu[variant].append((_cpu(proc.pid) - before) / max(1, len(out["latencies"])) * 1e6)
                    ops[variant].append(out["ops_per_s"])
    finally:
        for proc, _ in procs.values():
            proc.terminate()
    print("| timer | server CPU per GET (us), per round | median | GET ops/s (median) |")
    print("|---|---|---|---|")
    for variant in variants:
        print(f"| {variant} | {', '.join(f'{x:.0f}' for x in cpu[variant])} | {statistics.median(cpu[variant]):.0f} "
              f"| {statistics.median(ops[variant]):,.0f} |")


if __name__ == "__main__":
    main()
