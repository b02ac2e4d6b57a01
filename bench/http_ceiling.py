"""The ceiling of the HTTP layer the frontend is built on, on this machine.

    python -m bench.http_ceiling [--workers 1] [--seconds 3] [--rounds 3] [--cluster] [--frontend URL ...]

Serves two apps that do nothing on hypercorn's trio worker — a QuartTrio app and a raw
ASGI app (a PUT reads its 4 KiB body and answers 200, a GET answers 4 KiB) — and drives
them with the bench's load generator (``bench.load``), 4 KiB GET and PUT at 16 in flight.
No auth, no Raft, no disk: whatever a Cairn frontend does per request comes on top.

``--cluster`` also starts a Cairn cluster (``chaos.cluster``: 3 raftmeta, 3 blob nodes)
with two frontends, one with the lean path (``frontend.lean``, the default) and one with
``--no-lean-path``; ``--frontend URL`` adds a running frontend (root credentials from
the environment). The targets are measured in interleaved rounds (the order rotating each
round, so a change in the machine's other load hits all alike) and each figure, the median
of the rounds, is also given as a fraction of the raw-ASGI ceiling.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.load import Endpoint, LoadGenerator
from chaos.cluster import free_ports

BODY = b"x" * 4096
BUCKET = "ceiling"
CONCURRENCY = 16


def _quart_app() -> Any:
    from quart import Response, request
    from quart_trio import QuartTrio

    app = QuartTrio("null")

    @app.route("/<path:path>", methods=["GET", "PUT", "HEAD"])
    async def answer(path: str) -> Response:
        if request.method == "PUT":
            await request.get_data()
            return Response(b"", headers={"ETag": '"0"'})
        return Response(BODY, headers={"ETag": '"0"'})

    return app


async def raw_app(scope: Any, receive: Any, send: Any) -> None:
    """A null raw ASGI app: the same answers as the null Quart app, no framework."""
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]
            await send({"type": kind + ".complete"})  # lifespan.startup / lifespan.shutdown
            if kind == "lifespan.shutdown":
                return
    if scope["method"] == "PUT":
        while (await receive()).get("more_body", False):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"etag", b'"0"'), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"etag", b'"0"'), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else BODY})


def _serve(port: int, workers: int, kind: str) -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.workers = workers  # > 1: each process binds the port with SO_REUSEPORT
    trio.run(serve, _quart_app() if kind == "quart" else raw_app, config)


class NullServers:
    """Both null apps, each on its own port, in processes of their own."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.procs: list[Any] = []
        self.endpoints: dict[str, Endpoint] = {}

    def __enter__(self) -> NullServers:
        ctx = multiprocessing.get_context("spawn")
        for kind, port in zip(("quart", "raw"), free_ports(2), strict=True):
            for _ in range(self.workers):
                proc = ctx.Process(target=_serve, args=(port, self.workers, kind), daemon=True)
                proc.start()
                self.procs.append(proc)
            name = f"null QuartTrio app, {self.workers} process(es)" if kind == "quart" else \
                f"null raw ASGI app, {self.workers} process(es)"
            self.endpoints[name] = Endpoint(f"http://127.0.0.1:{port}", "AK", "SK")
        time.sleep(3)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.join(10)


class CairnPair:
    """A Cairn cluster with two frontends: the lean path on the first, off on the second."""

    def __init__(self, root: Path, frontend_flags: list[str]) -> None:
        from chaos.cluster import Cluster

        self.cluster = Cluster(root, frontends=2, gc_grace=20.0, frontend_flags=frontend_flags)
        self.cluster.procs["frontend2"].args.append("--no-lean-path")
        self.endpoints: dict[str, Endpoint] = {}

    def __enter__(self) -> CairnPair:
        from chaos.cluster import ACCESS_KEY, SECRET_KEY

        self.cluster.start()
        self.cluster.wait_healthy(90, require_all=True)
        for i, name in enumerate(("Cairn frontend, lean path", "Cairn frontend, --no-lean-path")):
            self.endpoints[name] = Endpoint(self.cluster.endpoints[i], ACCESS_KEY, SECRET_KEY)
        return self

    def __exit__(self, *exc: object) -> None:
        self.cluster.stop()

    def pids(self) -> dict[str, int | None]:
        return {name: self.cluster.procs[f"frontend{i + 1}"].pid for i, name in enumerate(self.endpoints)}


def prepare(gen: LoadGenerator, ep: Endpoint, keys: list[str]) -> None:
    """A frontend's bucket and its GET keys (4 KiB each)."""
    from bench.suites import boto

    s3 = boto(ep)
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    filled = gen.run(ep, "PUT", BUCKET, keys, CONCURRENCY)
    if filled["errors"]:
        raise RuntimeError(f"could not write the GET keys: {filled['first_error']}")


def measure(gen: LoadGenerator, targets: dict[str, Endpoint], rounds: int, seconds: float,
            say: Callable[[str], None] = print) -> dict[str, dict[str, list[float]]]:
    """ops/s of 4 KiB GET and PUT at c16 per target, ``rounds`` interleaved runs each."""
    keys = [f"k{i:04d}" for i in range(500)]
    out: dict[str, dict[str, list[float]]] = {name: {"GET": [], "PUT": []} for name in targets}
    names = list(targets)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for method in ("GET", "PUT"):
            for name in order:
                ep = targets[name]
                run_keys = [f"put/{r}/"] if method == "PUT" else keys
                result = gen.run(ep, method, BUCKET, run_keys, CONCURRENCY, seconds, unique=method == "PUT")
                if result["errors"]:
                    say(f"  {name} {method}: {result['errors']} errors ({result['first_error']})")
                out[name][method].append(result["ops_per_s"])
                say(f"  round {r + 1} {method} {name}: {result['ops_per_s']:,.0f} ops/s")
    return out


def table(results: dict[str, dict[str, list[float]]], rounds: int) -> str:
    raw = next((v for k, v in results.items() if k.startswith("null raw ASGI")), None)
    ceiling = {m: statistics.median(raw[m]) for m in ("GET", "PUT")} if raw else {}
    lines = [f"| 4 KiB at c{CONCURRENCY}, median of {rounds} interleaved rounds | GET ops/s | GET / raw ASGI "
             "| PUT ops/s | PUT / raw ASGI | runs GET; PUT |", "|---|---|---|---|---|---|"]
    for name, figures in results.items():
        cells = [name]
        for method in ("GET", "PUT"):
            median = statistics.median(figures[method])
            cells += [f"{median:,.0f}", f"{median / ceiling[method]:.0%}" if ceiling.get(method) else "-"]
        cells.append("; ".join(", ".join(f"{x:,.0f}" for x in figures[m]) for m in ("GET", "PUT")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--workers", type=int, default=1, help="processes per null app")
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cluster", action="store_true", help="also start a Cairn cluster: lean path on and off")
    ap.add_argument("--frontend", action="append", default=[], help="also measure this running frontend (URL)")
    ap.add_argument("--frontend-flag", action="append", default=[], help="extra flag for --cluster's frontends")
    ap.add_argument("--pause", action="store_true", help="print the frontends' pids and wait for Enter (profiling)")
    args = ap.parse_args(argv)
    with LoadGenerator(2) as gen, NullServers(args.workers) as null, tempfile.TemporaryDirectory() as tmp:
        targets = dict(null.endpoints)
        for url in args.frontend:
            from core.config import root_credentials

            targets[f"frontend {url}"] = Endpoint(url, *root_credentials())
        pair = CairnPair(Path(tmp) / "cluster", args.frontend_flag) if args.cluster else None
        try:
            if pair is not None:
                pair.__enter__()
                targets.update(pair.endpoints)
                if args.pause:
                    print(f"frontend pids: {pair.pids()}; press Enter to measure", flush=True)
                    input()
            keys = [f"k{i:04d}" for i in range(500)]
            for name, ep in targets.items():
                if not name.startswith("null "):
                    prepare(gen, ep, keys)
            results = measure(gen, targets, args.rounds, args.seconds)
        finally:
            if pair is not None:
                pair.__exit__()
    print(table(results, args.rounds), flush=True)


if __name__ == "__main__":
    main()
