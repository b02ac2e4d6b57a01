"""Raft membership as clients see it: which raftmeta nodes exist and where their RPC is.

PySyncObj keeps the voting membership itself (``addNodeToCluster`` /
``removeNodeFromCluster``, one change at a time, replayed from its journal and
snapshots on restart). Raft addresses are all it knows, so every raftmeta node records
its RPC address here, through Raft, once it is a member; frontends and blob nodes read
this map to follow a replaced member without a restart or a config change.

Each member also records the newest entry format it applies (``level``): the leader
puts several commands in one entry (``LEVEL_BATCH``) only once every voting member has
recorded that it can apply such an entry, so a cluster being upgraded one node at a
time never logs an entry one of its members would not understand.
"""

from __future__ import annotations

import sqlite3
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS members (raft TEXT PRIMARY KEY, rpc TEXT NOT NULL) WITHOUT ROWID;
"""


LEVEL_BATCH = 1  # applies ``batch`` entries (``MetaState._apply_batch``)
LEVEL = LEVEL_BATCH  # what this code applies


def migrate(db: sqlite3.Connection) -> None:
    if "level" not in {row[1] for row in db.execute("PRAGMA table_info(members)")}:
        db.execute("ALTER TABLE members ADD COLUMN level INTEGER NOT NULL DEFAULT 0")


def cmd_member_rpc(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    db.execute("INSERT INTO members (raft, rpc, level) VALUES (?, ?, ?) "
               "ON CONFLICT (raft) DO UPDATE SET rpc=excluded.rpc, level=excluded.level",
               (cmd["raft"], cmd["rpc"], int(cmd.get("level", 0))))
    return {}


def cmd_forget_member(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    db.execute("DELETE FROM members WHERE raft=?", (cmd["raft"],))
    return {}


def q_member_rpcs(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    rows = db.execute("SELECT raft, rpc, level FROM members ORDER BY raft").fetchall()
    return {"rpc": {raft: rpc for raft, rpc, _ in rows}, "level": {raft: level for raft, _, level in rows}}


COMMANDS = {"member_rpc": cmd_member_rpc, "forget_member": cmd_forget_member}
QUERIES = {"member_rpcs": q_member_rpcs}
