"""The blob-node registry: heartbeats (address, capacity, usage) and the operator's state
(``core.nodes.NodeState``). What a record means (liveness) is ``core.nodes``' rule."""

from __future__ import annotations

import sqlite3
from typing import Any

from core.nodes import NodeState
from raftmeta.sm.repair import manifests_place_on
from raftmeta.sm.tables import Failed

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, addr TEXT NOT NULL, capacity INTEGER NOT NULL, used INTEGER NOT NULL,
    chunks INTEGER NOT NULL DEFAULT 0, heartbeat REAL NOT NULL, registered REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'active'
) WITHOUT ROWID;
"""


def migrate(db: sqlite3.Connection) -> None:
    """A database from before node states gets the column."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(nodes)")}
    if "state" not in columns:
        db.execute("ALTER TABLE nodes ADD COLUMN state TEXT NOT NULL DEFAULT 'active'")


def cmd_node_heartbeat(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    db.execute(
        "INSERT INTO nodes (node_id, addr, capacity, used, chunks, heartbeat, registered) VALUES (?,?,?,?,?,?,?) "
        "ON CONFLICT (node_id) DO UPDATE SET addr=excluded.addr, capacity=excluded.capacity, "
        "used=excluded.used, chunks=excluded.chunks, heartbeat=excluded.heartbeat",
        (cmd["node_id"], cmd["addr"], cmd["capacity"], cmd["used"], cmd.get("chunks", 0), cmd["ts"], cmd["ts"]),
    )
    return {}


def cmd_set_node_state(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """active | draining (no new chunks; repair moves its replicas away) | removed
    (decommissioned: refused while any manifest still places a chunk on it)."""
    state, node = cmd["state"], cmd["node_id"]
    if state not in set(NodeState):
        raise Failed("InvalidArgument")
    if db.execute("SELECT 1 FROM nodes WHERE node_id=?", (node,)).fetchone() is None:
        raise Failed("NoSuchNode")
    if state == NodeState.REMOVED and manifests_place_on(db, node):
        raise Failed("NodeNotEmpty")
    db.execute("UPDATE nodes SET state=? WHERE node_id=?", (state, node))
    return {}


def q_nodes(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    """The blob-node registry, without decommissioned nodes."""
    rows = db.execute(
        "SELECT node_id, addr, capacity, used, chunks, heartbeat, state FROM nodes WHERE state != 'removed' "
        "ORDER BY node_id"
    ).fetchall()
    keys = ("node_id", "addr", "capacity", "used", "chunks", "heartbeat", "state")
    return {"nodes": [dict(zip(keys, r, strict=True)) for r in rows]}


COMMANDS = {"node_heartbeat": cmd_node_heartbeat, "set_node_state": cmd_set_node_state}
QUERIES = {"nodes": q_nodes}
