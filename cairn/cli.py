"""The ``cairn`` command: ``cairn up`` runs the local cluster; each role runs on its own."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import trio

from core import config


def _logging(level: str, role: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_role(role: str, argv: list[str]) -> int:
    args = config.parse_role(role, argv)
    _logging(args.log_level, role)
    if role == "frontend" and args.workers > 1 and not args.worker:
        from frontend.workers import run_workers

        return run_workers(argv, args.workers)
    if role == "raftmeta":
        from raftmeta.server import serve
    elif role == "blobnode":
        from blobnode.server import serve
    else:
        from frontend.server import serve
    try:
        trio.run(serve, args)
    except KeyboardInterrupt:
        pass
    return 0


def find_procfile(explicit: str | None) -> Path:
    candidates = [Path(explicit)] if explicit else [Path("Procfile"), Path(__file__).resolve().parent.parent / "Procfile"]
    for path in candidates:
        if path.is_file():
            return path
    raise SystemExit(f"no Procfile found (looked at {', '.join(map(str, candidates))})")


def up(argv: list[str]) -> int:
    from cairn import procfile, supervisor

    parser = argparse.ArgumentParser(prog="cairn up", description="Run the whole local cluster from the Procfile.")
    parser.add_argument("--data-dir", default="./data", help="all state lives here (default ./data)")
    parser.add_argument("--procfile", help="default: ./Procfile, else the one shipped with cairn")
    args = parser.parse_args(argv)
    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    secret = config.ensure_secret_file(str(data / "cluster.secret"))
    access, secret_key = config.root_credentials()
    env = dict(os.environ, CAIRN_DATA=str(data), CAIRN_CLUSTER_SECRET=secret,
               CAIRN_ROOT_ACCESS_KEY=access, CAIRN_ROOT_SECRET_KEY=secret_key, PYTHONUNBUFFERED="1")
    specs = procfile.load_procfile(find_procfile(args.procfile))
    print(
        f"Cairn: {len(specs)} processes, data in {data}\n"
        f"  S3 endpoint:  http://127.0.0.1:9000   (second frontend: http://127.0.0.1:9001)\n"
        f"  Access key:   {access}\n"
        f"  Secret key:   {secret_key}\n"
        f"  Try:          AWS_ACCESS_KEY_ID={access} AWS_SECRET_ACCESS_KEY={secret_key} "
        f"aws --endpoint-url http://127.0.0.1:9000 s3 ls\n"
        f"  Ctrl-C stops the cluster; `cairn up` again on the same --data-dir brings it back.",
        flush=True,
    )
    return supervisor.run(specs, env)


USAGE = """usage: cairn COMMAND [options]

commands:
  up         run the whole local cluster (3 raftmeta, 3 blobnode, 2 frontend)
  raftmeta   run one metadata (Raft) node
  blobnode   run one blob node
  frontend   run one S3 frontend
  admin      operator commands against a frontend (users, keys, grants, nodes, repair, uploads, gc)
  chaos      a seeded chaos run against a fresh local cluster, with a verdict
  bench      Cairn and its peers side by side (see BENCHMARKS.md)
Run `cairn COMMAND --help` for a command's options."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "up":
        return up(rest)
    if command == "chaos":
        from chaos.run import main as chaos_main

        return chaos_main(rest)
    if command == "bench":
        from bench.__main__ import main as bench_main

        return bench_main(rest)
    if command == "admin":
        from cairn.admin import main as admin_main

        return admin_main(rest)
    if command in config.ROLES:
        return run_role(command, rest)
    print(f"cairn: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
