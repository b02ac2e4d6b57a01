"""Local-cluster process supervisor behind ``cairn up``.

The Procfile is parsed with honcho, but supervision is our own: unlike
foreman-style runners (honcho included), the death of one process does *not*
bring the others down.  A user can ``kill -9`` a blobnode to watch the cluster
cope, and everything else keeps running.  Only a requested stop (SIGINT /
SIGTERM to the supervisor, or cancellation of :func:`supervise`) stops all
processes.

Each Procfile entry runs as ``/bin/sh -c "exec <command>"`` in its own session
(and therefore its own process group), so:

* ``$VAR`` references in the Procfile are expanded by the shell from ``env``;
* the PID we report is the real program, not a wrapper shell;
* a Ctrl-C at the terminal reaches only the supervisor (the children are not in
  the terminal's foreground process group); the supervisor then stops each
  group in an orderly way: SIGTERM, wait up to ``stop_timeout``, SIGKILL.

Signals are only ever sent to the process groups of our own children whose
leader has not yet been reaped.  While the leader is unreaped its PID (and
therefore the group ID) cannot be recycled, so we can never hit an unrelated
process group.  The flip side: leftovers of an entry whose leader already
exited (e.g. background helpers it forked) are not signalled.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TextIO

import trio
from honcho.environ import parse_procfile

__all__ = ["ProcessSpec", "load_procfile", "run", "supervise"]

SYSTEM_NAME = "system"
# How long to wait, after a child exits, for the rest of its output to arrive
# before announcing the exit (keeps the announcement after its last lines).
_DRAIN_GRACE = 0.25
# How long to wait for SIGKILLed children to be reaped before giving up.
_KILL_WAIT = 5.0
# Longest line we buffer before relaying it anyway.
_MAX_LINE = 64 * 1024
_READ_SIZE = 16 * 1024
# honcho's colour cycle (ANSI SGR codes): cyan, yellow, green, magenta, red,
# blue, then the bold variants.
_COLOURS = ("36", "33", "32", "35", "31", "34")
_COLOURS += tuple(f"{c};1" for c in _COLOURS)


class TaskStatusLike(Protocol):
    """The ``task_status`` passed by ``nursery.start`` (no public type in trio 0.22)."""

    def started(self, value: Any = None) -> None: ...


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


def _shell_status(returncode: int) -> int:
    """Exit status in shell convention (128 + signal number for signals)."""
    return 128 - returncode if returncode < 0 else returncode


class _Printer:
    """honcho-style output: ``HH:MM:SS name | line``, names padded."""

    def __init__(self, out: TextIO, width: int) -> None:
        self.out = out
        self.width = width
        try:
            self.colour = bool(out.isatty())
        except (AttributeError, ValueError):
            self.colour = False

    def line(self, name: str, text: str, colour: str | None = None) -> None:
        now = datetime.datetime.now().strftime("%H:%M:%S")
        prefix = f"{now} {name.ljust(self.width)} | "
        if self.colour and colour is not None:
            prefix = f"\033[0m\033[{colour}m{prefix}\033[0m"
        try:
            print(prefix + text, file=self.out, flush=True)
        except (OSError, ValueError):
            # Output went away (closed pipe/file): keep supervising regardless.
            pass

    def system(self, text: str) -> None:
        self.line(SYSTEM_NAME, text)


@dataclass(eq=False)
class _Child:
    spec: ProcessSpec
    label: str
    colour: str
    proc: trio.Process
    output_done: trio.Event = field(default_factory=trio.Event)
    exited: trio.Event = field(default_factory=trio.Event)
    returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the child's process group, if it is still ours.

        The check and the ``killpg`` happen with no checkpoint in between, and
        reaping only happens on this thread, so an unreaped leader guarantees
        the group ID has not been recycled.
        """
        if self.proc.returncode is not None:
            return False
        try:
            os.killpg(self.proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True


class _Supervisor:
    def __init__(
        self,
        specs: list[ProcessSpec],
        env: Mapping[str, str],
        cwd: str | None,
        stop_timeout: float,
        out: TextIO,
    ) -> None:
        self.specs = specs
        self.env = dict(env)
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        labels = [f"{s.name}.1" for s in specs]
        self.printer = _Printer(out, max([len(SYSTEM_NAME), *map(len, labels)]))
        self.children: list[_Child] = []
        self.stop = trio.Event()  # set on requested stop or when all exited
        self.kill_now = trio.Event()  # a second signal: skip the grace period
        self.requested_signal: int | None = None
        self.stopping = False
        self._bg_scopes: list[trio.CancelScope] = []

    # -- spawning ------------------------------------------------------------

    async def spawn(self, spec: ProcessSpec, index: int) -> _Child:
        proc = await trio.lowlevel.open_process(
            ["/bin/sh", "-c", f"exec {spec.command}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.env,
            cwd=self.cwd,
        )
        child = _Child(spec, f"{spec.name}.1", _COLOURS[index % len(_COLOURS)], proc)
        self.children.append(child)
        self.printer.system(f"{spec.name} started (pid={proc.pid})")
        return child

    # -- background tasks ----------------------------------------------------

    async def shielded(self, fn: Any, *args: Any) -> None:
        """Run a background task that survives outer cancellation.

        Relays and watchers must keep running while we stop the children
        (so their last words and exit statuses get reported) even when the
        stop was caused by cancelling :func:`supervise`.  They are cancelled
        explicitly once shutdown is complete.
        """
        with trio.CancelScope(shield=True) as scope:
            self._bg_scopes.append(scope)
            await fn(*args)

    async def relay(self, child: _Child) -> None:
        stream = child.proc.stdout
        assert stream is not None
        buf = b""
        try:
            while True:
                try:
                    data = await stream.receive_some(_READ_SIZE)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    data = b""
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                while len(buf) > _MAX_LINE:
                    lines.append(buf[:_MAX_LINE])
                    buf = buf[_MAX_LINE:]
                for raw in lines:
                    self._emit(child, raw)
            if buf:
                self._emit(child, buf)
        finally:
            child.output_done.set()
            with trio.CancelScope(shield=True):
                await stream.aclose()

    def _emit(self, child: _Child, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        self.printer.line(child.label, text, child.colour)

    async def watch(self, child: _Child) -> None:
        returncode = await child.proc.wait()
        # Let the relay catch up so the exit notice follows the last lines.
        with trio.move_on_after(_DRAIN_GRACE):
            await child.output_done.wait()
        child.returncode = returncode
        child.exited.set()
        status = describe_status(returncode)
        live = self._live()
        if self.stopping:
            self.printer.system(f"{child.spec.name} stopped ({status})")
        elif live:
            self.printer.system(
                f"{child.spec.name} exited ({status}); the other processes keep running"
            )
        else:
            self.printer.system(
                f"{child.spec.name} exited ({status}); no processes left"
            )
        if not live:
            self.stop.set()

    async def listen_for_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if self.requested_signal is None:
                self.requested_signal = signum
                self.printer.system(f"{name} received; stopping all processes")
                self.stop.set()
            else:
                self.printer.system(
                    f"{name} received again; killing remaining processes now"
                )
                self.kill_now.set()

    # -- stopping ------------------------------------------------------------

    def _live(self) -> list[_Child]:
        return [c for c in self.children if c.proc.returncode is None]

    async def _wait_all_reaped(self, children: list[_Child]) -> None:
        async with trio.open_nursery() as nursery:
            for child in children:
                nursery.start_soon(child.proc.wait)

    async def shutdown(self) -> None:
        """SIGTERM every live group, wait, SIGKILL stragglers. Call shielded."""
        self.stopping = True
        live = self._live()
        if live:
            for child in live:
                if child.signal_group(signal.SIGTERM):
                    self.printer.system(
                        f"sending SIGTERM to {child.spec.name} (pid {child.pid})"
                    )
            with trio.move_on_after(self.stop_timeout):
                async with trio.open_nursery() as nursery:

                    async def on_kill_now() -> None:
                        await self.kill_now.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(on_kill_now)
                    await self._wait_all_reaped(live)
                    nursery.cancel_scope.cancel()
            stragglers = self._live()
            for child in stragglers:
                if child.signal_group(signal.SIGKILL):
                    self.printer.system(
                        f"{child.spec.name} (pid {child.pid}) still running; "
                        "sending SIGKILL to its process group"
                    )
            with trio.move_on_after(_KILL_WAIT):
                await self._wait_all_reaped(stragglers)
        # Let watchers report the exits and relays drain what is left.
        with trio.move_on_after(_DRAIN_GRACE * 2):
            for child in self.children:
                await child.exited.wait()
        unreaped = self._live()
        if unreaped:
            names = ", ".join(f"{c.spec.name} (pid {c.pid})" for c in unreaped)
            self.printer.system(f"could not stop: {names}")
        elif live:
            self.printer.system("all processes stopped")
        for scope in self._bg_scopes:
            scope.cancel()

    def exit_status(self) -> int:
        if self.requested_signal is not None:
            return 0
        for child in self.children:
            if child.returncode:
                return _shell_status(child.returncode)
        return 0


@contextmanager
def _maybe_signal_receiver(enabled: bool) -> Iterator[AsyncIterator[int] | None]:
    if not enabled:
        yield None
        return
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as receiver:
        yield receiver


async def supervise(
    specs: list[ProcessSpec],
    env: Mapping[str, str],
    *,
    cwd: str | None = None,
    stop_timeout: float = 10.0,
    out: TextIO = sys.stdout,
    handle_signals: bool = True,
    task_status: TaskStatusLike = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run every process in ``specs`` until stopped; return an exit status.

    ``env`` is the *complete* environment of the children (pass
    ``{**os.environ, ...}`` to inherit ours); ``$VAR`` references in the
    commands are expanded from it by ``/bin/sh``.

    Output of each child (stdout and stderr merged) is relayed line by line to
    ``out`` as ``HH:MM:SS name.1 | line``, coloured when ``out`` is a TTY.
    ``task_status.started()`` is called with ``{name: pid}`` once every process
    has been spawned.

    A child that exits is reported and not restarted; the others keep running.
    Returns:

    * ``0`` after a requested stop (SIGINT/SIGTERM, when ``handle_signals``);
    * once every child has exited on its own: ``0`` if all exited with code 0,
      else the first failing child's status (128+N for a signal N).

    On cancellation the children are stopped the same way (SIGTERM to each
    live process group, up to ``stop_timeout`` seconds, then SIGKILL) before
    the cancellation propagates.  A second signal during the grace period
    skips straight to SIGKILL.
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("process names must be unique")
    sup = _Supervisor(list(specs), env, cwd, stop_timeout, out)
    with _maybe_signal_receiver(handle_signals) as signals:
        async with trio.open_nursery() as nursery:
            try:
                if signals is not None:
                    nursery.start_soon(sup.listen_for_signals, signals)
                for index, spec in enumerate(specs):
                    child = await sup.spawn(spec, index)
                    nursery.start_soon(sup.shielded, sup.relay, child)
                    nursery.start_soon(sup.shielded, sup.watch, child)
                task_status.started({c.spec.name: c.pid for c in sup.children})
                if sup.children:
                    await sup.stop.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await sup.shutdown()
                nursery.cancel_scope.cancel()
    return sup.exit_status()


def run(specs: list[ProcessSpec], env: Mapping[str, str], **kw: Any) -> int:
    """Synchronous entry point: ``trio.run(supervise(specs, env, **kw))``.

    A KeyboardInterrupt that slips past the signal receiver (e.g. Ctrl-C
    before it is installed) still stops the children and yields status 130.
    """
    try:
        return trio.run(partial(supervise, specs, env, **kw))
    except KeyboardInterrupt:
        return 130
