"""Pre-vote (Raft thesis 9.6) for PySyncObj, which has none.

Without it, a node that missed its leader for a moment (restarted, paused, busy applying
a backlog or installing a snapshot, cut off and back) stands for election at once: its
term goes up, and the first message the healthy leader gets from it makes the leader step
down. Every such hiccup became an election, and a lost lease for every read.

With it, a node whose election timeout fires first asks the others whether they would
vote for it at the next term (``pre_vote``), changing nothing: neither its term nor
theirs. A node grants that only if it has not heard from a leader within the minimum
election timeout, is not the leader itself, and the asker's log is at least as up to date
as its own. Only with a majority of grants (itself included) does the node stand, through
PySyncObj's own election; otherwise it stays a follower and hears its leader again.

A leadership transfer (``timeout_now``) stands at once, as Raft requires. Nodes of an
older version ignore ``pre_vote``: a new node among old ones never stands (the old ones
still elect each other), so a rolling upgrade keeps a leader throughout.
"""

from __future__ import annotations

import random
import time
from typing import Any

from pysyncobj.syncobj import _RAFT_STATE


class PreVote:
    """Mixin of ``MetaNode`` (a PySyncObj ``SyncObj``). It needs ``_leader_heard_recently()``,
    ``_pre_vote_tick()`` called at the start of every tick, and ``_pre_vote_message()``
    given every message first."""

    _pre_vote_term = -1  # the term our current pre-vote asks for
    _pre_vote_won = float("-inf")  # when a majority last granted us one
    _pre_vote_grants: set[Any] | None = None
    pre_votes_started = 0  # status and tests: rounds asked, rounds won
    pre_votes_won = 0

    def _leader_heard_recently(self) -> bool:  # pragma: no cover (MetaNode's)
        raise NotImplementedError

    def _our_log(self) -> tuple[int, int]:
        return self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex()

    def _pre_vote_tick(self) -> None:
        """Before PySyncObj's tick: if our election timeout has passed, ask instead of
        standing (PySyncObj's own check then finds the deadline moved on), unless a
        pre-vote was just won or a transfer asks us to stand."""
        if self._SyncObj__selfNode is None or self._SyncObj__raftState == _RAFT_STATE.LEADER:
            return
        now = time.monotonic()
        if self._SyncObj__raftElectionDeadline >= now or self._SyncObj__transferInProgress:
            return
        others = self._SyncObj__otherNodes
        if not others or now - self._pre_vote_won < self._SyncObj__conf.raftMinTimeout:
            return  # alone, or just granted: PySyncObj stands in this tick
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        term = self._SyncObj__raftCurrentTerm + 1
        self._pre_vote_term, self._pre_vote_grants = term, set()
        self.pre_votes_started += 1
        last_term, last_index = self._our_log()
        for node in others:
            self._SyncObj__transport.send(node, {"type": "pre_vote", "term": term, "last_log_term": last_term,
                                                 "last_log_index": last_index})

    def _pre_vote_message(self, node: Any, message: dict[str, Any]) -> bool:
        """Handle a pre-vote request or reply; False for any other message."""
        kind = message.get("type")
        if kind == "pre_vote":
            term = message.get("term")
            theirs = (message.get("last_log_term", -1), message.get("last_log_index", -1))
            leaderless = not self._isLeader() and not self._leader_heard_recently()
            granted = (isinstance(term, int) and term > self._SyncObj__raftCurrentTerm and leaderless
                       and theirs >= self._our_log())
            self._SyncObj__transport.send(node, {"type": "pre_vote_reply", "term": term, "granted": granted})
            if leaderless and theirs < self._our_log():
                # It cannot win, and the leader seems gone: a more up-to-date node (us)
                # stands within 50 ms rather than after its own timeout.
                soon = time.monotonic() + random.uniform(0.0, 0.05)
                self._SyncObj__raftElectionDeadline = min(self._SyncObj__raftElectionDeadline, soon)
            return True
        if kind == "pre_vote_reply":
            grants = self._pre_vote_grants
            if (message.get("granted") is True and grants is not None and message.get("term") == self._pre_vote_term
                    and self._pre_vote_term == self._SyncObj__raftCurrentTerm + 1
                    and self._SyncObj__raftState != _RAFT_STATE.LEADER):
                grants.add(node)
                if len(grants) + 1 > (len(self._SyncObj__otherNodes) + 1) / 2:
                    self._pre_vote_won = time.monotonic()
                    self._pre_vote_grants = None
                    self.pre_votes_won += 1
                    self._SyncObj__raftElectionDeadline = 0  # PySyncObj stands at the next tick
            return True
        return False
