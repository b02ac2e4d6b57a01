"""Multi-process cluster fixtures: real raftmeta, blob node and frontend processes on
free 127.0.0.1 ports, driven with boto3 and the aws CLI as a user would."""

from __future__ import annotations

import pytest

from chaos.cluster import Cluster

CHUNK = 1024 * 1024  # small chunks so that small test objects span several


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("cluster"), chunk_size=CHUNK, gc_grace=1.0, gc_interval=0.5)
    with c:
        yield c


@pytest.fixture(scope="session")
def s3(cluster: Cluster):
    return cluster.s3(0)


@pytest.fixture(scope="session")
def s3b(cluster: Cluster):
    """A client of the second frontend."""
    return cluster.s3(1)


@pytest.fixture
def bucket(s3, request: pytest.FixtureRequest) -> str:
    name = "t-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:50].strip("-")
    s3.create_bucket(Bucket=name)
    return name
