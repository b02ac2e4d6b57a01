"""`cairn frontend --workers 2`: two processes share one port; requests land on both;
a worker that dies is replaced; stopping the parent stops them all."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from chaos.cluster import Cluster

pytestmark = pytest.mark.cluster


def test_two_frontend_workers(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("workers"), frontends=1, frontend_flags=["--workers", "2"]) as cluster:
        parent = psutil.Process(cluster.procs["frontend1"].pid)
        workers = parent.children()
        assert len(workers) == 2
        s3 = cluster.s3(0)
        s3.create_bucket(Bucket="workers")
        body = os.urandom(3 * 1024 * 1024)
        busy = [sum(w.cpu_times()[:2]) for w in workers]
        clients = [cluster.s3(0) for _ in range(16)]  # separate connections, spread by the kernel
        for n, client in enumerate(clients):
            client.put_object(Bucket="workers", Key=f"k{n}", Body=body)
        for n, client in enumerate(reversed(clients)):
            assert client.get_object(Bucket="workers", Key=f"k{n}")["Body"].read() == body
        # both did real work (an idle worker spends ~0.01 s; all 16 connections on one: p = 2**-15)
        busy = [sum(w.cpu_times()[:2]) - before for w, before in zip(workers, busy, strict=True)]
        assert min(busy) > 0.05, busy
        os.kill(workers[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while len([w for w in parent.children() if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]) < 2:
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.2)
        cluster.wait_healthy()
        assert s3.get_object(Bucket="workers", Key="k0")["Body"].read() == body
        everyone = [parent, *parent.children()]
    for proc in everyone:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
