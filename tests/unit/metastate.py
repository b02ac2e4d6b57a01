"""What the state-machine tests share: a ``MetaState`` driven like a Raft log, and the
commands the frontend writes (``tests/unit/test_state*.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raftmeta.state import MetaState


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

    def content(self) -> list[str]:
        """``dump`` without the applied index: what the commands changed."""
        return [line for line in self.dump() if not line.startswith("INSERT INTO \"meta\" VALUES('applied'")]



def replica(tmp_path: Path) -> Iterator[Replica]:
    """The body of each test file's ``rep`` fixture: a fresh replica, closed afterwards."""
    r = Replica(tmp_path / "meta.db")
    yield r
    r.state.close()
