"""Tests of raftmeta.state.MetaState's fail-stop: an environmental error while applying an
entry stops the replica rather than skip the entry. Helpers: ``tests.unit.metastate``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftmeta.state import MetaState
from tests.unit.metastate import Replica, chunk, create, obj, put, replica


@pytest.fixture
def rep(tmp_path: Path) -> Iterator[Replica]:
    yield from replica(tmp_path)


# ---------------------------------------------------------------------- fail-stop on environmental errors


class FailingConnection:
    """The replica's SQLite connection, but every write fails with ``error`` (from the
    ``fail_from``-th write on) the way a full disk fails it; BEGIN, SAVEPOINT, ROLLBACK
    and reads still go through, so the entry's transaction is really opened and undone."""

    PASSTHROUGH = ("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "SELECT", "PRAGMA")

    def __init__(self, db: sqlite3.Connection, error: BaseException, fail_from: int = 1) -> None:
        self._db = db
        self.error = error
        self.fail_from = fail_from
        self.writes = 0

    def _check(self, sql: str) -> None:
        if not sql.lstrip().upper().startswith(self.PASSTHROUGH):
            self.writes += 1
            if self.writes >= self.fail_from:
                raise self.error

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._db.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


class StopRecorder:
    """Stands in for ``raftmeta.state.fail_stop`` (which would ``os._exit``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, BaseException]] = []

    def __call__(self, index: int, exc: BaseException) -> None:
        self.calls.append((index, exc))


@pytest.fixture
def stops(rep: Replica) -> StopRecorder:
    recorder = StopRecorder()
    rep.state.fail_stop = recorder
    return recorder


@pytest.mark.parametrize(
    "cmd",
    [
        {"op": "put_object", "bucket": "b", "key": "k", "ts": 1.0},  # KeyError
        {"op": "discard_chunks", "chunks": [["c"]], "ts": 1.0},  # IndexError
        {"op": "delete_objects", "bucket": "b", "keys": 5, "ts": 1.0},  # TypeError
        {"op": "put_object", "bucket": "b", "key": "k", "obj": [], "ts": 1.0},  # TypeError (list indices)
        {"op": "create_bucket", "bucket": "\ud800", "owner": "o", "ts": 1.0},  # UnicodeEncodeError
        {"op": "create_bucket", "bucket": "x", "owner": None, "ts": 1.0},  # IntegrityError: NOT NULL
        {"op": "create_bucket", "bucket": "x", "owner": "o", "ts": 1.0, "rid": {"a": 1}},  # ProgrammingError
        {"op": "node_heartbeat", "node_id": "n", "addr": "a", "capacity": 2**70, "used": 0, "ts": 1.0},  # Overflow
    ],
)
def test_invalid_command_answers_an_error_and_does_not_stop(rep: Replica, stops: StopRecorder,
                                                             cmd: dict[str, Any]) -> None:
    rep.apply(create("b"))
    dump = rep.content()
    result = rep.apply(cmd)
    assert result["ok"] is False and result["err"] == "Internal"
    assert stops.calls == []
    assert rep.state.last_applied == rep.index  # consumed: every replica fails it alike
    assert rep.state.applied_index() == rep.index  # and recorded so
    assert not rep.state.db.in_transaction
    assert rep.content() == dump
    assert rep.apply(create("next")) == {"ok": True}


def test_integrity_error_from_a_command_is_an_invalid_command(rep: Replica, stops: StopRecorder) -> None:
    """A duplicate upload id breaks the uploads primary key: deterministic, so answered."""
    rep.apply(create("b"))
    upload = {"op": "create_upload", "upload_id": "u1", "bucket": "b", "key": "k", "ts": 1.0}
    assert rep.apply(upload) == {"ok": True}
    result = rep.apply(upload)
    assert result["err"] == "Internal" and "IntegrityError" in result["msg"]
    assert stops.calls == []
    assert rep.state.last_applied == rep.index


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.OperationalError("database or disk is full"),
        sqlite3.OperationalError("disk I/O error"),
        sqlite3.OperationalError("database is locked"),
        sqlite3.DatabaseError("database disk image is malformed"),
        MemoryError(),
        OSError(28, "No space left on device"),
    ],
    ids=["full", "ioerr", "locked", "corrupt", "memory", "oserror"],
)
def test_environmental_error_fails_stop_without_advancing_the_applied_index(
        rep: Replica, stops: StopRecorder, error: BaseException) -> None:
    rep.apply(create("b"))
    applied = rep.state.applied_index()
    dump = rep.dump()
    real = rep.state.db
    rep.state.db = FailingConnection(real, error)  # type: ignore[assignment]
    result = rep.state.apply(applied + 1, put("k", obj([chunk("c1")])))
    rep.state.db = real
    assert [(i, e) for i, e in stops.calls] == [(applied + 1, error)]
    assert result["ok"] is False  # only seen because the recorder returned instead of exiting
    assert rep.state.last_applied == applied
    assert rep.state.applied_index() == applied
    assert not real.in_transaction  # rolled back before stopping
    assert rep.dump() == dump
    # the same entry again (PySyncObj's replay after the restart) is applied, not "Replayed"
    assert rep.state.apply(applied + 1, put("k", obj([chunk("c1")]))) == {"ok": True, "version": applied + 1}
    assert rep.state.applied_index() == applied + 1


def test_failure_in_the_rid_write_or_commit_fails_stop(rep: Replica, stops: StopRecorder) -> None:
    """The command's own writes succeed, the request record (2nd write) fails: nothing stays."""
    rep.apply(create("b"))
    real = rep.state.db
    rep.state.db = FailingConnection(real, sqlite3.OperationalError("database or disk is full"),  # type: ignore[assignment]
                                     fail_from=2)
    rep.state.apply(2, create("c", rid=b"r"))
    rep.state.db = real
    assert [i for i, _ in stops.calls] == [2]
    assert rep.state.last_applied == 1 and rep.state.applied_index() == 1
    assert rep.q(q="bucket", bucket="c")["err"] == "NoSuchBucket"
    assert rep.state.apply(2, create("c", rid=b"r")) == {"ok": True}  # not "retried": never recorded


def test_commit_failure_fails_stop_and_leaves_the_index(rep: Replica, stops: StopRecorder) -> None:
    rep.apply(create("b"))

    class CommitFails(FailingConnection):
        def _check(self, sql: str) -> None:
            if sql.strip().upper() == "COMMIT":
                raise self.error

    real = rep.state.db
    rep.state.db = CommitFails(real, sqlite3.OperationalError("disk I/O error"))  # type: ignore[assignment]
    rep.state.apply(2, put("k", obj()))
    rep.state.db = real
    assert [i for i, _ in stops.calls] == [2]
    assert rep.state.last_applied == 1 and rep.state.applied_index() == 1
    assert not real.in_transaction


def test_real_sqlite_full_fails_stop_and_the_restarted_replica_applies_the_entry(tmp_path: Path) -> None:
    """A real SQLITE_FULL, from a page limit, then a restart on the same file."""
    path = tmp_path / "meta.db"
    stops = StopRecorder()
    state = MetaState(str(path), fail_stop=stops)
    assert state.apply(1, create("b")) == {"ok": True}
    pages = state.db.execute("PRAGMA page_count").fetchone()[0]
    state.db.execute(f"PRAGMA max_page_count={pages}")
    big = put("k", obj(meta={"pad": "x" * 200_000}))
    state.apply(2, big)
    assert len(stops.calls) == 1
    index, exc = stops.calls[0]
    assert index == 2
    assert isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)
    assert state.last_applied == 1 and state.applied_index() == 1
    state.close()
    restarted = MetaState(str(path), fail_stop=stops)  # max_page_count is per connection
    try:
        assert restarted.last_applied == 1
        assert restarted.apply(2, big) == {"ok": True, "version": 2}
        assert restarted.query({"q": "object", "bucket": "b", "key": "k"})["obj"]["meta"]["pad"] == "x" * 200_000
    finally:
        restarted.close()
    assert len(stops.calls) == 1


def test_default_fail_stop_logs_critical_and_exits_with_its_code(
        rep: Replica, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import raftmeta.state as state_module

    exits: list[int] = []
    monkeypatch.setattr(state_module.os, "_exit", exits.append)
    rep.apply(create("b"))
    real = rep.state.db
    rep.state.db = FailingConnection(real, sqlite3.OperationalError("database or disk is full"))  # type: ignore[assignment]
    with caplog.at_level("CRITICAL", logger="raftmeta"):
        rep.state.apply(2, put("k", obj()))
    rep.state.db = real
    assert exits == [state_module.FAIL_STOP_EXIT_CODE] and exits[0] != 0
    critical = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert len(critical) == 1
    assert "entry 2" in critical[0].getMessage() and "database or disk is full" in critical[0].getMessage()


def test_fail_stop_really_terminates_the_process(tmp_path: Path) -> None:
    """In a child process, without any hook: the replica exits with FAIL_STOP_EXIT_CODE."""
    import subprocess
    import sys
    import textwrap

    from raftmeta.state import FAIL_STOP_EXIT_CODE

    script = textwrap.dedent(f"""
        import sqlite3
        from raftmeta.state import MetaState
        from tests.unit.metastate import create
        from tests.unit.test_state_failstop import FailingConnection
        s = MetaState({str(tmp_path / "meta.db")!r})
        s.apply(1, create("b"))
        s.db = FailingConnection(s.db, sqlite3.OperationalError("database or disk is full"))
        s.apply(2, create("c"))
        print("still running")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == FAIL_STOP_EXIT_CODE, done.stderr
    assert "still running" not in done.stdout
    assert "cannot apply committed entry 2" in done.stderr
    s = MetaState(str(tmp_path / "meta.db"))
    try:
        assert s.applied_index() == 1
    finally:
        s.close()
