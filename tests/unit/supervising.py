"""What the supervisor and Procfile tests share: a child program with modes, Procfile and
environment builders, waits, process-group probes and output readers."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from cairn.procfile import ProcessSpec, load_procfile

PY = sys.executable

CHILD = r"""
import os, signal, subprocess, sys, time

mode = sys.argv[1]
if mode == "loop":          # print a tick every 50 ms forever
    i = 0
    while True:
        print(f"{sys.argv[2]} tick {i}", flush=True)
        i += 1
        time.sleep(0.05)
elif mode == "stubborn":    # ignore SIGTERM, must be SIGKILLed
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("stubborn ready", flush=True)
    while True:
        time.sleep(0.05)
elif mode == "graceful":    # say goodbye on SIGTERM
    def bye(signum, frame):
        print("graceful got SIGTERM", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    print("graceful ready", flush=True)
    while True:
        time.sleep(0.05)
elif mode == "parent":      # fork a grandchild into the same process group
    child = subprocess.Popen([sys.executable, __file__, "sleep"])
    print(f"grandchild {child.pid}", flush=True)
    while True:
        time.sleep(0.05)
elif mode == "sleep":
    time.sleep(30)
elif mode == "exit":        # print words (stdout and stderr), exit with a code
    print(" ".join(sys.argv[3:]), flush=True)
    sys.stderr.write("on stderr\n")
    sys.stderr.flush()
    sys.exit(int(sys.argv[2]))
"""

LINE = re.compile(r"^\d\d:\d\d:\d\d (\S+ *) \| (.*)$")


def procfile(tmp_path: Path, text: str) -> list[ProcessSpec]:
    path = tmp_path / "Procfile"
    path.write_text(text)
    return load_procfile(path)


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def lines_of(out: io.StringIO, label: str) -> list[str]:
    """Relayed lines of one process (label like ``a.1``), prefix removed."""
    result = []
    for line in out.getvalue().splitlines():
        m = LINE.match(line)
        if m and m.group(1).strip() == label:
            result.append(m.group(2))
    return result


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


def group_gone(pgid: int) -> bool:
    """True if no process is left in process group ``pgid`` (signal 0 only)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def dead_or_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def restart_lines(out: io.StringIO, name: str) -> list[tuple[str, float, int]]:
    """``(status, delay, restart number)`` of each "NAME exited ...; restarting" line."""
    pattern = re.compile(
        rf"\| {re.escape(name)} exited \((.+?)\); restarting in ([\d.]+) s \(restart (\d+)\)$"
    )
    found = (pattern.search(line) for line in out.getvalue().splitlines())
    return [(m.group(1), float(m.group(2)), int(m.group(3))) for m in found if m]


def restarted_pids(out: io.StringIO, name: str) -> list[int]:
    """PIDs from the "NAME restarted (pid=N, restart K)" lines, in order."""
    pattern = re.compile(rf"\| {re.escape(name)} restarted \(pid=(\d+), restart \d+\)$")
    found = (pattern.search(line) for line in out.getvalue().splitlines())
    return [int(m.group(1)) for m in found if m]


class Output:
    """Collects a subprocess's stdout without ever blocking past a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.text = ""

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while not predicate(self.text):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; output so far:\n{self.text}")
            if select.select([self.fd], [], [], left)[0]:
                data = os.read(self.fd, 65536)
                if not data:
                    raise AssertionError(f"output ended; it was:\n{self.text}")
                self.text += data.decode("utf-8", "replace")
        return self.text


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux-only"
)


class TTYStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True
