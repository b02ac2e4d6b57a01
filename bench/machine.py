"""What this machine can do at most, measured in the same run as the stores.

Each store's figure is then read as a fraction of the limit that bounds it: hashing
(SHA-256, MD5 with 8 MiB buffers, one core), the disk (sequential 8 MiB writes then
fsync, in the output dir's filesystem) and loopback TCP (one sender, one receiver).
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psutil

MiB = 1 << 20


def info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "kernel": platform.release(), "os": platform.platform(terse=True)}


def hash_rate(name: str, seconds: float = 1.0) -> float:
    """MB/s of hashlib ``name`` over 8 MiB buffers, one thread."""
    buf = os.urandom(8 * MiB)
    h = hashlib.new(name)
    done, t = 0, time.perf_counter()
    while done < 64 * len(buf) and (done < 4 * len(buf) or time.perf_counter() - t < seconds):
        h.update(buf)
        done += len(buf)
    return done / (time.perf_counter() - t) / 1e6


def disk_write(directory: Path, total: int = 256 * MiB, block: int = 8 * MiB, fsync_each: bool = False) -> float:
    """MB/s of writing ``total`` bytes in ``block``s to a new file in ``directory``,
    fsync at the end (or after every block), counting the fsync."""
    path = Path(directory) / f".bench-disk-{os.getpid()}"
    buf = os.urandom(block)
    t = time.perf_counter()
    try:
        with open(path, "wb", buffering=0) as f:
            for _ in range(total // block):
                f.write(buf)
                if fsync_each:
                    os.fsync(f.fileno())
            os.fsync(f.fileno())
        took = time.perf_counter() - t
    finally:
        path.unlink(missing_ok=True)
    return total / took / 1e6


def loopback_tcp(total: int = 2048 * MiB, block: int = MiB) -> float:
    """MB/s through one 127.0.0.1 TCP connection, a sender thread and a receiver thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = [0]

    def receive() -> None:
        conn, _ = listener.accept()
        buf = bytearray(block)
        with conn:
            while received[0] < total:
                n = conn.recv_into(buf)
                if not n:
                    break
                received[0] += n

    th = threading.Thread(target=receive, daemon=True)
    th.start()
    data = os.urandom(block)
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        for _ in range(total // block):
            s.sendall(data)
    th.join(60)
    took = time.perf_counter() - t
    listener.close()
    return received[0] / took / 1e6


def measure(out_dir: Path, quick: bool = False) -> dict[str, float]:
    """All the limits, in MB/s (the disk ones: median of three tries)."""
    size, tries = (64 if quick else 256) * MiB, 1 if quick else 3
    return {
        "sha256_MBps": hash_rate("sha256", 0.5 if quick else 1.5),
        "md5_MBps": hash_rate("md5", 0.5 if quick else 1.5),
        "disk_fsync_MBps": statistics.median(disk_write(out_dir, size) for _ in range(tries)),
        "disk_fsync_each_8MiB_MBps": statistics.median(disk_write(out_dir, size, fsync_each=True) for _ in range(tries)),
        "loopback_tcp_MBps": loopback_tcp((512 if quick else 2048) * MiB),
    }


def bounds(limits: dict[str, float], cores: int, replicas: int = 3) -> dict[str, dict[str, Any]]:
    """The machine limit that bounds each Cairn figure, and why.

    PUT: every byte is written ``replicas`` times to this one disk (each blob node fsyncs
    its 8 MiB chunk file), crosses loopback 1 + ``replicas`` times, and is hashed by the
    client (SHA-256 payload signing, boto3 over http), the frontend (SHA-256 + MD5) and
    each blob node (SHA-256 verify): the least of disk/replicas, loopback/(1+replicas)
    and the cores shared among those hashes.
    GET: the frontend verifies each chunk's SHA-256 in one stream, so one core of SHA-256
    (and loopback/2: blob node -> frontend -> client) bounds a single stream.
    """
    sha, md5 = limits["sha256_MBps"], limits["md5_MBps"]
    hash_cpu = cores / ((2 + replicas) / sha + 1 / md5)  # seconds of CPU per MB, over all cores
    put = {"disk_fsync / replicas": limits["disk_fsync_MBps"] / replicas,
           "loopback / (1 + replicas)": limits["loopback_tcp_MBps"] / (1 + replicas),
           f"{cores} cores / ({2 + replicas} SHA-256 + 1 MD5 per byte)": hash_cpu}
    get = {"SHA-256 (one core)": sha, "loopback / 2": limits["loopback_tcp_MBps"] / 2}
    out = {}
    for name, parts in (("put", put), ("get", get)):
        which = min(parts, key=parts.__getitem__)
        out[name] = {"limit_MBps": parts[which], "bound_by": which, "candidates": parts}
    return out
