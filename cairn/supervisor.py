"""Local-cluster process supervisor behind ``cairn up``.

The Procfile is parsed with honcho, but supervision is our own: unlike
foreman-style runners (honcho included), the death of one process does *not*
bring the others down.  A user can ``kill -9`` a blobnode to watch the cluster
cope, and everything else keeps running.  Only a requested stop (SIGINT /
SIGTERM to the supervisor, or cancellation of :func:`supervise`) stops all
processes.

A process that exits without being asked to (any exit status, 0 included) is
restarted after a delay that doubles on each quick exit (0.5 s, 1 s, 2 s, ...
up to 30 s) and starts over once the process has stayed up for 60 s (see
:class:`RestartPolicy`; ``restart=None`` turns restarting off).  Nothing is
restarted once a stop has been requested.

Each Procfile entry runs as ``/bin/sh -c "exec <command>"`` in its own session
(and therefore its own process group), so:

* ``$VAR`` references in the Procfile are expanded by the shell from ``env``;
* the PID we report is the real program, not a wrapper shell;
* a Ctrl-C at the terminal reaches only the supervisor (the children are not in
  the terminal's foreground process group); the supervisor then stops each
  group in an orderly way: SIGTERM, wait up to ``stop_timeout``, SIGKILL.

A command whose first word is ``cairn`` runs as ``<this interpreter> -m
cairn.cli``, so the cluster starts from any shell, whether or not the venv's
``bin`` directory is on ``PATH``.

On Linux every child also dies with the supervisor, even when the supervisor
is SIGKILLed and cannot stop them (see :func:`launch_argv`).

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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TextIO

import trio

from cairn.procfile import ProcessSpec, describe_status, launch_argv, shell_status

__all__ = ["DEFAULT_RESTART", "RestartPolicy", "run", "supervise"]

SYSTEM_NAME = "system"
# How long to wait, after a child exits, for the rest of its output to arrive
# before announcing the exit (keeps the announcement after its last lines).
_DRAIN_GRACE = 0.25
# How long to wait for SIGKILLed children to be reaped before giving up.
_KILL_WAIT = 5.0
# Longest line we buffer before relaying it anyway.
_MAX_LINE = 64 * 1024
_READ_SIZE = 16 * 1024
# Poll interval for reaping where pidfd_open is unavailable (not Linux >= 5.3).
_POLL_INTERVAL = 0.05
# honcho's colour cycle (ANSI SGR codes): cyan, yellow, green, magenta, red,
# blue, then the bold variants.
_COLOURS = ("36", "33", "32", "35", "31", "34")
_COLOURS += tuple(f"{c};1" for c in _COLOURS)



class TaskStatusLike(Protocol):
    """The ``task_status`` passed by ``nursery.start`` (no public type in trio 0.22)."""

    def started(self, value: Any = None) -> None: ...


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a process that exited without being asked to.

    The first restart waits ``initial_delay`` seconds; each further one twice
    as long as the one before, up to ``max_delay``.  A process that had stayed
    up for ``reset_after`` seconds before exiting starts over at
    ``initial_delay``.
    """

    initial_delay: float = 0.5
    max_delay: float = 30.0
    reset_after: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_delay <= self.max_delay:
            raise ValueError("need 0 < initial_delay <= max_delay")


DEFAULT_RESTART = RestartPolicy()



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
class _Role:
    """One Procfile entry over its whole life: the processes run for it in turn."""

    spec: ProcessSpec
    label: str
    colour: str
    restarts: int = 0  # restarts so far
    delay: float = 0.0  # the last restart delay; 0 after a long enough run

    def next_delay(self, uptime: float, policy: RestartPolicy) -> float:
        """Count a restart and return how long to wait before it."""
        if uptime >= policy.reset_after or self.delay == 0.0:
            self.delay = policy.initial_delay
        else:
            self.delay = min(self.delay * 2, policy.max_delay)
        self.restarts += 1
        return self.delay


@dataclass(eq=False)
class _Child:
    role: _Role
    proc: subprocess.Popen[bytes]
    stdout: trio.lowlevel.FdStream
    started_at: float
    reaped: trio.Event = field(default_factory=trio.Event)
    output_done: trio.Event = field(default_factory=trio.Event)
    exited: trio.Event = field(default_factory=trio.Event)
    returncode: int | None = None

    @property
    def spec(self) -> ProcessSpec:
        return self.role.spec

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

    async def reap(self) -> int:
        """Wait for the child to exit and reap it (on this thread); its status."""
        pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(self.proc.pid)
            except OSError:  # kernel older than 5.3, or seccomp: poll instead
                pidfd = None
        try:
            while True:
                returncode = self.proc.poll()
                if returncode is not None:
                    break
                if pidfd is not None:
                    await trio.lowlevel.wait_readable(pidfd)
                else:
                    await trio.sleep(_POLL_INTERVAL)
        finally:
            if pidfd is not None:
                os.close(pidfd)
        self.reaped.set()
        return returncode


class _Supervisor:
    def __init__(
        self,
        specs: list[ProcessSpec],
        env: Mapping[str, str],
        cwd: str | None,
        stop_timeout: float,
        out: TextIO,
        restart: RestartPolicy | None,
    ) -> None:
        self.env = dict(env)
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.restart = restart
        self.roles = [
            _Role(spec, f"{spec.name}.1", _COLOURS[index % len(_COLOURS)])
            for index, spec in enumerate(specs)
        ]
        width = max([len(SYSTEM_NAME), *(len(r.label) for r in self.roles)])
        self.printer = _Printer(out, width)
        # The processes whose exit has not been dealt with yet (one per role at
        # most while restarting; every one that ran when not restarting).
        self.children: list[_Child] = []
        # Set on a requested stop, when shutdown begins, or (restart=None) when
        # every child has exited.
        self.stop = trio.Event()
        self.kill_now = trio.Event()  # a second signal: skip the grace period
        self.requested_signal: int | None = None
        self.stopping = False
        self._bg_scopes: set[trio.CancelScope] = set()
        self._nursery: trio.Nursery | None = None

    # -- spawning ------------------------------------------------------------

    def spawn(self, role: _Role) -> _Child:
        """Start one process for ``role`` and its relay and watcher tasks.

        Synchronous on purpose: the fork must happen on this (trio's) thread,
        see :func:`launch_argv`; and with no checkpoint between a caller's
        "are we stopping?" check and the fork, shutdown cannot miss a child.
        """
        assert self._nursery is not None
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(
                launch_argv(role.spec.command, self.env, os.getpid()),
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=subprocess.STDOUT,
                # Own session, hence own process group: a Ctrl-C at the
                # terminal reaches only us, and we stop the roles in order (and
                # can signal each role's whole group).  Dying with the
                # supervisor does not need a shared group: the parent-death
                # signal covers that.
                start_new_session=True,
                env=self.env,
                cwd=self.cwd,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        stdout = trio.lowlevel.FdStream(read_fd)
        child = _Child(role, proc, stdout, trio.current_time())
        self.children.append(child)
        self._start_background(self.relay, child)
        self._start_background(self.watch, child)
        return child

    # -- background tasks ----------------------------------------------------

    def _start_background(self, fn: Callable[[_Child], Awaitable[None]], child: _Child) -> None:
        """Run a background task that survives outer cancellation.

        Relays and watchers must keep running while we stop the children
        (so their last words and exit statuses get reported) even when the
        stop was caused by cancelling :func:`supervise`.  They are cancelled
        explicitly once shutdown is complete.  The scope is registered before
        the task starts, so shutdown can cancel a task that has not run yet.
        """
        assert self._nursery is not None
        scope = trio.CancelScope(shield=True)
        self._bg_scopes.add(scope)

        async def shielded() -> None:
            try:
                with scope:
                    await fn(child)
            finally:
                self._bg_scopes.discard(scope)

        self._nursery.start_soon(shielded)

    async def relay(self, child: _Child) -> None:
        stream = child.stdout
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
        self.printer.line(child.role.label, text, child.role.colour)

    async def watch(self, child: _Child) -> None:
        returncode = await child.reap()
        uptime = trio.current_time() - child.started_at
        # Let the relay catch up so the exit notice follows the last lines.
        with trio.move_on_after(_DRAIN_GRACE):
            await child.output_done.wait()
        child.returncode = returncode
        child.exited.set()
        name = child.spec.name
        status = describe_status(returncode)
        live = self._live()
        if self.stopping:
            self.printer.system(f"{name} stopped ({status})")
        elif self.stop.is_set():  # stop requested, shutdown not begun yet
            self.printer.system(f"{name} exited ({status})")
        elif self.restart is not None:
            delay = child.role.next_delay(uptime, self.restart)
            self.printer.system(
                f"{name} exited ({status}); restarting in {delay:.1f} s "
                f"(restart {child.role.restarts})"
            )
            self.children.remove(child)
            assert self._nursery is not None
            self._nursery.start_soon(self.restart_later, child.role, delay)
        elif live:
            self.printer.system(
                f"{name} exited ({status}); the other processes keep running"
            )
        else:
            self.printer.system(f"{name} exited ({status}); no processes left")
        if self.restart is None and not live:
            self.stop.set()

    async def restart_later(self, role: _Role, delay: float) -> None:
        """Start ``role`` again after ``delay`` seconds, unless stopping by then."""
        assert self.restart is not None
        while True:
            with trio.move_on_after(delay):
                await self.stop.wait()
            # No checkpoint from this check to the fork (spawn is synchronous).
            if self.stop.is_set() or self.stopping:
                return
            try:
                child = self.spawn(role)
            except OSError as exc:  # e.g. EAGAIN from fork: try again later
                delay = role.next_delay(0.0, self.restart)
                self.printer.system(
                    f"could not restart {role.spec.name} ({exc}); "
                    f"retrying in {delay:.1f} s (restart {role.restarts})"
                )
                continue
            self.printer.system(
                f"{role.spec.name} restarted (pid={child.pid}, restart {role.restarts})"
            )
            return

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
        for child in children:
            await child.reaped.wait()

    async def shutdown(self) -> None:
        """SIGTERM every live group, wait, SIGKILL stragglers. Call shielded."""
        self.stopping = True
        self.stop.set()  # pending restarts give up
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
            for child in list(self.children):
                await child.exited.wait()
        unreaped = self._live()
        if unreaped:
            names = ", ".join(f"{c.spec.name} (pid {c.pid})" for c in unreaped)
            self.printer.system(f"could not stop: {names}")
        elif live:
            self.printer.system("all processes stopped")
        for scope in list(self._bg_scopes):
            scope.cancel()

    def exit_status(self) -> int:
        if self.requested_signal is not None:
            return 0
        for child in self.children:
            if child.returncode:
                return shell_status(child.returncode)
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
    restart: RestartPolicy | None = DEFAULT_RESTART,
    task_status: TaskStatusLike = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run every process in ``specs`` until stopped; return an exit status.

    ``env`` is the *complete* environment of the children (pass
    ``{**os.environ, ...}`` to inherit ours); ``$VAR`` references in the
    commands are expanded from it by ``/bin/sh``.  A command whose first word
    is ``cairn`` runs as ``sys.executable -m cairn.cli`` (:func:`resolve_command`).

    Output of each child (stdout and stderr merged) is relayed line by line to
    ``out`` as ``HH:MM:SS name.1 | line``, coloured when ``out`` is a TTY.
    ``task_status.started()`` is called with ``{name: pid}`` once every process
    has been spawned.

    A child that exits on its own (whatever its status) is reported and, with
    a ``restart`` policy, started again after the policy's backoff delay; the
    others keep running.  Nothing is restarted once a stop has been requested.
    Returns:

    * ``0`` after a requested stop (SIGINT/SIGTERM, when ``handle_signals``);
    * with ``restart=None``, once every child has exited on its own: ``0`` if
      all exited with code 0, else the first failing child's status (128+N for
      a signal N).  (With a policy, children never all stay down.)

    On cancellation the children are stopped the same way (SIGTERM to each
    live process group, up to ``stop_timeout`` seconds, then SIGKILL) before
    the cancellation propagates.  A second signal during the grace period
    skips straight to SIGKILL.
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("process names must be unique")
    sup = _Supervisor(list(specs), env, cwd, stop_timeout, out, restart)
    with _maybe_signal_receiver(handle_signals) as signals:
        async with trio.open_nursery() as nursery:
            sup._nursery = nursery
            try:
                if signals is not None:
                    nursery.start_soon(sup.listen_for_signals, signals)
                pids = {}
                for role in sup.roles:
                    child = sup.spawn(role)
                    pids[role.spec.name] = child.pid
                    sup.printer.system(f"{role.spec.name} started (pid={child.pid})")
                task_status.started(pids)
                if sup.roles:
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
