"""A real Cairn cluster of separate processes on free local ports, for tests and chaos.

Every process is started with ``python -m cairn.cli ROLE ...`` in its own process
group, logs to ``ROOT/logs/NAME.log`` and keeps its state under ``ROOT/NAME``; any of
them can be killed (any signal), paused and restarted on the same ports and data.
``blob_disk_mb`` gives chosen blob nodes a disk of their own of that size (a tmpfs
mounted on the node's data dir; needs root), so a full disk is a real ENOSPC.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SECRET = "test-cluster-secret"
ACCESS_KEY = "cairnroot"
SECRET_KEY = "cairnroot-secret-key"


def free_ports(count: int) -> list[int]:
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class Proc:
    name: str
    args: list[str]
    popen: subprocess.Popen | None = None
    log_file: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Cluster:
    root: Path
    metas: int = 3
    blobs: int = 3
    frontends: int = 2
    chunk_size: int = 8 * 1024 * 1024
    gc_grace: float = 300.0
    gc_interval: float = 5.0
    upload_ttl: float = 86400.0
    upload_expiry_interval: float = 60.0
    extra_env: dict[str, str] = field(default_factory=dict)
    raftmeta_flags: list[str] = field(default_factory=list)
    frontend_flags: list[str] = field(default_factory=list)
    blobnode_flags: list[str] = field(default_factory=list)
    blob_disk_mb: dict[int, int] = field(default_factory=dict)  # blob index (0-based) -> disk size
    procs: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * self.metas + self.blobs + self.frontends)
        raft = [f"127.0.0.1:{p}" for p in ports[: self.metas]]
        self.rpc = [f"127.0.0.1:{p}" for p in ports[self.metas : 2 * self.metas]]
        blob = [f"127.0.0.1:{p}" for p in ports[2 * self.metas : 2 * self.metas + self.blobs]]
        self.endpoints = [f"http://127.0.0.1:{p}" for p in ports[2 * self.metas + self.blobs :]]
        meta_list = ",".join(self.rpc)
        for i in range(self.metas):
            peers = ",".join(a for j, a in enumerate(raft) if j != i)
            self._add(f"raftmeta{i + 1}", ["raftmeta", "--raft", raft[i], "--peers", peers, "--rpc", self.rpc[i],
                                           "--data-dir", str(self.root / f"raftmeta{i + 1}"),
                                           "--gc-grace", str(self.gc_grace), "--gc-interval", str(self.gc_interval),
                                           "--upload-ttl", str(self.upload_ttl),
                                           "--upload-expiry-interval", str(self.upload_expiry_interval),
                                           *self.raftmeta_flags])
        for i in range(self.blobs):
            self._add(f"blobnode{i + 1}", ["blobnode", "--listen", blob[i], "--meta", meta_list,
                                           "--data-dir", str(self.root / f"blobnode{i + 1}"), *self.blobnode_flags])
        for i in range(self.frontends):
            self._add(f"frontend{i + 1}", ["frontend", "--listen", self.endpoints[i].removeprefix("http://"),
                                           "--meta", meta_list, "--chunk-size", str(self.chunk_size),
                                           *self.frontend_flags])

    def _add(self, name: str, args: list[str]) -> None:
        self.procs[name] = Proc(name, args, log_file=self.root / "logs" / f"{name}.log")

    def env(self) -> dict[str, str]:
        return dict(os.environ, CAIRN_CLUSTER_SECRET=SECRET, CAIRN_ROOT_ACCESS_KEY=ACCESS_KEY,
                    CAIRN_ROOT_SECRET_KEY=SECRET_KEY, PYTHONUNBUFFERED="1", **self.extra_env)

    # ------------------------------------------------------------------ lifecycle

    def _mount_disks(self) -> None:
        for index, mib in self.blob_disk_mb.items():
            path = self.root / f"blobnode{index + 1}"
            path.mkdir(parents=True, exist_ok=True)
            if not os.path.ismount(path):
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)], check=True)

    def _unmount_disks(self) -> None:
        for index in self.blob_disk_mb:
            path = self.root / f"blobnode{index + 1}"
            if os.path.ismount(path):
                subprocess.run(["umount", str(path)], check=False)

    def start(self, name: str | None = None) -> None:
        self._mount_disks()
        for proc in [self.procs[name]] if name else self.procs.values():
            if proc.alive():
                continue
            log = open(proc.log_file, "ab")  # noqa: SIM115 (owned by the child)
            proc.popen = subprocess.Popen(
                [sys.executable, "-m", "cairn.cli", *proc.args], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
            log.close()

    def signal(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.alive():
            os.killpg(proc.popen.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                proc.popen.wait(10)

    def kill(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.alive():
                os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(5)
        self._unmount_disks()

    def __enter__(self) -> Cluster:
        self.start()
        self.wait_healthy()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ readiness

    def health(self, index: int = 0) -> dict | None:
        try:
            with urllib.request.urlopen(f"{self.endpoints[index]}/_cairn/health", timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            return None

    def wait_healthy(self, timeout: float = 60.0, blobnodes: int | None = None) -> None:
        want = self.blobs if blobnodes is None else blobnodes
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [self.health(i) for i in range(self.frontends) if self.procs[f"frontend{i + 1}"].alive()]
            if states and all(s and s.get("raftmeta") and s.get("blobnodes_writable", 0) >= want for s in states):
                return
            time.sleep(0.2)
        raise TimeoutError(f"cluster not healthy after {timeout}s: {[self.health(i) for i in range(self.frontends)]}\n"
                           + self.tail_logs())

    def tail_logs(self, lines: int = 15) -> str:
        out = []
        for proc in self.procs.values():
            if proc.log_file and proc.log_file.exists():
                text = proc.log_file.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {proc.name}\n" + "\n".join(text))
        return "\n".join(out)

    def s3(self, index: int = 0, **config: object):  # -> botocore S3 client
        import boto3
        from botocore.config import Config

        cfg = Config(**{"retries": {"max_attempts": 5, "mode": "standard"}, **config})
        client = boto3.client("s3", endpoint_url=self.endpoints[index], aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name="us-east-1", config=cfg)
        self._watch_slow_calls(client)
        return client

    def _watch_slow_calls(self, client, threshold: float = 5.0) -> None:  # noqa: ANN001
        """Record client-side attempts slower than ``threshold`` in ROOT/logs/slow-client.log."""
        import threading

        starts: dict[int, float] = {}

        def before(request, **kw):  # noqa: ANN001, ANN003
            starts[threading.get_ident()] = time.monotonic()

        def after(http_response=None, parsed=None, exception=None, **kw):  # noqa: ANN001, ANN003
            took = time.monotonic() - starts.pop(threading.get_ident(), time.monotonic())
            if took > threshold:
                with open(self.root / "logs" / "slow-client.log", "a") as f:
                    f.write(f"{time.strftime('%H:%M:%S')} {kw.get('operation_name') or ''} took {took:.1f}s "
                            f"status={getattr(http_response, 'status_code', None)} exception={exception!r}\n")

        client.meta.events.register("before-send.s3", before)
        client.meta.events.register("after-call.s3", lambda **kw: None)
        client.meta.events.register("needs-retry.s3", lambda response=None, **kw: after(
            http_response=response[0] if response else None, exception=kw.get("caught_exception"), **kw))

    def leader(self) -> str | None:
        """Name of the raftmeta process that is the Raft leader now, if any."""
        import trio

        from raftmeta.client import MetaClient

        async def find() -> str | None:
            client = MetaClient(self.rpc, SECRET)
            for i, addr in enumerate(self.rpc):
                if not self.procs[f"raftmeta{i + 1}"].alive():
                    continue
                try:
                    with trio.move_on_after(2):
                        status = await client.status(addr)
                        if status.get("is_leader"):
                            return f"raftmeta{i + 1}"
                except Exception:
                    continue
            return None

        return trio.run(find)

    def blob_dirs(self) -> list[Path]:
        return [self.root / f"blobnode{i + 1}" for i in range(self.blobs)]

    def chunk_files(self) -> dict[str, list[Path]]:
        """chunk id -> the chunk files holding it, across every blob node's disk."""
        found: dict[str, list[Path]] = {}
        for d in self.blob_dirs():
            for path in (d / "chunks").rglob("*"):
                if path.is_file():
                    found.setdefault(path.name, []).append(path)
        return found

    # ------------------------------------------------------------------ audits

    def chunk_refs(self) -> dict[str, set[str]]:
        """What raftmeta says about chunks: {"referenced": ids, "gc": ids queued for GC}."""
        import trio

        from raftmeta.client import MetaClient

        async def ask() -> dict:
            return await MetaClient(self.rpc, SECRET).read({"q": "chunk_refs"})

        reply = trio.run(ask)
        return {"referenced": set(reply["referenced"]), "gc": set(reply["gc"])}

    def wait_no_orphans(self, timeout: float = 30.0) -> set[str]:
        """Wait until every chunk file on disk is referenced by an object or a live upload;
        return the orphans left when ``timeout`` ran out (empty: none)."""
        deadline = time.monotonic() + timeout
        while True:
            on_disk = set(self.chunk_files())
            orphans = on_disk - self.chunk_refs()["referenced"]
            if not orphans or time.monotonic() > deadline:
                return orphans
            time.sleep(0.5)

    def admin(self, method: str, path: str, index: int = 0) -> tuple[int, dict]:
        """A signed request to a frontend's operator endpoint /_cairn/PATH."""
        import urllib.error
        import urllib.request

        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        url = f"{self.endpoints[index]}/_cairn/{path}"
        req = AWSRequest(method, url, data=b"", headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
        S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
        http = urllib.request.Request(url, method=method, headers=dict(req.headers.items()), data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(http, timeout=30) as r:
                raw = r.read()
                try:
                    return r.status, json.loads(raw)
                except ValueError:
                    return r.status, {"raw": raw.decode(errors="replace")}
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body)
            except ValueError:
                return exc.code, {"raw": body.decode(errors="replace")}

    def under_replicated(self, want: int) -> list[str]:
        """Chunk ids with fewer than ``want`` replicas on blob nodes that heartbeat now."""
        import trio

        from raftmeta.client import MetaClient

        async def ask() -> list[str]:
            client = MetaClient(self.rpc, SECRET)
            nodes = (await client.read({"q": "nodes"}))["nodes"]
            alive = [n["node_id"] for n in nodes if time.time() - n["heartbeat"] < 15]
            items: list[str] = []
            cursor = ["", ""]
            while True:
                scan = await client.read({"q": "repair_scan", "alive": alive, "want": want, "after": cursor,
                                          "limit": 1000})
                items += [item[3] for item in scan["items"]]
                if scan["done"]:
                    return items
                cursor = scan["next"]

        return trio.run(ask)
