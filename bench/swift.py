"""OpenStack Swift as a peer, from Debian's packages, at three replicas.

One account, one container and one object server over three device directories (rings of
3 replicas, one device per zone, mount_check off), memcached, and a proxy whose pipeline
has s3api + tempauth so that S3 clients can talk to it. Swift reads /etc/swift/swift.conf
unless told otherwise: each server is started through a few lines that point it at the
temp dir's own swift.conf first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

from bench.load import Endpoint
from bench.peers import BENCH_SK, NotAvailable, Target, apt_install, free_ports

APT_SWIFT = ["swift", "swift-proxy", "swift-object", "swift-account", "swift-container", "memcached"]

SWIFT_RUN = textwrap.dedent("""
    import sys
    from swift.common import storage_policy, utils, wsgi
    app, swift_dir = sys.argv[1], sys.argv[2]
    del sys.argv[1:3]
    utils.set_swift_dir(swift_dir)
    storage_policy.reload_storage_policies()
    conf_file, options = utils.parse_options()
    sys.exit(wsgi.run_wsgi(conf_file, app, **options))
""")


class Swift(Target):
    name = "swift"
    replicas = 3
    frontend = "proxy"
    note = "OpenStack Swift (Debian packages): proxy with s3api + tempauth, rings of 3 replicas over 3 devices"
    python = "/usr/bin/python3"

    def setup(self) -> None:
        if self._installed():
            return
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise NotAvailable("Swift needs `apt-get install " + " ".join(APT_SWIFT) + "` (root)")
        apt_install(APT_SWIFT)
        if not self._installed():
            raise NotAvailable("apt-get install of Swift failed")

    def _installed(self) -> bool:
        return bool(shutil.which("swift-ring-builder") and shutil.which("memcached") and Path(self.python).exists()
                    and subprocess.run([self.python, "-c", "import swift.proxy.server"], capture_output=True).returncode == 0)

    def launch(self) -> Endpoint:
        assert self.root is not None
        if not self._installed():
            raise NotAvailable("Swift is not installed (run `python -m bench setup`)")
        etc, srv = self.root / "etc", self.root / "srv"
        etc.mkdir()
        for d in ("d1", "d2", "d3"):
            (srv / d).mkdir(parents=True)
        proxy, acct, cont, obj, mc = free_ports(5)
        (etc / "swift.conf").write_text("[swift-hash]\nswift_hash_path_suffix = bench\nswift_hash_path_prefix = bench\n"
                                        "[storage-policy:0]\nname = Policy-0\ndefault = yes\n")
        for kind, port in (("account", acct), ("container", cont), ("object", obj)):
            builder = str(etc / f"{kind}.builder")
            ring_builder(builder, "create", "6", "3", "0")
            for z, d in enumerate(("d1", "d2", "d3"), 1):
                ring_builder(builder, "add", f"r1z{z}-127.0.0.1:{port}/{d}", "100")
            ring_builder(builder, "rebalance", ok=(0, 1))
            workers = 2 if kind == "object" else 1
            (etc / f"{kind}-server.conf").write_text(
                self._common(port, workers) + f"devices = {srv}\nmount_check = false\n\n"
                f"[pipeline:main]\npipeline = {kind}-server\n\n[app:{kind}-server]\nuse = egg:swift#{kind}\n"
                f"[{kind}-replicator]\n[{kind}-auditor]\n")
        (etc / "proxy-server.conf").write_text(self._common(proxy, 2) + textwrap.dedent(f"""
            [pipeline:main]
            pipeline = catch_errors gatekeeper proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server
            [app:proxy-server]
            use = egg:swift#proxy
            account_autocreate = true
            [filter:tempauth]
            use = egg:swift#tempauth
            user_bench_admin = {BENCH_SK} .admin
            [filter:s3api]
            use = egg:swift#s3api
            location = us-east-1
            [filter:cache]
            use = egg:swift#memcache
            memcache_servers = 127.0.0.1:{mc}
            [filter:catch_errors]
            use = egg:swift#catch_errors
            [filter:gatekeeper]
            use = egg:swift#gatekeeper
            [filter:proxy-logging]
            use = egg:swift#proxy_logging
            [filter:listing_formats]
            use = egg:swift#listing_formats
            [filter:copy]
            use = egg:swift#copy
            [filter:slo]
            use = egg:swift#slo
            [filter:dlo]
            use = egg:swift#dlo
        """))
        self.spawn("memcached", [shutil.which("memcached") or "memcached", "-l", "127.0.0.1", "-p", str(mc),
                                 "-U", "0", "-m", "64", "-u", "root" if os.geteuid() == 0 else os.environ.get("USER", "")])
        for kind in ("account", "container", "object", "proxy"):
            self.spawn(kind, [self.python, "-c", SWIFT_RUN, f"{kind}-server", str(etc), str(etc / f"{kind}-server.conf")])
        return Endpoint(f"http://127.0.0.1:{proxy}", "bench:admin", BENCH_SK)

    def _common(self, port: int, workers: int) -> str:
        assert self.root is not None
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "")
        return (f"[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {port}\nworkers = {workers}\nuser = {user}\n"
                f"swift_dir = {self.root / 'etc'}\nlog_level = WARNING\nlog_address = /nonexistent\n")


def ring_builder(*args: str, ok: tuple[int, ...] = (0,)) -> None:
    r = subprocess.run(["swift-ring-builder", *args], capture_output=True, text=True, timeout=60)
    if r.returncode not in ok:
        raise NotAvailable(f"swift-ring-builder {' '.join(args[1:])}: {(r.stdout + r.stderr)[-300:]}")
