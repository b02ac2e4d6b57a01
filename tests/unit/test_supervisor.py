"""Tests for cairn.supervisor (the ``cairn up`` process supervisor).

Every process signalled here was started by the test itself (through
``supervise``, or a supervisor subprocess the test started); pids come from
``task_status.started`` or the supervisor's own "started (pid=N)" lines.
"""

from __future__ import annotations

import io
import os
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from cairn.procfile import ProcessSpec
from cairn.supervisor import RestartPolicy, run, supervise
from tests.unit.supervising import (
    LINE,
    PY,
    TTYStringIO,
    cmdline,
    dead_or_zombie,
    env,
    group_gone,
    lines_of,
    procfile,
    restart_lines,
    restarted_pids,
    wait_until,
)

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
            restart=None,  # run to completion: nothing restarted
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
async def test_without_restart_a_killed_child_stays_dead_and_the_others_run(
    tmp_path: Path, child: str
) -> None:
    specs = procfile(
        tmp_path,
        f"a: {child} loop a\nblobnode2: {child} loop b\nc: {child} loop c\n",
    )
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        pids = await nursery.start(
            partial(supervise, specs, env(), out=out, handle_signals=False, restart=None)
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
    assert "restart" not in text  # children stopped by us are not restarted
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
    assert run(specs, env(), out=out, restart=None) == 0
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


# -- restarting ----------------------------------------------------------------


@pytest.mark.trio
async def test_a_child_that_exits_is_restarted_with_growing_delays(
    tmp_path: Path, child: str
) -> None:
    specs = procfile(
        tmp_path,
        f"crashy: {child} exit 1 oops\nclean: {child} exit 0 done\nsteady: {child} loop s\n",
    )
    policy = RestartPolicy(initial_delay=0.1, max_delay=0.4, reset_after=60)
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        start = time.monotonic()
        pids = await nursery.start(
            partial(supervise, specs, env(), out=out, handle_signals=False, restart=policy)
        )
        await wait_until(lambda: len(restarted_pids(out, "crashy")) >= 4, timeout=8)
        elapsed = time.monotonic() - start
        await wait_until(lambda: len(restart_lines(out, "crashy")) >= 5, timeout=3)
        # Every exit, whatever its status, is announced with the delay and the
        # restart count; the delay doubles up to max_delay.
        crashy = restart_lines(out, "crashy")
        assert crashy[:5] == [
            ("code 1", 0.1, 1),
            ("code 1", 0.2, 2),
            ("code 1", 0.4, 3),
            ("code 1", 0.4, 4),
            ("code 1", 0.4, 5),
        ], out.getvalue()
        assert "crashy exited (code 1); restarting in 0.1 s (restart 1)" in out.getvalue()
        assert restart_lines(out, "clean")[0] == ("code 0", 0.1, 1)  # exit 0 too
        # The delays really were waited: 0.1 + 0.2 + 0.4 + 0.4 before restart 4.
        assert elapsed >= 1.1
        # Each run's output is relayed, under the same label.
        assert lines_of(out, "crashy.1").count("oops") >= 4
        pids_seen = restarted_pids(out, "crashy")
        assert len(set(pids_seen)) == len(pids_seen) and pids["crashy"] not in pids_seen
        # The steady process was never touched.
        assert "steady exited" not in out.getvalue() and "sending SIG" not in out.getvalue()
        assert not group_gone(pids["steady"])
        nursery.cancel_scope.cancel()
    assert out.getvalue().count("steady started") == 1
    assert group_gone(pids["steady"])


@pytest.mark.trio
async def test_backoff_starts_over_once_a_child_stayed_up(tmp_path: Path, child: str) -> None:
    specs = procfile(tmp_path, f"frontend1: {child} loop f\nother: {child} loop o\n")
    policy = RestartPolicy(initial_delay=0.1, max_delay=10, reset_after=0.5)
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        pids = await nursery.start(
            partial(supervise, specs, env(), out=out, handle_signals=False, restart=policy)
        )
        await wait_until(lambda: bool(lines_of(out, "frontend1.1")))
        os.kill(pids["frontend1"], signal.SIGKILL)  # killed from outside: restarted
        await wait_until(lambda: len(restarted_pids(out, "frontend1")) == 1)
        os.kill(restarted_pids(out, "frontend1")[0], signal.SIGKILL)  # at once again
        await wait_until(lambda: len(restarted_pids(out, "frontend1")) == 2)
        await trio.sleep(0.7)  # longer than reset_after
        os.kill(restarted_pids(out, "frontend1")[1], signal.SIGKILL)
        await wait_until(lambda: len(restarted_pids(out, "frontend1")) == 3)
        assert restart_lines(out, "frontend1") == [
            ("killed by SIGKILL", 0.1, 1),
            ("killed by SIGKILL", 0.2, 2),  # a quick exit: the delay doubles
            ("killed by SIGKILL", 0.1, 3),  # after a long enough run: back to the start
        ]
        latest = restarted_pids(out, "frontend1")[-1]
        await wait_until(lambda: not dead_or_zombie(latest) and "loop f" in cmdline(latest))
        assert "other exited" not in out.getvalue()
        nursery.cancel_scope.cancel()
    assert group_gone(latest) and group_gone(pids["other"])


@pytest.mark.trio
async def test_nothing_is_restarted_once_stopping(tmp_path: Path, child: str) -> None:
    specs = procfile(tmp_path, f"crashy: {child} exit 1 oops\nb: {child} graceful\n")
    policy = RestartPolicy(initial_delay=5.0, max_delay=30, reset_after=60)
    out = io.StringIO()
    result: list[int] = []

    async def sup(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        result.append(
            await supervise(specs, env(), out=out, restart=policy, task_status=task_status)
        )

    with trio.fail_after(4):  # the pending 5 s restart delay is not waited out
        async with trio.open_nursery() as nursery:
            pids = await nursery.start(sup)
            await wait_until(
                lambda: (
                    restart_lines(out, "crashy") == [("code 1", 5.0, 1)]
                    and "graceful ready" in lines_of(out, "b.1")
                )
            )
            os.kill(os.getpid(), signal.SIGTERM)
    assert result == [0]
    text = out.getvalue()
    assert "crashy restarted" not in text and text.count("crashy started") == 1
    # b was stopped by us: reported as stopped, not restarted.
    assert "b stopped (code 0)" in text and "b exited" not in text
    assert text.count("restarting in") == 1 and "b restarted" not in text
    assert all(group_gone(pid) for pid in pids.values())


def test_restart_policy_is_validated() -> None:
    with pytest.raises(ValueError):
        RestartPolicy(initial_delay=0)
    with pytest.raises(ValueError):
        RestartPolicy(initial_delay=2, max_delay=1)
