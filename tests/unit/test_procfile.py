"""Tests for cairn.procfile: parsing, the children dying with a SIGKILLed supervisor, and
``cairn`` run as this interpreter. Every process signalled was started by the test."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import trio

from cairn.procfile import ProcessSpec, launch_argv, resolve_command
from cairn.supervisor import supervise
from tests.unit.supervising import (
    PY,
    Output,
    cmdline,
    dead_or_zombie,
    env,
    lines_of,
    linux_only,
    procfile,
)

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


# -- dying with the supervisor -------------------------------------------------

SUPERVISOR = """
import os, sys
from cairn.procfile import load_procfile
from cairn.supervisor import run
sys.exit(run(load_procfile(sys.argv[1]), dict(os.environ)))
"""


@linux_only
def test_a_sigkilled_supervisor_takes_its_children_along(tmp_path: Path, child: str) -> None:
    sleep = shutil.which("sleep") or "/bin/sleep"
    marker = f"{tmp_path}/child.py"
    (tmp_path / "Procfile").write_text(
        f"plain: {sleep} 30\npy: {child} sleep\nticker: {child} loop t\n"
    )
    expect = {"plain": f"{sleep} 30", "py": marker, "ticker": marker}
    sup = subprocess.Popen(
        [PY, "-c", SUPERVISOR, str(tmp_path / "Procfile")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pids: dict[str, int] = {}
    try:
        text = Output(sup).wait_for(lambda t: "ticker.1 " in t and t.count(" started (pid=") == 3)
        pids = {m[1]: int(m[2]) for m in re.finditer(r"\| (\S+) started \(pid=(\d+)\)", text)}
        assert set(pids) == set(expect)
        # Wait until every child runs its real program (past the wrapper).
        deadline = time.monotonic() + 5
        while not all(expect[name] in cmdline(pid) for name, pid in pids.items()):
            assert time.monotonic() < deadline, {pid: cmdline(pid) for pid in pids.values()}
            time.sleep(0.02)

        sup.kill()  # SIGKILL: the supervisor gets no chance to stop anything
        sup.wait(timeout=5)
        deadline = time.monotonic() + 3
        while not all(dead_or_zombie(pid) for pid in pids.values()):
            assert time.monotonic() < deadline, "children outlived the supervisor"
            time.sleep(0.02)
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
        for name, pid in pids.items():  # only our own, still running its program
            if not dead_or_zombie(pid) and expect[name] in cmdline(pid):
                os.killpg(pid, signal.SIGKILL)


@linux_only
def test_the_wrapper_does_not_run_the_command_if_its_parent_is_already_gone(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    command = f"touch {shlex.quote(str(marker))}"
    # The wrapper's parent is this process; tell it to expect another one, as
    # if we had died (and it had been reparented) before its prctl ran.
    done = subprocess.run(launch_argv(command, env(), 1), env=env(), timeout=10)
    assert done.returncode != 0 and not marker.exists()
    done = subprocess.run(launch_argv(command, env(), os.getpid()), env=env(), timeout=10)
    assert done.returncode == 0 and marker.exists()


@linux_only
@pytest.mark.trio
async def test_children_outlive_idle_worker_threads(
    tmp_path: Path, child: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent-death signal fires when the *thread* that forked a child
    exits.  Forking from a trio worker thread (trio's open_process does) would
    kill each child once that thread idles out, 10 s later; make that quick."""
    from trio._core import _thread_cache

    assert hasattr(_thread_cache, "IDLE_TIMEOUT")  # private: update if trio moves it
    monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", 0.05)
    specs = procfile(tmp_path, f"a: {child} loop a\n")
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        pids = await nursery.start(
            partial(supervise, specs, env(), out=out, handle_signals=False, restart=None)
        )
        await trio.to_thread.run_sync(lambda: None)  # a worker thread, then idle
        await trio.sleep(0.6)
        assert "a exited" not in out.getvalue() and not dead_or_zombie(pids["a"])
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_children_get_exactly_the_given_environment(tmp_path: Path) -> None:
    """Python's locale coercion in the wrapper must not leak LC_CTYPE."""
    printenv = shutil.which("env") or "/usr/bin/env"
    for given, expected in [({}, None), ({"LC_CTYPE": "C"}, "C")]:
        out = io.StringIO()
        specs = [ProcessSpec("e", printenv)]
        children_env = {"PATH": "/usr/bin:/bin", "FOO": "bar", **given}
        with trio.fail_after(5):
            await supervise(specs, children_env, out=out, handle_signals=False, restart=None)
        lines = lines_of(out, "e.1")
        assert "FOO=bar" in lines
        lc = [line.split("=", 1)[1] for line in lines if line.startswith("LC_CTYPE=")]
        assert lc == ([] if expected is None else [expected]), lines


# -- finding cairn -------------------------------------------------------------


def test_resolve_command_runs_cairn_with_this_interpreter() -> None:
    here = shlex.quote(sys.executable)
    assert resolve_command("cairn raftmeta --data-dir $CAIRN_DATA/r1") == (
        f"{here} -m cairn.cli raftmeta --data-dir $CAIRN_DATA/r1"
    )
    assert resolve_command("cairn") == f"{here} -m cairn.cli"
    assert resolve_command("cairnish --x") == "cairnish --x"
    assert resolve_command("echo cairn up") == "echo cairn up"


def test_cairn_up_runs_cairn_children_without_the_venv_on_path(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "cairn"
    if not script.is_file():
        pytest.skip("the cairn console script is not installed next to this interpreter")
    path = "/usr/bin:/bin"
    if shutil.which("cairn", path=path):
        pytest.skip("a cairn on the system PATH would hide the problem")
    (tmp_path / "Procfile").write_text("help: cairn --help\n")
    up = subprocess.Popen(
        [str(script), "up", "--procfile", "Procfile", "--data-dir", "data"],
        env={"PATH": path},  # like a fresh shell: the venv is not active
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        Output(up).wait_for(lambda t: "help.1 | usage: cairn COMMAND" in t)
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=10) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
