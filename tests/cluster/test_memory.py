"""A 2 GiB PUT and GET, a 1 GiB multipart upload with 10 parts in flight, and 16
concurrent 64 MiB PUTs then GETs, through one frontend keep that frontend's RSS under
200 MiB."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from chaos.cluster import Cluster

pytestmark = pytest.mark.cluster
SIZE = 2 * 1024**3
LIMIT = 200 * 1024**2


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)


def test_two_gib_put_and_get_in_flat_memory(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    src = root / "two-gib.bin"
    block = os.urandom(64 * 1024**2)
    digest = hashlib.sha256()
    with open(src, "wb") as f:
        for i in range(SIZE // len(block)):
            piece = i.to_bytes(8, "big") + block[8:]
            f.write(piece)
            digest.update(piece)
    with Cluster(root / "cluster", frontends=1) as cluster:
        s3 = cluster.s3(0, read_timeout=300)
        s3.create_bucket(Bucket="big")
        sampler = Sampler(cluster.procs["frontend1"].pid)
        baseline = sampler.proc.memory_info().rss
        sampler.start()
        t = time.monotonic()
        with open(src, "rb") as f:
            s3.put_object(Bucket="big", Key="two-gib", Body=f)
        put_s = time.monotonic() - t
        t = time.monotonic()
        body = s3.get_object(Bucket="big", Key="two-gib")["Body"]
        got = hashlib.sha256()
        while block := body.read(8 * 1024**2):
            got.update(block)
        get_s = time.monotonic() - t
        sampler.stop.set()
        sampler.join()
        print(f"2 GiB PUT {SIZE / put_s / 1e6:.0f} MB/s, GET {SIZE / get_s / 1e6:.0f} MB/s; frontend RSS "
              f"baseline {baseline / 2**20:.0f} MiB, peak {sampler.peak / 2**20:.0f} MiB")
        assert got.hexdigest() == digest.hexdigest()
        assert sampler.peak < LIMIT

        # 1 GiB through multipart with 10 parts in flight at once
        from boto3.s3.transfer import TransferConfig

        with open(src, "r+b") as f:
            f.truncate(1024**3)
        sampler = Sampler(cluster.procs["frontend1"].pid)
        sampler.start()
        t = time.monotonic()
        s3.upload_file(str(src), "big", "one-gib", Config=TransferConfig(max_concurrency=10))
        mp_s = time.monotonic() - t
        sampler.stop.set()
        sampler.join()
        print(f"1 GiB multipart upload, 10 parts in flight: {1024**3 / mp_s / 1e6:.0f} MB/s; "
              f"frontend RSS peak {sampler.peak / 2**20:.0f} MiB")
        assert sampler.peak < LIMIT
        assert s3.head_object(Bucket="big", Key="one-gib")["ContentLength"] == 1024**3
        src.unlink()

        # 16 streams at once, each 64 MiB: the frontend-wide chunk budget, not the number of
        # streams, bounds memory (each stream alone would hold two or three 8 MiB chunks)
        streams, size = 16, 64 * 1024**2
        s3 = cluster.s3(0, read_timeout=300, max_pool_connections=streams)
        pattern = os.urandom(size)
        bodies = [i.to_bytes(8, "big") + pattern[8:] for i in range(streams)]
        for phase in ("PUT", "GET"):
            sampler = Sampler(cluster.procs["frontend1"].pid)
            sampler.start()
            t = time.monotonic()
            with ThreadPoolExecutor(streams) as pool:
                if phase == "PUT":
                    list(pool.map(lambda i: s3.put_object(Bucket="big", Key=f"s{i}", Body=bodies[i]), range(streams)))
                else:
                    got = list(pool.map(lambda i: hashlib.sha256(s3.get_object(Bucket="big", Key=f"s{i}")["Body"].read()).digest(),
                                        range(streams)))
                    assert got == [hashlib.sha256(b).digest() for b in bodies]
            took = time.monotonic() - t
            sampler.stop.set()
            sampler.join()
            print(f"{streams} concurrent 64 MiB {phase}s: {streams * size / took / 1e6:.0f} MB/s; "
                  f"frontend RSS peak {sampler.peak / 2**20:.0f} MiB")
            assert sampler.peak < LIMIT, phase
    # ~13 GiB of replicas: pytest keeps its last temp dirs, so repeated runs would fill the disk
    shutil.rmtree(root, ignore_errors=True)
