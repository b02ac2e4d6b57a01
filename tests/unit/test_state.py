"""Tests of raftmeta.state.MetaState: the SQLite state machine every Raft replica applies.

Each test drives a real MetaState on a temp-file database, the way raftmeta.node does:
``apply(index, cmd)`` once per committed entry, ``query(q)`` to read.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftmeta.state import REQUEST_MEMORY, MetaState

# ---------------------------------------------------------------------- helpers


def chunk(cid: str, nodes: tuple[str, ...] = ("n1", "n2")) -> list[Any]:
    """A manifest entry as the frontend writes it: [id, size, sha256, [node ids]]."""
    return [cid, 100, f"sha-{cid}", list(nodes)]


def obj(chunks: list[list[Any]] | None = None, size: int = 100, etag: str = "etag", created: float = 1.0,
        meta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "size": size, "etag": etag, "sha256": f"sha-{etag}", "content_type": "text/plain",
        "created": created, "meta": meta if meta is not None else {}, "chunks": chunks if chunks is not None else [],
    }


def create(bucket: str = "b", owner: str = "alice", **extra: Any) -> dict[str, Any]:
    return {"op": "create_bucket", "bucket": bucket, "owner": owner, "ts": 1.0, **extra}


def put(key: str, o: dict[str, Any], bucket: str = "b", ts: float = 2.0, **extra: Any) -> dict[str, Any]:
    return {"op": "put_object", "bucket": bucket, "key": key, "obj": o, "ts": ts, **extra}


def delete(key: str, bucket: str = "b", ts: float = 3.0, **extra: Any) -> dict[str, Any]:
    return {"op": "delete_object", "bucket": bucket, "key": key, "ts": ts, **extra}


class Replica:
    """A MetaState plus the next Raft index, so tests read like a log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = MetaState(str(path))
        self.index = self.state.last_applied

    def apply(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        return self.state.apply(self.index, cmd)

    def q(self, **q: Any) -> dict[str, Any]:
        return self.state.query(q)

    def gc_chunks(self) -> list[str]:
        return [item[1] for item in self.q(q="gc_pending", before=1e18, limit=10**6)["items"]]

    def dump(self) -> list[str]:
        return list(self.state.db.iterdump())


@pytest.fixture
def rep(tmp_path: Path):
    r = Replica(tmp_path / "meta.db")
    yield r
    r.state.close()


# ---------------------------------------------------------------------- idempotent replay


def test_entry_at_or_below_last_applied_is_skipped(rep: Replica) -> None:
    assert rep.state.apply(1, create("one")) == {"ok": True}
    assert rep.state.apply(1, create("two")) == {"ok": False, "err": "Replayed"}
    assert rep.state.apply(0, create("three")) == {"ok": False, "err": "Replayed"}
    # indexes may jump (barriers, other replicas' entries); older ones are still skipped
    assert rep.state.apply(5, create("five"))["ok"] is True
    assert rep.state.apply(3, create("three"))["err"] == "Replayed"
    assert rep.state.apply(5, create("again"))["err"] == "Replayed"
    assert [b[0] for b in rep.q(q="buckets")["buckets"]] == ["five", "one"]
    assert rep.state.applied_index() == 5
    assert rep.state.last_applied == 5


def test_reopened_state_remembers_applied_index_and_skips_replays(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    log = [
        create("b"),
        put("k", obj([chunk("c1"), chunk("c2")])),
        put("k", obj([chunk("c3")])),  # queues c1, c2
        put("j", obj([chunk("c4")], size=7)),
        delete("k"),  # queues c3
        {"op": "delete_bucket", "bucket": "nope"},  # fails, but is still an applied entry
    ]
    first = MetaState(str(path))
    results = [first.apply(i, cmd) for i, cmd in enumerate(log, start=1)]
    assert [r["ok"] for r in results] == [True, True, True, True, True, False]
    before = list(first.db.iterdump())
    stats = first.query({"q": "stats"})
    first.close()

    second = MetaState(str(path))  # a new object on the same file: a restarted replica
    try:
        assert second.last_applied == len(log)
        assert second.applied_index() == len(log)
        # PySyncObj replays its whole journal on start: every entry must be a no-op now
        for i, cmd in enumerate(log, start=1):
            assert second.apply(i, cmd) == {"ok": False, "err": "Replayed"}
        assert list(second.db.iterdump()) == before
        assert second.query({"q": "stats"}) == stats == {
            "ok": True, "buckets": 1, "objects": 1, "bytes": 7, "gc_queue": 3,
        }
        # and the log continues from where it was
        assert second.apply(len(log) + 1, put("k", obj([chunk("c5")]))) == {"ok": True, "version": len(log) + 1}
    finally:
        second.close()


def test_reopen_method_rereads_applied_index(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj()))
    rep.state.reopen()
    assert rep.state.last_applied == 2
    assert rep.state.apply(2, put("k", obj([chunk("x")])))["err"] == "Replayed"
    assert rep.q(q="object", bucket="b", key="k")["obj"]["chunks"] == []


def test_failed_command_still_advances_applied_index_durably(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    s = MetaState(str(path))
    assert s.apply(1, {"op": "delete_bucket", "bucket": "missing"})["err"] == "NoSuchBucket"
    s.close()
    s = MetaState(str(path))
    try:
        assert s.last_applied == 1
    finally:
        s.close()


def test_barrier_changes_nothing_and_consumes_its_index(rep: Replica) -> None:
    rep.apply(create())
    dump = rep.dump()
    assert rep.state.apply(2, {"op": "barrier"}) == {"ok": True, "index": 2}
    assert rep.dump() == dump
    assert rep.q(q="stats") == {"ok": True, "buckets": 1, "objects": 0, "bytes": 0, "gc_queue": 0}
    assert rep.state.apply(2, create("other"))["err"] == "Replayed"
    assert rep.state.apply(3, create("other")) == {"ok": True}


def test_replicas_applying_the_same_log_are_identical(tmp_path: Path) -> None:
    """Determinism: time comes from the command, so two replicas end byte-for-byte equal."""
    a, b = Replica(tmp_path / "a.db"), Replica(tmp_path / "b.db")
    rng = random.Random(7)
    log: list[dict[str, Any]] = [create("b"), create("c", owner="bob")]
    for n in range(60):
        key = rng.choice(["x", "y", "z/1", "z/2"])
        roll = rng.random()
        if roll < 0.6:
            log.append(put(key, obj([chunk(f"c{n}a"), chunk(f"c{n}b")], size=n), ts=float(n), rid=f"r{n}".encode()))
        elif roll < 0.85:
            log.append(delete(key, ts=float(n)))
        else:
            log.append({"op": "node_heartbeat", "node_id": f"n{n % 3}", "addr": "h:1", "capacity": 10, "used": n,
                        "ts": float(n)})
    try:
        ra = [a.apply(c) for c in log]
        rb = [b.apply(c) for c in log]
        assert ra == rb
        assert a.dump() == b.dump()
    finally:
        a.state.close()
        b.state.close()


# ---------------------------------------------------------------------- request-id dedupe


def test_retried_create_bucket_returns_first_result_not_already_owned(rep: Replica) -> None:
    assert rep.apply(create(rid=b"r1")) == {"ok": True}
    assert rep.apply(create(rid=b"r1")) == {"ok": True, "retried": True}
    assert rep.state.applied_index() == 2  # the retry is still an applied entry
    # a genuinely new request for the same bucket is a conflict
    assert rep.apply(create(rid=b"r2"))["err"] == "BucketAlreadyOwnedByYou"


def test_retried_put_object_does_not_queue_its_own_chunks(rep: Replica) -> None:
    rep.apply(create())
    cmd = put("k", obj([chunk("c1"), chunk("c2")]), rid=b"put-1")
    first = rep.apply(cmd)
    assert first == {"ok": True, "version": 2}
    dump = rep.dump()
    again = rep.apply(cmd)
    assert again == {"ok": True, "version": 2, "retried": True}
    assert rep.gc_chunks() == []
    o = rep.q(q="object", bucket="b", key="k")["obj"]
    assert o["version"] == 2
    assert [c[0] for c in o["chunks"]] == ["c1", "c2"]
    # nothing but the applied index changed
    assert [line for line in rep.dump() if "'applied'" not in line] == [
        line for line in dump if "'applied'" not in line
    ]


def test_retried_failure_returns_the_first_failure_even_if_it_would_now_succeed(rep: Replica) -> None:
    rep.apply(create("b", owner="alice"))
    cmd = create("b", owner="bob", rid=b"bob-1")
    assert rep.apply(cmd)["err"] == "BucketAlreadyExists"
    assert rep.apply({"op": "delete_bucket", "bucket": "b"}) == {"ok": True}
    retried = rep.apply(cmd)
    assert retried["ok"] is False
    assert retried["err"] == "BucketAlreadyExists"
    assert retried["retried"] is True
    assert rep.q(q="bucket", bucket="b")["err"] == "NoSuchBucket"  # applied once: not created now


def test_retried_delete_object_does_not_delete_a_newer_version(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("old")])))
    d = delete("k", rid=b"del-1")
    assert rep.apply(d) == {"ok": True, "existed": True}
    rep.apply(put("k", obj([chunk("new")])))
    assert rep.apply(d) == {"ok": True, "existed": True, "retried": True}
    assert rep.q(q="object", bucket="b", key="k")["obj"]["chunks"][0][0] == "new"
    assert rep.gc_chunks() == ["old"]


def test_request_ids_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    s = MetaState(str(path))
    s.apply(1, create(rid=b"r"))
    s.close()
    s = MetaState(str(path))
    try:
        assert s.apply(2, create(rid=b"r")) == {"ok": True, "retried": True}
    finally:
        s.close()


def test_request_ids_are_remembered_for_request_memory_entries(rep: Replica) -> None:
    assert rep.state.apply(1, create("old", rid=b"old")) == {"ok": True}
    assert rep.state.apply(2000, create("mid", rid=b"mid")) == {"ok": True}
    # a write with a rid at a multiple of 1000 prunes ids older than REQUEST_MEMORY entries
    prune_at = 1000 + REQUEST_MEMORY
    assert rep.state.apply(prune_at, create("new", rid=b"new")) == {"ok": True}
    # 'mid' is within the memory: still recognised
    assert rep.state.apply(prune_at + 1, create("mid", rid=b"mid")) == {"ok": True, "retried": True}
    # 'old' is more than REQUEST_MEMORY entries back: forgotten, so it runs again
    assert rep.state.apply(prune_at + 2, create("old", rid=b"old"))["err"] == "BucketAlreadyOwnedByYou"


# ---------------------------------------------------------------------- apply never raises


def test_unknown_op_is_a_bad_request_and_the_log_goes_on(rep: Replica) -> None:
    r = rep.apply({"op": "drop_everything", "bucket": "b"})
    assert r["ok"] is False and r["err"] == "BadRequest"
    r = rep.apply({"bucket": "b"})  # no op at all
    assert r["ok"] is False and r["err"] == "BadRequest"
    assert rep.state.applied_index() == 2
    assert rep.apply(create()) == {"ok": True}


@pytest.mark.parametrize(
    "cmd",
    [
        {"op": "create_bucket", "bucket": "b", "ts": 1.0},  # no owner
        {"op": "create_bucket", "owner": "alice", "ts": 1.0},  # no bucket
        {"op": "put_object", "bucket": "b", "key": "k", "ts": 1.0},  # no obj
        {"op": "put_object", "bucket": "b", "key": "k", "obj": {"size": 1}, "ts": 1.0},  # obj missing fields
        {"op": "delete_object", "bucket": "b"},
        {"op": "gc_done"},
        {"op": "node_heartbeat", "node_id": "n1"},
        {"op": "discard_chunks", "chunks": [["c"]], "ts": 1.0},  # entry too short
        {"op": "create_bucket", "bucket": "x", "owner": "o", "ts": 1.0, "rid": {"not": "bindable"}},
    ],
)
def test_malformed_command_is_an_internal_error_not_an_exception(rep: Replica, cmd: dict[str, Any]) -> None:
    rep.apply(create("b"))
    dump = rep.dump()
    result = rep.apply(cmd)  # must not raise
    assert result["ok"] is False
    assert result["err"] == "Internal"
    assert isinstance(result["msg"], str)
    assert not rep.state.db.in_transaction  # rolled back, not left open
    assert rep.dump() == dump  # nothing half-applied
    # the state machine keeps going, and the failed entry is not replayed over later ones
    assert rep.apply(put("k2", obj([chunk("z")]))) == {"ok": True, "version": rep.index}
    assert rep.state.apply(rep.index - 1, cmd)["err"] == "Replayed"


def test_failure_after_partial_work_rolls_everything_back(rep: Replica) -> None:
    """put_object queues the old chunks before it writes the row; a failure must undo both."""
    rep.apply(create())
    rep.apply(put("k", obj([chunk("c1"), chunk("c2")])))
    bad = obj([chunk("c3")])
    del bad["sha256"]
    dump = rep.dump()
    result = rep.apply(put("k", bad))
    assert result["err"] == "Internal"
    assert rep.gc_chunks() == []
    assert [c[0] for c in rep.q(q="object", bucket="b", key="k")["obj"]["chunks"]] == ["c1", "c2"]
    assert rep.dump() == dump
    # and after a restart too
    rep.state.reopen()
    assert rep.gc_chunks() == []
    assert rep.apply(put("k", obj([chunk("c3")])))["ok"] is True
    assert sorted(rep.gc_chunks()) == ["c1", "c2"]


def test_failed_command_with_rid_is_rolled_back_but_remembered(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj()))
    cmd = {"op": "delete_bucket", "bucket": "b", "rid": b"d"}
    assert rep.apply(cmd)["err"] == "BucketNotEmpty"
    rep.apply(delete("k"))
    assert rep.apply(cmd)["err"] == "BucketNotEmpty"  # first answer, not a second attempt
    assert rep.q(q="bucket", bucket="b")["ok"] is True


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
    dump = rep.dump()
    result = rep.apply(cmd)
    assert result["ok"] is False and result["err"] == "Internal"
    assert stops.calls == []
    assert rep.state.last_applied == rep.index  # consumed: every replica fails it alike
    assert not rep.state.db.in_transaction
    assert rep.dump() == dump
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
        from tests.unit.test_state import FailingConnection, create
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


# ---------------------------------------------------------------------- buckets


def test_create_bucket_and_read_it_back(rep: Replica) -> None:
    assert rep.apply({"op": "create_bucket", "bucket": "zed", "owner": "alice", "ts": 5.5}) == {"ok": True}
    assert rep.apply({"op": "create_bucket", "bucket": "abc", "owner": "bob", "ts": 6.5, "acl": "public-read"}) == {
        "ok": True
    }
    assert rep.q(q="bucket", bucket="zed") == {"ok": True, "owner": "alice", "created": 5.5, "acl": "private"}
    assert rep.q(q="bucket", bucket="abc") == {"ok": True, "owner": "bob", "created": 6.5, "acl": "public-read"}
    assert rep.q(q="buckets") == {"ok": True, "buckets": [["abc", 6.5], ["zed", 5.5]]}
    assert rep.q(q="bucket", bucket="nope") == {"ok": False, "err": "NoSuchBucket", "msg": ""}


def test_create_existing_bucket_owned_by_you_vs_someone_else(rep: Replica) -> None:
    rep.apply(create("b", owner="alice"))
    mine = rep.apply(create("b", owner="alice"))
    theirs = rep.apply(create("b", owner="bob"))
    assert mine == {"ok": False, "err": "BucketAlreadyOwnedByYou", "msg": ""}
    assert theirs == {"ok": False, "err": "BucketAlreadyExists", "msg": ""}
    assert rep.q(q="bucket", bucket="b")["owner"] == "alice"
    assert rep.q(q="stats")["buckets"] == 1


def test_delete_bucket(rep: Replica) -> None:
    assert rep.apply({"op": "delete_bucket", "bucket": "b"})["err"] == "NoSuchBucket"
    rep.apply(create("b"))
    rep.apply(put("k", obj()))
    assert rep.apply({"op": "delete_bucket", "bucket": "b"})["err"] == "BucketNotEmpty"
    assert rep.q(q="bucket", bucket="b")["ok"] is True
    rep.apply(delete("k"))
    assert rep.apply({"op": "delete_bucket", "bucket": "b"}) == {"ok": True}
    assert rep.q(q="bucket", bucket="b")["err"] == "NoSuchBucket"
    assert rep.q(q="buckets")["buckets"] == []
    # the name is free again, for anyone
    assert rep.apply(create("b", owner="bob")) == {"ok": True}
    assert rep.q(q="bucket", bucket="b")["owner"] == "bob"


def test_bucket_not_empty_only_counts_its_own_objects(rep: Replica) -> None:
    rep.apply(create("a"))
    rep.apply(create("ab"))
    rep.apply(put("k", obj(), bucket="ab"))
    assert rep.apply({"op": "delete_bucket", "bucket": "a"}) == {"ok": True}


# ---------------------------------------------------------------------- objects


def test_put_object_version_is_the_raft_index_and_fields_round_trip(rep: Replica) -> None:
    rep.apply(create())
    meta = {"user": {"colour": "blue"}, "headers": {"cache-control": "no-cache"}, "checksum": {"crc32": "AAAA"}}
    o = obj([chunk("c1", ("n1", "n2", "n3")), chunk("c2")], size=12345, etag="e1", created=42.5, meta=meta)
    assert rep.state.apply(17, put("dir/key é", o, ts=99.0)) == {"ok": True, "version": 17}
    got = rep.q(q="object", bucket="b", key="dir/key é")
    assert got == {
        "ok": True,
        "obj": {
            "key": "dir/key é", "size": 12345, "etag": "e1", "sha256": "sha-e1", "content_type": "text/plain",
            "created": 42.5, "version": 17, "meta": meta, "chunks": o["chunks"],
        },
    }


def test_version_cannot_be_forged_by_the_command(rep: Replica) -> None:
    rep.apply(create())
    assert rep.state.apply(9, {**put("k", obj()), "index": 1}) == {"ok": True, "version": 9}
    assert rep.q(q="object", bucket="b", key="k")["obj"]["version"] == 9


def test_put_replaces_and_queues_only_chunks_the_new_version_drops(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("a", ("n1",)), chunk("b", ("n2",)), chunk("c", ("n3", "n4"))], size=300)))
    r = rep.apply(put("k", obj([chunk("b", ("n2",)), chunk("d", ("n5",))], size=200, etag="v2"), ts=50.0))
    assert r == {"ok": True, "version": 3}
    o = rep.q(q="object", bucket="b", key="k")["obj"]
    assert (o["size"], o["etag"], o["version"]) == (200, "v2", 3)
    assert [c[0] for c in o["chunks"]] == ["b", "d"]
    pending = rep.q(q="gc_pending", before=50.0)
    # the dropped chunks, with the nodes that hold them, queued at the command's ts
    assert [[i[1], i[2]] for i in pending["items"]] == [["a", ["n1"]], ["c", ["n3", "n4"]]]
    assert rep.q(q="gc_pending", before=49.9)["items"] == []
    assert rep.q(q="stats") == {"ok": True, "buckets": 1, "objects": 1, "bytes": 200, "gc_queue": 2}
    refs = rep.q(q="chunk_refs")
    assert sorted(refs["referenced"]) == ["b", "d"]
    assert set(refs["referenced"]).isdisjoint(refs["gc"])


def test_put_with_same_chunks_queues_nothing(rep: Replica) -> None:
    rep.apply(create())
    chunks = [chunk("a"), chunk("b")]
    rep.apply(put("k", obj(chunks)))
    rep.apply(put("k", obj(chunks, etag="again")))
    assert rep.gc_chunks() == []
    assert rep.q(q="object", bucket="b", key="k")["obj"]["etag"] == "again"


def test_same_key_in_two_buckets_is_independent(rep: Replica) -> None:
    rep.apply(create("b1"))
    rep.apply(create("b2"))
    rep.apply(put("k", obj([chunk("x")]), bucket="b1"))
    rep.apply(put("k", obj([chunk("y")]), bucket="b2"))
    rep.apply(delete("k", bucket="b1"))
    assert rep.gc_chunks() == ["x"]
    assert rep.q(q="object", bucket="b2", key="k")["obj"]["chunks"][0][0] == "y"
    assert rep.q(q="object", bucket="b1", key="k")["err"] == "NoSuchKey"


def test_delete_object_queues_all_its_chunks(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("a", ("n1",)), chunk("b", ("n2", "n3"))])))
    assert rep.apply(delete("k", ts=77.0)) == {"ok": True, "existed": True}
    items = rep.q(q="gc_pending", before=77.0)["items"]
    assert [[i[1], i[2]] for i in items] == [["a", ["n1"]], ["b", ["n2", "n3"]]]
    assert rep.q(q="object", bucket="b", key="k") == {"ok": False, "err": "NoSuchKey", "msg": ""}
    assert rep.q(q="stats")["objects"] == 0


def test_delete_missing_key_is_ok_and_queues_nothing(rep: Replica) -> None:
    rep.apply(create())
    assert rep.apply(delete("never")) == {"ok": True, "existed": False}
    rep.apply(put("k", obj([chunk("a")])))
    rep.apply(delete("k"))
    assert rep.apply(delete("k")) == {"ok": True, "existed": False}
    assert rep.gc_chunks() == ["a"]  # queued exactly once


def test_missing_bucket(rep: Replica) -> None:
    assert rep.apply(put("k", obj([chunk("a")]), bucket="nope"))["err"] == "NoSuchBucket"
    assert rep.apply(delete("k", bucket="nope"))["err"] == "NoSuchBucket"
    assert rep.q(q="object", bucket="nope", key="k")["err"] == "NoSuchBucket"
    assert rep.q(q="list", bucket="nope")["err"] == "NoSuchBucket"
    assert rep.gc_chunks() == []
    assert rep.q(q="stats") == {"ok": True, "buckets": 0, "objects": 0, "bytes": 0, "gc_queue": 0}


def test_keys_are_stored_exactly(rep: Replica) -> None:
    rep.apply(create())
    keys = ["a/../b", "a/b", "a//b", "./a", "a/", "A", "a", " a", "é", "e\u0301", "\U0001f600", "a\x00b"]
    for i, k in enumerate(keys):
        rep.apply(put(k, obj(size=i)))
    for i, k in enumerate(keys):
        assert rep.q(q="object", bucket="b", key=k)["obj"]["size"] == i
    listed = [c["key"] for c in rep.q(q="list", bucket="b")["contents"]]
    assert listed == sorted(keys)


def test_discard_chunks_queues_them(rep: Replica) -> None:
    assert rep.apply({"op": "discard_chunks", "chunks": [chunk("o1", ("n1",)), chunk("o2", ("n2",))], "ts": 4.0}) == {
        "ok": True
    }
    assert [[i[1], i[2]] for i in rep.q(q="gc_pending", before=4.0)["items"]] == [["o1", ["n1"]], ["o2", ["n2"]]]


# ---------------------------------------------------------------------- listing


def reference_entries(keys: set[str] | list[str], prefix: str, delimiter: str) -> list[tuple[str, bool]]:
    """Brute-force S3 ListObjects: every key under ``prefix`` in order; with a delimiter,
    a key whose remainder after the prefix contains it rolls up into the common prefix
    ending at its first occurrence. Returns (name, is_common_prefix) in name order."""
    entries: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for key in sorted(keys):
        if not key.startswith(prefix):
            continue
        if delimiter:
            rest = key[len(prefix):]
            pos = rest.find(delimiter)
            if pos >= 0:
                common = prefix + rest[: pos + len(delimiter)]
                if common not in seen:
                    seen.add(common)
                    entries.append((common, True))
                continue
        entries.append((key, False))
    assert entries == sorted(entries), "reference bug: entries must already be in name order"
    return entries


def reference_page(entries: list[tuple[str, bool]], after: str, max_keys: int) -> dict[str, Any]:
    rest = [e for e in entries if e[0] > after]
    page = rest[:max_keys]
    return {
        "contents": [n for n, p in page if not p],
        "prefixes": [n for n, p in page if p],
        "truncated": len(rest) > max_keys,
        "last": page[-1][0] if page else "",
    }


def page_entries(page: dict[str, Any]) -> list[tuple[str, bool]]:
    contents = [c["key"] for c in page["contents"]]
    assert contents == sorted(contents)
    assert page["prefixes"] == sorted(page["prefixes"])
    return sorted([(k, False) for k in contents] + [(p, True) for p in page["prefixes"]])


def check_listing(state: MetaState, bucket: str, keys: set[str], prefix: str, delimiter: str, max_keys: int,
                  after: str = "") -> None:
    entries = reference_entries(keys, prefix, delimiter)
    q = {"q": "list", "bucket": bucket, "prefix": prefix, "delimiter": delimiter, "max_keys": max_keys}

    # one page from an arbitrary start
    page = state.query({**q, "after": after})
    assert page["ok"] is True
    got = {k: page[k] for k in ("truncated", "last")}
    got["contents"] = [c["key"] for c in page["contents"]]
    got["prefixes"] = page["prefixes"]
    assert got == reference_page(entries, after, max_keys), (sorted(keys), prefix, delimiter, max_keys, after)

    # paging from the start with after = last, until not truncated
    listed: list[tuple[str, bool]] = []
    cursor = ""
    for _ in range(len(entries) + 2):
        page = state.query({**q, "after": cursor})
        ents = page_entries(page)
        assert len(ents) <= max_keys
        if page["truncated"]:
            assert len(ents) == max_keys
        if ents:
            assert page["last"] == ents[-1][0]
        listed += ents
        if not page["truncated"]:
            break
        cursor = page["last"]
    else:
        pytest.fail("listing did not terminate")
    assert listed == entries, (sorted(keys), prefix, delimiter, max_keys)
    assert len({n for n, _ in listed}) == len(listed)


ALPHABET = ["a", "b", "/", "!", " ", "-", "é", "日", "\U0001f600", "\x7f"]
DELIMITERS = ["/", "//", "ab", "a", "!", " ", "é", "/a", "\U0001f600"]


def rand_str(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(lo, hi)))


@pytest.fixture(scope="module")
def list_state(tmp_path_factory: pytest.TempPathFactory):
    s = MetaState(str(tmp_path_factory.mktemp("list") / "meta.db"))
    yield s
    s.close()


class _Counter:
    index = 0
    bucket = 0


def _fill(state: MetaState, keys: set[str]) -> str:
    _Counter.bucket += 1
    name = f"bkt{_Counter.bucket}"
    _Counter.index += 1
    assert state.apply(_Counter.index, create(name))["ok"]
    for k in keys:
        _Counter.index += 1
        assert state.apply(_Counter.index, put(k, obj(size=len(k)), bucket=name))["ok"]
    return name


def test_listing_matches_reference_on_random_key_sets(list_state: MetaState) -> None:
    rng = random.Random(20240611)
    for _ in range(70):
        keys = {rand_str(rng, 1, 5) for _ in range(rng.randint(0, 30))}
        bucket = _fill(list_state, keys)
        for _ in range(6):
            roll = rng.random()
            if roll < 0.3 and keys:
                prefix = rng.choice(sorted(keys))[: rng.randint(0, 3)]
            else:
                prefix = rand_str(rng, 0, 2)
            delimiter = "" if rng.random() < 0.2 else rng.choice(DELIMITERS)
            max_keys = rng.choice([1, 1, 2, 3, 5, 1000])
            entries = reference_entries(keys, prefix, delimiter)
            roll = rng.random()
            if roll < 0.3 and entries:
                after = rng.choice(entries)[0]  # a key or a common prefix, as a cursor would be
            elif roll < 0.5 and keys:
                after = rng.choice(sorted(keys))  # a key inside a rolled-up prefix: StartAfter
            elif roll < 0.8:
                after = rand_str(rng, 0, 4)
            else:
                after = ""
            check_listing(list_state, bucket, keys, prefix, delimiter, max_keys, after)


_token = st.sampled_from(ALPHABET + ["ab", "//"])
_text = st.lists(_token, min_size=0, max_size=4).map("".join)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.sets(st.lists(_token, min_size=1, max_size=5).map("".join), max_size=20),
    prefix=_text,
    delimiter=st.sampled_from(["", *DELIMITERS]),
    max_keys=st.integers(min_value=1, max_value=6),
    after=_text,
)
def test_listing_matches_reference_hypothesis(list_state: MetaState, keys: set[str], prefix: str, delimiter: str,
                                              max_keys: int, after: str) -> None:
    bucket = _fill(list_state, keys)
    check_listing(list_state, bucket, keys, prefix, delimiter, max_keys, after)


def test_listing_max_keys_1_pages_across_common_prefixes(rep: Replica) -> None:
    rep.apply(create())
    keys = ["a b", "a!", "a/1", "a/2", "a/x/y", "a0", "b", "c/x/y", "c/z", "d"]
    for k in keys:
        rep.apply(put(k, obj()))
    pages = []
    after = ""
    while True:
        page = rep.q(q="list", bucket="b", delimiter="/", after=after, max_keys=1)
        pages.append(([c["key"] for c in page["contents"]], page["prefixes"], page["truncated"], page["last"]))
        if not page["truncated"]:
            break
        after = page["last"]
    assert pages == [
        (["a b"], [], True, "a b"),
        (["a!"], [], True, "a!"),
        ([], ["a/"], True, "a/"),
        (["a0"], [], True, "a0"),
        (["b"], [], True, "b"),
        ([], ["c/"], True, "c/"),
        (["d"], [], False, "d"),
    ]
    # the same with a prefix: only the part after the prefix is searched for the delimiter
    page = rep.q(q="list", bucket="b", prefix="a/", delimiter="/", max_keys=1000)
    assert ([c["key"] for c in page["contents"]], page["prefixes"]) == (["a/1", "a/2"], ["a/x/"])


def test_listing_multichar_delimiter_and_prefix_boundary(rep: Replica) -> None:
    rep.apply(create())
    for k in ["x//y", "x/y", "x//z//w", "x///", "a//b", "a/b"]:
        rep.apply(put(k, obj()))
    page = rep.q(q="list", bucket="b", prefix="x", delimiter="//")
    assert [c["key"] for c in page["contents"]] == ["x/y"]
    assert page["prefixes"] == ["x//"]
    # the delimiter must start after the prefix: "a/" + "/b" has no "//" in "/b"
    page = rep.q(q="list", bucket="b", prefix="a/", delimiter="//")
    assert [c["key"] for c in page["contents"]] == ["a//b", "a/b"]
    assert page["prefixes"] == []


def test_listing_entries_carry_size_etag_created(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj(size=5, etag="e5", created=3.25)))
    assert rep.q(q="list", bucket="b")["contents"] == [{"key": "k", "size": 5, "etag": "e5", "created": 3.25}]
    assert rep.q(q="list", bucket="b", after="k") == {
        "ok": True, "contents": [], "prefixes": [], "truncated": False, "last": "",
    }


def test_listing_prefix_ending_in_u_d7ff(rep: Replica) -> None:
    rep.apply(create())
    keys = ["x\ud7ffa", "x\ud7ff", "y"]
    for k in keys:
        rep.apply(put(k, obj()))
    page = rep.q(q="list", bucket="b", prefix="x\ud7ff")
    assert [c["key"] for c in page["contents"]] == ["x\ud7ff", "x\ud7ffa"]


def test_listing_prefix_ending_in_max_code_point(rep: Replica) -> None:
    rep.apply(create())
    for k in ["x\U0010ffffa", "y"]:
        rep.apply(put(k, obj()))
    page = rep.q(q="list", bucket="b", prefix="x\U0010ffff")
    assert [c["key"] for c in page["contents"]] == ["x\U0010ffffa"]


def test_listing_common_prefix_ending_in_u_d7ff(rep: Replica) -> None:
    rep.apply(create())
    for k in ["q/\ud7ffz", "q/\ud7ffy", "r"]:
        rep.apply(put(k, obj()))
    page = rep.q(q="list", bucket="b", delimiter="\ud7ff")
    assert page["prefixes"] == ["q/\ud7ff"]
    assert [c["key"] for c in page["contents"]] == ["r"]


# ---------------------------------------------------------------------- gc queue, nodes, stats


def test_gc_pending_before_and_limit_and_gc_done(rep: Replica) -> None:
    for ts, ids in ((10.0, ["a", "b"]), (20.0, ["c"]), (30.0, ["d"])):
        rep.apply({"op": "discard_chunks", "chunks": [chunk(i) for i in ids], "ts": ts})
    everything = rep.q(q="gc_pending", before=100.0)
    assert [i[1] for i in everything["items"]] == ["a", "b", "c", "d"]
    seqs = [i[0] for i in everything["items"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4

    assert rep.q(q="gc_pending", before=9.99) == {"ok": True, "items": [], "total": 4}
    r = rep.q(q="gc_pending", before=20.0)  # inclusive
    assert [i[1] for i in r["items"]] == ["a", "b", "c"] and r["total"] == 4
    r = rep.q(q="gc_pending", before=100.0, limit=2)
    assert [i[1] for i in r["items"]] == ["a", "b"] and r["total"] == 4
    assert r["items"][0][2] == ["n1", "n2"]

    assert rep.apply({"op": "gc_done", "seqs": seqs[:2]}) == {"ok": True}
    r = rep.q(q="gc_pending", before=100.0)
    assert [i[1] for i in r["items"]] == ["c", "d"] and r["total"] == 2
    # done again, or unknown seqs: harmless
    assert rep.apply({"op": "gc_done", "seqs": [*seqs[:2], 999_999]}) == {"ok": True}
    assert rep.q(q="gc_pending", before=100.0)["total"] == 2
    assert rep.q(q="stats")["gc_queue"] == 2


def test_node_heartbeat_upserts(rep: Replica) -> None:
    hb = {"op": "node_heartbeat", "node_id": "n2", "addr": "10.0.0.2:9000", "capacity": 1000, "used": 10, "ts": 5.0}
    assert rep.apply(hb) == {"ok": True}
    rep.apply({**hb, "node_id": "n1", "addr": "10.0.0.1:9000", "chunks": 3})
    assert rep.q(q="nodes")["nodes"] == [
        {"node_id": "n1", "addr": "10.0.0.1:9000", "capacity": 1000, "used": 10, "chunks": 3, "heartbeat": 5.0,
         "state": "active"},
        {"node_id": "n2", "addr": "10.0.0.2:9000", "capacity": 1000, "used": 10, "chunks": 0, "heartbeat": 5.0,
         "state": "active"},
    ]
    rep.apply({**hb, "addr": "10.0.0.9:9001", "capacity": 2000, "used": 500, "chunks": 7, "ts": 9.0})
    nodes = {n["node_id"]: n for n in rep.q(q="nodes")["nodes"]}
    assert len(nodes) == 2
    assert nodes["n2"] == {"node_id": "n2", "addr": "10.0.0.9:9001", "capacity": 2000, "used": 500, "chunks": 7,
                           "heartbeat": 9.0, "state": "active"}
    # registration time is the first heartbeat's
    with sqlite3.connect(rep.path) as db:
        assert db.execute("SELECT registered FROM nodes WHERE node_id='n2'").fetchone() == (5.0,)


def test_stats(rep: Replica) -> None:
    assert rep.q(q="stats") == {"ok": True, "buckets": 0, "objects": 0, "bytes": 0, "gc_queue": 0}
    rep.apply(create("b"))
    rep.apply(create("c"))
    rep.apply(put("k1", obj([chunk("a")], size=10)))
    rep.apply(put("k2", obj([chunk("b")], size=32), bucket="c"))
    rep.apply(put("k1", obj([chunk("d")], size=11)))
    assert rep.q(q="stats") == {"ok": True, "buckets": 2, "objects": 2, "bytes": 43, "gc_queue": 1}


def test_unknown_query(rep: Replica) -> None:
    r = rep.q(q="everything")
    assert r["ok"] is False and r["err"] == "BadRequest"


def test_copy_shares_chunks_and_counts_references(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("src", obj([chunk("c1"), chunk("c2")])))
    copy = {"op": "copy_object", "src_bucket": "b", "src_key": "src", "bucket": "b", "key": "dst", "ts": 2.0}
    assert rep.apply(copy)["ok"] is True
    assert rep.apply({**copy, "key": "dst2"})["ok"] is True
    assert rep.gc_chunks() == []
    rep.apply(delete("src"))
    rep.apply(delete("dst"))
    assert rep.gc_chunks() == []  # dst2 still holds them
    rep.apply(delete("dst2"))
    assert sorted(rep.gc_chunks()) == ["c1", "c2"]


def test_copy_onto_itself_keeps_one_reference(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("c1")])))
    copy = {"op": "copy_object", "src_bucket": "b", "src_key": "k", "bucket": "b", "key": "k", "ts": 2.0,
            "meta": {"user": {"new": "meta"}}}
    assert rep.apply(copy)["ok"] is True
    assert rep.gc_chunks() == []
    rep.apply(delete("k"))
    assert rep.gc_chunks() == ["c1"]


def test_copy_checks_source_etag_atomically(rep: Replica) -> None:
    rep.apply(create())
    rep.apply(put("k", obj([chunk("c1")])))
    copy = {"op": "copy_object", "src_bucket": "b", "src_key": "k", "bucket": "b", "key": "d", "ts": 2.0,
            "source_etag": "not-the-etag"}
    assert rep.apply(copy)["err"] == "PreconditionFailed"
    assert rep.apply({**copy, "src_key": "missing", "source_etag": None})["err"] == "NoSuchKey"
