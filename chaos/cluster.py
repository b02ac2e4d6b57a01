"""A real Cairn cluster of separate processes on free local ports, for tests and chaos.

Every process is started with ``python -m cairn.cli ROLE ...`` in its own process
group, logs to ``ROOT/logs/NAME.log`` and keeps its state under ``ROOT/NAME``; any of
them can be killed (any signal), paused and restarted on the same ports and data.
With ``netns`` every process runs in a network namespace of its own (``chaos.netns``)
and ``cut``/``isolate``/``heal`` make real partitions; the harness still reaches the
frontends and raftmeta on 127.0.0.1 through a forwarder. ``blob_disk_mb`` gives chosen blob nodes a disk of their own of that size (a tmpfs
mounted on the node's data dir; needs root), so a full disk is a real ENOSPC.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.netns import Network
from core.nodes import BlobNode

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
    netns: bool = False
    procs: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.net: Network | None = None
        self._forwarder: subprocess.Popen | None = None
        if self.netns:
            raft, rpc_inside, blob, listen = self._make_network()
        else:
            ports = free_ports(2 * self.metas + self.blobs + self.frontends)
            raft = [f"127.0.0.1:{p}" for p in ports[: self.metas]]
            rpc_inside = self.rpc = [f"127.0.0.1:{p}" for p in ports[self.metas : 2 * self.metas]]
            blob = [f"127.0.0.1:{p}" for p in ports[2 * self.metas : 2 * self.metas + self.blobs]]
            listen = [f"127.0.0.1:{p}" for p in ports[2 * self.metas + self.blobs :]]
            self.endpoints = [f"http://{a}" for a in listen]
        meta_list = ",".join(rpc_inside)
        self.raft = list(raft)
        for i in range(self.metas):
            peers = ",".join(a for j, a in enumerate(raft) if j != i)
            self._add(f"raftmeta{i + 1}", ["raftmeta", "--raft", raft[i], "--peers", peers, "--rpc", rpc_inside[i],
                                           "--data-dir", str(self.root / f"raftmeta{i + 1}"),
                                           "--gc-grace", str(self.gc_grace), "--gc-interval", str(self.gc_interval),
                                           "--upload-ttl", str(self.upload_ttl),
                                           "--upload-expiry-interval", str(self.upload_expiry_interval),
                                           *self.raftmeta_flags])
        for i in range(self.blobs):
            self._add(f"blobnode{i + 1}", ["blobnode", "--listen", blob[i], "--meta", meta_list,
                                           "--data-dir", str(self.root / f"blobnode{i + 1}"), *self.blobnode_flags])
        for i in range(self.frontends):
            self._add(f"frontend{i + 1}", ["frontend", "--listen", listen[i],
                                           "--meta", meta_list, "--chunk-size", str(self.chunk_size),
                                           *self.frontend_flags])

    def _make_network(self) -> tuple[list[str], list[str], list[str], list[str]]:
        """Namespaces for every process; the harness's 127.0.0.1 ports for frontends and
        raftmeta RPC are listening sockets handed to the forwarder in the hub."""
        self.net = Network(str(self.root.resolve()))
        self.net.create()
        ip = {name: self.net.add_host(name) for name in [*(f"raftmeta{i + 1}" for i in range(self.metas)),
                                                          *(f"blobnode{i + 1}" for i in range(self.blobs)),
                                                          *(f"frontend{i + 1}" for i in range(self.frontends))]}
        raft = [f"{ip[f'raftmeta{i + 1}']}:4000" for i in range(self.metas)]
        rpc_inside = [f"{ip[f'raftmeta{i + 1}']}:4100" for i in range(self.metas)]
        blob = [f"{ip[f'blobnode{i + 1}']}:5000" for i in range(self.blobs)]
        listen = [f"{ip[f'frontend{i + 1}']}:9000" for i in range(self.frontends)]
        self._listeners = []
        for _ in range(self.metas + self.frontends):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            self._listeners.append(sock)
        local = [f"127.0.0.1:{s.getsockname()[1]}" for s in self._listeners]
        self.rpc = local[: self.metas]
        self.endpoints = [f"http://{a}" for a in local[self.metas :]]
        self._routes = [f"{s.fileno()}={target}" for s, target in zip(self._listeners, rpc_inside + listen,
                                                                    strict=True)]
        return raft, rpc_inside, blob, listen

    def _start_forwarder(self) -> None:
        if self.net is None or (self._forwarder is not None and self._forwarder.poll() is None):
            return
        log = open(self.root / "logs" / "netfwd.log", "ab")  # noqa: SIM115 (owned by the child)
        self._forwarder = subprocess.Popen(
            ["ip", "netns", "exec", self.net.hub, sys.executable, "-m", "chaos.netfwd", *self._routes],
            pass_fds=[s.fileno() for s in self._listeners], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def add_raftmeta(self) -> tuple[str, str]:
        """Define (not start) one more raftmeta process whose peers are every Raft address
        so far, to be added to the cluster as a member. Returns its (raft, rpc) addresses."""
        assert self.net is None, "not with netns"
        raft_port, rpc_port = free_ports(2)
        raft, rpc = f"127.0.0.1:{raft_port}", f"127.0.0.1:{rpc_port}"
        index = sum(name.startswith("raftmeta") for name in self.procs) + 1
        template = self.procs["raftmeta1"].args
        flags = template[template.index("--gc-grace"):]
        self._add(f"raftmeta{index}", ["raftmeta", "--raft", raft, "--peers", ",".join(self.raft), "--rpc", rpc,
                                       "--data-dir", str(self.root / f"raftmeta{index}"), *flags])
        self.raft.append(raft)
        self.rpc.append(rpc)
        return raft, rpc

    # ------------------------------------------------------------------ full disks

    def fill_disk(self, name: str, leave: int) -> int:
        """Fill the disk under ``name``'s data dir with a filler file until ``leave``
        bytes stay free (or ENOSPC), as another tenant of the disk would. Bytes written."""
        disk = self.root / name
        written, block = 0, b"\0" * (1024 * 1024)
        with open(disk / "filler", "ab") as f:
            try:
                while True:
                    st = os.statvfs(disk)
                    if st.f_bavail * st.f_frsize - len(block) < leave:
                        break
                    f.write(block)
                    f.flush()
                    written += len(block)
            except OSError:
                pass
        return written

    def free_disk(self, name: str) -> None:
        (self.root / name / "filler").unlink(missing_ok=True)

    # ------------------------------------------------------------------ partitions

    def cut(self, a: str, b: str) -> None:
        """Partition process ``a`` from process ``b`` (both directions). netns only."""
        assert self.net is not None, "partitions need Cluster(netns=True)"
        self.net.cut(a, b)

    def isolate(self, name: str, others: list[str] | None = None) -> None:
        """Partition ``name`` from every other process (or from ``others``)."""
        assert self.net is not None, "partitions need Cluster(netns=True)"
        self.net.isolate(name, others)

    def heal(self) -> None:
        if self.net is not None:
            self.net.heal()

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
        self._start_forwarder()
        for proc in [self.procs[name]] if name else self.procs.values():
            if proc.alive():
                continue
            log = open(proc.log_file, "ab")  # noqa: SIM115 (owned by the child)
            prefix = self.net.exec_prefix(proc.name) if self.net else []
            proc.popen = subprocess.Popen(
                [*prefix, sys.executable, "-m", "cairn.cli", *proc.args], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
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
        if self._forwarder is not None and self._forwarder.poll() is None:
            os.killpg(self._forwarder.pid, signal.SIGKILL)
            self._forwarder.wait(5)
        if self.net is not None:
            self.net.destroy()

    def keep_if(self, failed: bool) -> None:
        """After a run, once stopped: its data directories and logs are the evidence of a
        failed run (kept, and where is said); a passed run's are removed."""
        if failed:
            print(f"the cluster's data and logs are kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        # __exit__ does not run when __enter__ raises: a cluster that never came up is
        # stopped here, or its processes would outlive the test that started them.
        try:
            self.start()
            self.wait_healthy(require_all=True)
        except BaseException:
            self.stop()
            raise
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

    def wait_healthy(self, timeout: float = 60.0, blobnodes: int | None = None, require_all: bool = False) -> None:
        """Until every live frontend reports raftmeta and enough writable blob nodes. With
        ``require_all``, a process that exits meanwhile fails the wait at once."""
        want = self.blobs if blobnodes is None else blobnodes
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p.name for p in self.procs.values() if require_all and not p.alive()]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while the cluster started\n" + self.tail_logs())
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

    def admin(self, method: str, path: str, index: int = 0, body: dict | None = None) -> tuple[int, dict]:
        """A signed request to a frontend's operator endpoint /_cairn/PATH (``body``: JSON)."""
        import urllib.error
        import urllib.request

        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        url = f"{self.endpoints[index]}/_cairn/{path}"
        data = json.dumps(body).encode() if body is not None else b""
        req = AWSRequest(method, url, data=data, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
        S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
        http = urllib.request.Request(url, method=method, headers=dict(req.headers.items()),
                                      data=data if method in ("POST", "PUT") else None)
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
        """Chunk ids with fewer than ``want`` replicas on blob nodes that are up now."""
        import trio

        from raftmeta.client import MetaClient

        async def ask() -> list[str]:
            client = MetaClient(self.rpc, SECRET)
            nodes = (await client.read({"q": "nodes"}))["nodes"]
            now = time.time()
            return await under_replicated_chunks(client, [n["node_id"] for n in nodes
                                                          if BlobNode.from_record(n).is_up(now)], want)

        return trio.run(ask)


async def under_replicated_chunks(client: Any, alive: list[str], want: int) -> list[str]:
    """Chunk ids with fewer than ``want`` replicas on the ``alive`` nodes: raftmeta's
    ``repair_scan``, page by page (at most 10,000 pages)."""
    items: list[str] = []
    cursor = ["", ""]
    for _ in range(10_000):
        scan = await client.read({"q": "repair_scan", "alive": alive, "want": want, "after": cursor, "limit": 1000})
        items += [item[3] for item in scan["items"]]
        if scan["done"]:
            break
        cursor = scan["next"]
    return items
