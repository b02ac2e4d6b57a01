"""Several frontend worker processes on one address.

    cairn frontend --listen 0.0.0.0:9000 --meta ... --workers 2

Each worker is a whole frontend (its own event loop, raftmeta and blob-node connections,
and a 1/N share of the chunk-buffer budget) bound with SO_REUSEPORT, so the kernel
spreads connections over them and small requests use every core. This process only
starts the workers, restarts one that dies, and stops them all on SIGTERM or SIGINT.
The workers share nothing: a frontend is stateless, Raft holds the truth.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

log = logging.getLogger("frontend.workers")
RESTART_DELAY = 0.5
MAX_RESTARTS_PER_MINUTE = 10


def run_workers(argv: list[str], count: int) -> int:
    cmd = [sys.executable, "-m", "cairn.cli", "frontend", *argv, "--worker"]
    workers: list[subprocess.Popen] = [subprocess.Popen(cmd) for _ in range(count)]
    stopping = False
    restarts: list[float] = []

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("frontend: %d workers, pids %s", count, ",".join(str(w.pid) for w in workers))
    while not stopping:
        time.sleep(0.2)
        for i, w in enumerate(workers):
            if w.poll() is None or stopping:
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            if len(restarts) > MAX_RESTARTS_PER_MINUTE:
                log.error("frontend workers keep dying (%d restarts in a minute): giving up", len(restarts))
                stop(signal.SIGTERM, None)
                break
            log.warning("frontend worker %d (pid %d) exited with %s; restarting", i, w.pid, w.returncode)
            time.sleep(RESTART_DELAY)
            workers[i] = subprocess.Popen(cmd)
    deadline = time.monotonic() + 10
    for w in workers:
        try:
            w.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
    return 0
