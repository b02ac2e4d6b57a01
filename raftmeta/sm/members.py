"""Raft membership as clients see it: which raftmeta nodes exist and where their RPC is.

PySyncObj keeps the voting membership itself (``addNodeToCluster`` /
``removeNodeFromCluster``, one change at a time, replayed from its journal and
snapshots on restart). Raft addresses are all it knows, so every raftmeta node records
its RPC address here, through Raft, once it is a member; frontends and blob nodes read
this map to follow a replaced member without a restart or a config change.
"""

from __future__ import annotations

import sqlite3
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS members (raft TEXT PRIMARY KEY, rpc TEXT NOT NULL) WITHOUT ROWID;
"""


def cmd_member_rpc(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    db.execute("INSERT INTO members (raft, rpc) VALUES (?, ?) ON CONFLICT (raft) DO UPDATE SET rpc=excluded.rpc",
               (cmd["raft"], cmd["rpc"]))
    return {}


def cmd_forget_member(db: sqlite3.Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    db.execute("DELETE FROM members WHERE raft=?", (cmd["raft"],))
    return {}


def q_member_rpcs(db: sqlite3.Connection, q: dict[str, Any]) -> dict[str, Any]:
    return {"rpc": dict(db.execute("SELECT raft, rpc FROM members ORDER BY raft").fetchall())}


COMMANDS = {"member_rpc": cmd_member_rpc, "forget_member": cmd_forget_member}
QUERIES = {"member_rpcs": q_member_rpcs}
