"""Hosts of a test cluster in Linux network namespaces, so that partitions are real.

Every process gets a namespace of its own with one veth link to a bridge in a hub
namespace (10.77.0.0/24; the hub is 10.77.0.1). Nothing is added to the namespace the
harness runs in: the harness reaches frontends and raftmeta through ``chaos.netfwd``, a
forwarder in the hub that serves listening sockets bound on 127.0.0.1 by the harness.

A partition between two hosts is a pair of blackhole routes: packets to the other side
are dropped by the kernel, new connections fail at once, established ones stall until
their timeouts, exactly as across a failed link. ``heal`` removes them. Needs root and
iproute2 (``ip``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field

SUBNET = "10.77.0"
HUB_IP = f"{SUBNET}.1"


def available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass
class Network:
    """The namespaces of one cluster; names carry a tag made from ``seed`` so that two
    clusters on one machine never share one."""

    seed: str
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> its IP
    cuts: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.tag = hashlib.blake2b(self.seed.encode(), digest_size=3).hexdigest()
        self.hub = f"cairn{self.tag}-hub"

    def ns(self, host: str) -> str:
        return f"cairn{self.tag}-{host}"

    def create(self) -> None:
        self.destroy()  # leftovers of a run that died
        _ip("netns", "add", self.hub)
        _ip("-n", self.hub, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "addr", "add", f"{HUB_IP}/24", "dev", "br0")
        _ip("-n", self.hub, "link", "set", "br0", "up")

    def add_host(self, host: str) -> str:
        """A namespace for ``host`` linked to the hub; returns its IP."""
        index = len(self.hosts) + 2
        ip, ns = f"{SUBNET}.{index}", self.ns(host)
        inner, outer = f"c{self.tag}i{index}", f"c{self.tag}o{index}"
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
        _ip("-n", self.hub, "link", "set", outer, "master", "br0")
        _ip("-n", self.hub, "link", "set", outer, "up")
        _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        self.hosts[host] = ip
        return ip

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host)]

    def cut(self, a: str, b: str) -> None:
        """Partition hosts ``a`` and ``b`` from each other (both directions)."""
        for src, dst in ((a, b), (b, a)):
            if (src, dst) not in self.cuts:
                _ip("-n", self.ns(src), "route", "add", "blackhole", f"{self.hosts[dst]}/32")
                self.cuts.add((src, dst))

    def isolate(self, host: str, others: list[str] | None = None) -> None:
        """Partition ``host`` from every other cluster host (the harness still reaches it)."""
        for other in others if others is not None else list(self.hosts):
            if other != host:
                self.cut(host, other)

    def heal(self) -> None:
        for src, dst in sorted(self.cuts):
            _ip("-n", self.ns(src), "route", "del", "blackhole", f"{self.hosts[dst]}/32", check=False)
        self.cuts.clear()

    def destroy(self) -> None:
        listed = _ip("netns", "list", check=False).stdout.split()
        for name in listed:
            if name.startswith(f"cairn{self.tag}-"):
                _ip("netns", "del", name, check=False)
        self.hosts.clear()
        self.cuts.clear()
