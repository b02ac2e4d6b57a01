"""Run last against the session cluster: after every test above, nothing leaked."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.cluster


def test_every_chunk_buffer_is_returned(cluster):
    """Requests that ended in any way (errors, clients gone mid-GET, copies, races)
    returned every chunk buffer to the frontend's budget."""
    deadline = time.monotonic() + 10
    while True:
        states = [cluster.health(i) for i in range(cluster.frontends)]
        if all(s["chunk_buffers_free"] == s["chunk_buffers"] for s in states) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for state in states:
        assert state["chunk_buffers_free"] == state["chunk_buffers"], state


def test_no_orphan_chunks_at_rest(cluster):
    assert cluster.wait_no_orphans(timeout=30) == set()
