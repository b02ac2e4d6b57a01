"""Tests for cairn.supervisor (the ``cairn up`` process supervisor).

Every process signalled here was started by the test itself (through
``supervise``); pids come from ``task_status.started``.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from cairn.supervisor import ProcessSpec, load_procfile, run, supervise

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


@pytest.fixture
def child(tmp_path: Path) -> str:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return f"{PY} -u {script}"


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


class TTYStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- parsing -------------------------------------------------------------------


def test_load_procfile_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    specs = procfile(
        tmp_path,
        "# the local cluster\n"
        "\n"
        "raftmeta1: python -m raftmeta --id 1 --peers a:1,b:2\r\n"
        "   \n"
        "#blobnode1: disabled\n"
        "blobnode_1: python -m blobnode --port $PORT   \n"
        "front-end: echo 'a: b'\n"
        "not a process line\n",
    )
    assert specs == [
        ProcessSpec("raftmeta1", "python -m raftmeta --id 1 --peers a:1,b:2"),
        ProcessSpec("blobnode_1", "python -m blobnode --port $PORT"),
        ProcessSpec("front-end", "echo 'a: b'"),
    ]


def test_load_procfile_rejects_duplicates_and_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        procfile(tmp_path, "a: true\na: false\n")
    with pytest.raises(ValueError, match="no processes"):
        procfile(tmp_path, "# nothing\n\n")


# -- supervising ---------------------------------------------------------------


@pytest.mark.trio
async def test_relay_env_expansion_and_exit_when_all_done(
    tmp_path: Path, child: str
) -> None:
    specs = procfile(
        tmp_path,
        f"ok: {child} exit 0 hello $GREETING\n"
        f"failing_process: {child} exit 3 bye\n"
        f"""inline: {PY} -c "import os, sys; print('$GREETING', os.getcwd()); """
        f"""print(repr(sys.stdin.read())); print('no newline', end='')"\n""",
    )
    out = io.StringIO()
    with trio.fail_after(5):
        rc = await supervise(
            specs,
            env(GREETING="world"),
            cwd=str(tmp_path),
            out=out,
            handle_signals=False,
        )
    assert rc == 3  # the failing child's code; every child exited on its own
    text = out.getvalue()

    # Output is relayed with honcho's prefix: "HH:MM:SS name.1 | line",
    # stdout and stderr merged, names padded to a common width.
    assert lines_of(out, "ok.1") == ["hello world", "on stderr"]
    assert lines_of(out, "failing_process.1") == ["bye", "on stderr"]
    # $GREETING expanded by the shell from `env`; cwd honoured; stdin is empty;
    # a final line without newline is still relayed.
    assert lines_of(out, "inline.1") == [f"world {tmp_path}", "''", "no newline"]
    lines = text.splitlines()
    assert all(LINE.match(line) for line in lines), text
    prefixes = {len(line.split(" | ", 1)[0]) for line in lines}
    assert len(prefixes) == 1, text  # equal width, "system" included
    assert "\033[" not in text  # not a TTY: no colour

    # Each exit is reported after the process's last line.
    for name, code in [("ok", 0), ("failing_process", 3), ("inline", 0)]:
        notice = next(i for i, line in enumerate(lines) if f"| {name} exited" in line)
        assert f"exited (code {code})" in lines[notice]
        last = max(i for i, line in enumerate(lines) if f" {name}.1 " in line)
        assert last < notice
    assert "no processes left" in lines[-1]


@pytest.mark.trio
async def test_sigkill_of_one_child_leaves_the_others_running(
    tmp_path: Path, child: str
) -> None:
    specs = procfile(
        tmp_path,
        f"a: {child} loop a\nblobnode2: {child} loop b\nc: {child} loop c\n",
    )
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        pids = await nursery.start(
            partial(supervise, specs, env(), out=out, handle_signals=False)
        )
        assert set(pids) == {"a", "blobnode2", "c"}
        await wait_until(lambda: all(lines_of(out, f"{n}.1") for n in pids))

        os.kill(pids["blobnode2"], signal.SIGKILL)
        await wait_until(
            lambda: (
                "blobnode2 exited (killed by SIGKILL); "
                "the other processes keep running" in out.getvalue()
            )
        )
        # The others are alive and still printing.
        ticks_a, ticks_c = len(lines_of(out, "a.1")), len(lines_of(out, "c.1"))
        await wait_until(
            lambda: (
                len(lines_of(out, "a.1")) >= ticks_a + 3
                and len(lines_of(out, "c.1")) >= ticks_c + 3
            )
        )
        assert not group_gone(pids["a"]) and not group_gone(pids["c"])
        assert "sending SIG" not in out.getvalue()  # nobody else was touched
        ticks_b = len(lines_of(out, "blobnode2.1"))
        nursery.cancel_scope.cancel()

    assert len(lines_of(out, "blobnode2.1")) == ticks_b  # not restarted
    assert "blobnode2 started" in out.getvalue()
    assert out.getvalue().count("blobnode2 started") == 1
    assert all(group_gone(pid) for pid in pids.values())


@pytest.mark.trio
async def test_cancellation_stops_all_including_sigterm_ignorers(
    tmp_path: Path, child: str
) -> None:
    specs = procfile(
        tmp_path,
        f"loop: {child} loop x\n"
        f"stubborn: {child} stubborn\n"
        f"graceful: {child} graceful\n"
        f"parent: {child} parent\n",
    )
    out = io.StringIO()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            pids = await nursery.start(
                partial(
                    supervise,
                    specs,
                    env(),
                    out=out,
                    stop_timeout=0.5,
                    handle_signals=False,
                )
            )
            await wait_until(
                lambda: (
                    lines_of(out, "loop.1")
                    and "stubborn ready" in lines_of(out, "stubborn.1")
                    and "graceful ready" in lines_of(out, "graceful.1")
                    and lines_of(out, "parent.1")
                )
            )
            grandchild = int(lines_of(out, "parent.1")[0].split()[1])
            assert not dead_or_zombie(grandchild)
            start = time.monotonic()
            scope.cancel()
    elapsed = time.monotonic() - start
    assert scope.cancelled_caught
    # The stubborn child cost the stop_timeout, then was SIGKILLed.
    assert 0.5 <= elapsed < 3.0
    text = out.getvalue()
    for name in pids:
        assert f"sending SIGTERM to {name} (pid {pids[name]})" in text
    assert "stubborn (pid" in text and "sending SIGKILL" in text
    assert "stubborn stopped (killed by SIGKILL)" in text
    assert "loop stopped (killed by SIGTERM)" in text
    # Output produced during the shutdown is still relayed.
    assert "graceful got SIGTERM" in lines_of(out, "graceful.1")
    assert "graceful stopped (code 0)" in text
    assert "all processes stopped" in text
    assert all(group_gone(pid) for pid in pids.values() if pid != pids["parent"])
    # The whole process group is signalled, not just the leader.
    assert dead_or_zombie(grandchild)


@pytest.mark.trio
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_to_supervisor_stops_everything(
    tmp_path: Path, child: str, signum: signal.Signals
) -> None:
    specs = procfile(tmp_path, f"a: {child} loop a\nb: {child} graceful\n")
    out = io.StringIO()
    result: list[int] = []

    async def sup(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        result.append(await supervise(specs, env(), out=out, task_status=task_status))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            pids = await nursery.start(sup)
            await wait_until(lambda: "graceful ready" in lines_of(out, "b.1"))
            os.kill(os.getpid(), signum)  # our own process: the supervisor
    assert result == [0]  # a requested stop
    text = out.getvalue()
    assert f"{signum.name} received; stopping all processes" in text
    assert "graceful got SIGTERM" in text and "SIGKILL" not in text
    assert all(group_gone(pid) for pid in pids.values())


@pytest.mark.trio
async def test_second_signal_skips_the_grace_period(tmp_path: Path, child: str) -> None:
    specs = procfile(tmp_path, f"stubborn: {child} stubborn\n")
    out = io.StringIO()
    result: list[int] = []

    async def sup(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        result.append(
            await supervise(
                specs, env(), out=out, stop_timeout=60, task_status=task_status
            )
        )

    with trio.fail_after(5):  # far less than stop_timeout
        async with trio.open_nursery() as nursery:
            pids = await nursery.start(sup)
            await wait_until(lambda: "stubborn ready" in out.getvalue())
            os.kill(os.getpid(), signal.SIGINT)
            await wait_until(lambda: "sending SIGTERM" in out.getvalue())
            await trio.sleep(0.1)
            os.kill(os.getpid(), signal.SIGINT)
    assert result == [0]
    assert "SIGINT received again" in out.getvalue()
    assert "stubborn stopped (killed by SIGKILL)" in out.getvalue()
    assert group_gone(pids["stubborn"])


def test_run_wrapper_and_colour_on_tty(tmp_path: Path, child: str) -> None:
    specs = procfile(tmp_path, f"a: {child} exit 0 hi\nb: {child} exit 0 there\n")
    out = TTYStringIO()
    assert run(specs, env(), out=out) == 0
    text = out.getvalue()
    assert "\033[0m\033[36m" in text  # first process cyan, like honcho
    assert "\033[0m\033[33m" in text  # second yellow
    assert "hi" in text and "there" in text
    system_lines = [line for line in text.splitlines() if " system | " in line]
    assert system_lines and not any("\033[" in line for line in system_lines)


def test_duplicate_names_and_empty_spec_list() -> None:
    with pytest.raises(ValueError, match="unique"):
        trio.run(
            partial(
                supervise,
                [ProcessSpec("a", "true"), ProcessSpec("a", "true")],
                {},
                handle_signals=False,
            )
        )
    out = io.StringIO()
    assert run([], {}, out=out, handle_signals=False) == 0
    assert out.getvalue() == ""
