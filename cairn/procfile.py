"""Procfile entries and how one is launched: parsing (with honcho), the ``cairn`` word
resolved to this interpreter, and the wrapper that makes a child die with its
supervisor (Linux: PR_SET_PDEATHSIG). ``cairn.supervisor`` runs what this describes."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from honcho.environ import parse_procfile

# What a child receives when the supervisor dies without stopping it (e.g. it
# was SIGKILLed).  SIGTERM rather than SIGKILL: every Cairn role dies at once on
# it (none catches it), and a role that manages processes of its own
# (``frontend --workers N``) gets to stop them, which it could not on SIGKILL.
# The price: a Procfile command that ignores SIGTERM would outlive us.
_PARENT_DEATH_SIGNAL = signal.SIGTERM
_USE_PDEATHSIG = sys.platform.startswith("linux")
# Run by ``sys.executable -I -S -c`` between fork and the real command:
#   argv: PARENT_PID LC_CTYPE_OR_DASH SIGNUM PROGRAM ARGS...
# 1. prctl(PR_SET_PDEATHSIG): the kernel signals us when our parent dies;
#    the setting survives execve (/bin/sh, then the command itself).
# 2. If the parent died before the prctl, no signal will ever come: getppid()
#    no longer names it (we were reparented), so give up without running.
# 3. Undo Python's own startup change to the environment (PEP 538 locale
#    coercion sets LC_CTYPE under a C locale), so the command gets exactly the
#    environment the supervisor was given.
_PDEATHSIG_WRAPPER = """\
import os, sys
parent, lc_ctype, signum, argv = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, ctypes.c_ulong(signum), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
except Exception as exc:
    print(f"cairn supervisor: PR_SET_PDEATHSIG failed ({exc}); this process may outlive the supervisor",
          file=sys.stderr, flush=True)
if os.getppid() != parent:
    os._exit(1)
if lc_ctype == "-":
    os.environ.pop("LC_CTYPE", None)
else:
    os.environ["LC_CTYPE"] = lc_ctype[1:]
os.execv(argv[0], argv)
"""
_CAIRN_COMMAND = re.compile(r"cairn(?=\s|$)")


@dataclass
class ProcessSpec:
    """One Procfile entry: a process name and the shell command that runs it."""

    name: str
    command: str


def load_procfile(path: str | os.PathLike[str]) -> list[ProcessSpec]:
    """Parse the Procfile at ``path`` (in file order).

    Lines that are not ``name: command`` (blank lines, ``#`` comments) are
    ignored, as in honcho.  Raises ``ValueError`` on a duplicated name or if
    the file defines no process at all.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        procfile = parse_procfile(text)
    except AssertionError as exc:  # honcho asserts on duplicate names
        raise ValueError(f"{path}: process names must be unique") from exc
    processes = procfile.processes.items()
    specs = [ProcessSpec(name, command.strip()) for name, command in processes]
    if not specs:
        raise ValueError(f"{path}: no processes defined")
    return specs


def describe_status(returncode: int) -> str:
    """Human-readable exit status: ``code 3`` or ``killed by SIGKILL``."""
    if returncode < 0:
        signum = -returncode
        try:
            signame = signal.Signals(signum).name
        except ValueError:
            signame = f"signal {signum}"
        return f"killed by {signame}"
    return f"code {returncode}"


def shell_status(returncode: int) -> int:
    """Exit status in shell convention (128 + signal number for signals)."""
    return 128 - returncode if returncode < 0 else returncode


def resolve_command(command: str) -> str:
    """``command`` with a leading ``cairn`` word replaced by this interpreter.

    ``cairn raftmeta ...`` becomes ``/path/to/python -m cairn.cli raftmeta ...``:
    the children run the same Cairn as the supervisor, found without ``PATH``
    (``/venv/bin/cairn up`` works from a shell where the venv is not active).
    Any other command is returned unchanged.
    """
    if sys.executable and _CAIRN_COMMAND.match(command):
        return f"{shlex.quote(sys.executable)} -m cairn.cli{command[len('cairn'):]}"
    return command


def launch_argv(command: str, env: Mapping[str, str], parent_pid: int) -> list[str]:
    """The argv that runs one Procfile ``command`` as a child of ``parent_pid``.

    On Linux the shell is started through :data:`_PDEATHSIG_WRAPPER`, which
    arranges for the child to receive :data:`_PARENT_DEATH_SIGNAL` if the
    supervisor dies.  A wrapper rather than ``preexec_fn``: ``preexec_fn`` runs
    Python code between fork and exec, which is unsafe when the parent has
    other threads (trio's worker threads, or the caller's); the wrapper is an
    ordinary program, so the fork stays a plain fork+exec.

    The parent-death signal fires when the *thread* that forked the child
    exits, not the process.  trio's ``open_process`` forks in a worker thread
    that exits after 10 s idle, which would kill every child 10 s after its
    start; so :meth:`cairn.supervisor._Supervisor.spawn` forks with ``subprocess.Popen`` on the
    thread running trio, which lives as long as the supervisor does.
    """
    shell = ["/bin/sh", "-c", f"exec {resolve_command(command)}"]
    if not _USE_PDEATHSIG or not sys.executable:
        return shell
    lc_ctype = "=" + env["LC_CTYPE"] if "LC_CTYPE" in env else "-"
    return [
        sys.executable, "-I", "-S", "-c", _PDEATHSIG_WRAPPER,
        str(parent_pid), lc_ctype, str(int(_PARENT_DEATH_SIGNAL)), *shell,
    ]  # fmt: skip

