"""The test cluster itself: one that cannot start is stopped, not leaked."""

from __future__ import annotations

import pytest

from chaos.cluster import Cluster

pytestmark = pytest.mark.cluster


def test_a_cluster_that_cannot_start_leaves_no_process(tmp_path):
    cluster = Cluster(tmp_path, frontends=1, frontend_flags=["--no-such-flag"])
    with pytest.raises(RuntimeError, match="frontend1 exited"):
        with cluster:
            pass
    assert cluster.procs["raftmeta1"].popen is not None
    assert not [p.name for p in cluster.procs.values() if p.alive()]
