"""Network-namespace backend: every node in its own netns, partitions cut by policy routing.

Topology (all names carry a per-run tag ``pc<pid>x<n>`` so parallel runs never collide)::

    root ns (test client) --veth-- [router ns] --veth-- node ns 0 (10.B.0.2)
                                              --veth-- node ns 1 (10.B.1.2) ...

The router namespace forwards between per-node /24s. A partition is a set of
``ip rule ... blackhole`` entries in the router namespace, one per (src, dst) pair: forwarded
packets are dropped silently, so peers see timeouts (a real partition), not fast refusals.
One-way partitions are single-direction rules. The test client in the root namespace has no
rules against it and always reaches every node. This needs root and iproute2 only (no
iptables/nftables); ``tc netem`` delay/loss is used when the kernel has it.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..cluster.tls import make_node_cert
from ..launcher import LocalNode
from .flags import node_args
from .nemesis import Nemesis, Unsupported

PORT = 7000
TLS_PORT = PORT + 1000  # the internal mutual-TLS port, when on
RULE_PREF = 1000
_counter = itertools.count(1)
_networks: list[NetnsNetwork] = []


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def netns_unavailable_reason() -> str | None:
    """None when this machine can run the netns backend, else why not (for pytest.skip)."""
    if os.name != "posix" or os.geteuid() != 0:
        return "the netns backend needs root"
    if shutil.which("ip") is None:
        return "the netns backend needs iproute2 ('ip' not found; apt-get install iproute2)"
    probe = f"pc{os.getpid()}probe"
    try:
        if _ip("netns", "add", probe, check=False).returncode != 0:
            return "'ip netns add' failed (no CAP_SYS_ADMIN / network namespaces)"
        res = _ip("-n", probe, "rule", "add", "pref", str(RULE_PREF), "from", "10.1.1.1", "to", "10.1.1.2",
                  "blackhole", check=False)  # fmt: skip
        if res.returncode != 0:
            return f"'ip rule ... blackhole' unsupported: {res.stderr.strip()}"
        return None
    finally:
        _ip("netns", "del", probe, check=False)


def _netem_available(ns: str, dev: str) -> str | None:
    res = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem",
                          "delay", "1ms"], capture_output=True, text=True, check=False)  # fmt: skip
    if res.returncode != 0:
        return f"tc netem unavailable: {res.stderr.strip() or 'tc not found'}"
    subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"],
                   capture_output=True, check=False)  # fmt: skip
    return None


def _pick_subnet() -> int:
    """A second octet B such that nothing in the root namespace already uses 10.B.0.0/16."""
    used = _ip("-4", "route").stdout + _ip("-4", "addr").stdout
    candidates = list(range(100, 250))
    random.shuffle(candidates)
    for b in candidates:
        if not re.search(rf"\b10\.{b}\.", used):
            return b
    raise RuntimeError("no free 10.B.0.0/16 block for the chaos network")


def cleanup_stale() -> None:
    """Remove namespaces left by chaos runs whose process is gone (only our own ``pc<pid>x`` names)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        m = re.match(r"(pc(\d+)x\d+-\w+)", line.strip())
        if m and not _pid_alive(int(m.group(2))):
            _ip("netns", "del", m.group(1), check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NetnsNetwork:
    """The namespaces, veths and routes of one run; ``destroy()`` removes every one of them."""

    def __init__(self, n: int) -> None:
        self.tag = f"pc{os.getpid()}x{next(_counter)}"
        self.n = n
        self.router = f"{self.tag}-rt"
        self.host_if = f"{self.tag}h"
        self.namespaces: list[str] = []
        self.b = 0
        self.netem_reason: str | None = None

    def node_ns(self, i: int) -> str:
        return f"{self.tag}-n{i}"

    def node_ip(self, i: int) -> str:
        return f"10.{self.b}.{i}.2"

    def create(self) -> None:
        _networks.append(self)
        self.b = _pick_subnet()
        b = self.b
        _ip("netns", "add", self.router)
        self.namespaces.append(self.router)
        _ip("-n", self.router, "link", "set", "lo", "up")
        forward = "echo 1 > /proc/sys/net/ipv4/ip_forward"
        subprocess.run(["ip", "netns", "exec", self.router, "sh", "-c", forward], check=True, timeout=10)
        # Client side: one end in the root namespace, the other in the router.
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", "hostside", "netns", self.router)
        _ip("addr", "add", f"10.{b}.250.2/24", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.router, "addr", "add", f"10.{b}.250.1/24", "dev", "hostside")
        _ip("-n", self.router, "link", "set", "hostside", "up")
        _ip("route", "add", f"10.{b}.0.0/16", "via", f"10.{b}.250.1", "dev", self.host_if)
        for i in range(self.n):
            ns = self.node_ns(i)
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            _ip(
                "link",
                "add",
                f"r{i}",
                "netns",
                self.router,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            _ip("-n", self.router, "addr", "add", f"10.{b}.{i}.1/24", "dev", f"r{i}")
            _ip("-n", self.router, "link", "set", f"r{i}", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.node_ip(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "route", "add", "default", "via", f"10.{b}.{i}.1")
        self.netem_reason = _netem_available(self.node_ns(0), "eth0")

    def block(self, src: int, dst: int) -> None:
        _ip("-n", self.router, "rule", "add", "pref", str(RULE_PREF), "from", self.node_ip(src),
            "to", self.node_ip(dst), "blackhole")  # fmt: skip

    def heal(self) -> None:
        """Delete every blackhole rule (they all share one preference)."""
        for _ in range(self.n * self.n + 1):
            if _ip("-n", self.router, "rule", "del", "pref", str(RULE_PREF), check=False).returncode != 0:
                break
        # Forget cached routes so healed paths are used at once.
        _ip("-n", self.router, "route", "flush", "cache", check=False)

    def netem(self, i: int, spec: Sequence[str]) -> None:
        if self.netem_reason:
            raise Unsupported(self.netem_reason)
        subprocess.run(["ip", "netns", "exec", self.node_ns(i), "tc", "qdisc", "replace", "dev", "eth0",
                        "root", "netem", *spec], check=True, capture_output=True, timeout=10)  # fmt: skip

    def clear_netem(self, i: int) -> None:
        subprocess.run(["ip", "netns", "exec", self.node_ns(i), "tc", "qdisc", "del", "dev", "eth0", "root"],
                       capture_output=True, check=False, timeout=10)  # fmt: skip

    def destroy(self) -> None:
        """Idempotent: the route goes with the host veth, the veths go with their namespaces."""
        _ip("link", "del", self.host_if, check=False)
        for ns in reversed(self.namespaces):
            _ip("netns", "del", ns, check=False)
        self.namespaces.clear()
        if self in _networks:
            _networks.remove(self)


@atexit.register
def _destroy_all() -> None:
    for net in list(_networks):
        with contextlib.suppress(Exception):
            net.destroy()


class NetnsNemesis(Nemesis):
    """Process faults plus partitions (symmetric or one-way) and, where the kernel has it, netem."""

    backend = "netns"

    def __init__(self, nodes: Sequence[LocalNode], network: NetnsNetwork) -> None:
        super().__init__(nodes)
        self.network = network
        self.index = {n.name: i for i, n in enumerate(nodes)}
        self.degraded: set[int] = set()

    def supports(self, fault: str) -> bool:
        if fault in ("delay", "loss"):
            return self.network.netem_reason is None
        return super().supports(fault) or fault in ("partition", "one_way", "heal")

    def partition(self, groups: Sequence[Sequence[LocalNode]]) -> None:
        """Nodes talk only within their group (nodes in no group are cut from everyone)."""
        group_of = {n.name: str(gi) for gi, g in enumerate(groups) for n in g}
        gid = {n.name: group_of.get(n.name, "alone:" + n.name) for n in self.nodes}
        for a in self.nodes:
            for b in self.nodes:
                if gid[a.name] != gid[b.name]:
                    self.network.block(self.index[a.name], self.index[b.name])
        self._log("partition", "|".join(",".join(n.name for n in g) for g in groups))

    def partition_one_way(self, src: Sequence[LocalNode], dst: Sequence[LocalNode]) -> None:
        """Packets from ``src`` to ``dst`` are dropped; the other direction still flows."""
        for a in src:
            for b in dst:
                self.network.block(self.index[a.name], self.index[b.name])
        self._log("one_way", f"{','.join(n.name for n in src)}->{','.join(n.name for n in dst)}")

    def degrade(self, node: LocalNode, delay_ms: int = 100, loss_pct: float = 0.0) -> None:
        """netem on the node's link (its outgoing packets): delay with jitter and random loss."""
        spec = ["delay", f"{delay_ms}ms", f"{delay_ms // 4}ms"]
        if loss_pct:
            spec += ["loss", f"{loss_pct}%"]
        self.network.netem(self.index[node.name], spec)
        self.degraded.add(self.index[node.name])
        self._log("degrade", node, " ".join(spec))

    def heal_network(self) -> None:
        self.network.heal()
        for i in sorted(self.degraded):
            self.network.clear_netem(i)
        self.degraded.clear()
        self._log("heal", "network")


@contextlib.contextmanager
def netns_cluster(
    workdir: Path, n: int, flags: dict[str, str] | None = None, tls: bool = False
) -> Iterator[NetnsNemesis]:
    """``n`` nodes, each in its own namespace; everything is torn down on exit, even on error.
    ``tls``: node-to-node traffic is mutual TLS (a CA in ``workdir/certs`` and one certificate
    per node, valid for its namespace's address) on port ``PORT + 1000``."""
    reason = netns_unavailable_reason()
    if reason:
        raise Unsupported(reason)
    cleanup_stale()
    network = NetnsNetwork(n)
    nemesis: NetnsNemesis | None = None
    try:
        network.create()
        secret = f"chaos-{os.getpid()}-{time.monotonic_ns()}"
        nodes = []
        for i in range(n):
            node_flags = dict(flags or {})
            if tls:
                files = make_node_cert(workdir / "certs", f"n{i}", [network.node_ip(i)])
                node_flags |= {"cluster-ca": str(workdir / "certs" / "ca.pem"), "node-cert": str(files.cert),
                               "node-key": str(files.key), "internal-port": str(TLS_PORT)}  # fmt: skip
            args = node_args(node_flags, secret)
            if i:
                args += ["--seeds", f"{network.node_ip(0)}:{TLS_PORT if tls else PORT}"]
            prefix = ["ip", "netns", "exec", network.node_ns(i)]
            nodes.append(
                LocalNode(workdir / f"n{i}", PORT, network.node_ip(i), args, prefix=prefix, listen="0.0.0.0")
            )
            if tls:
                nodes[-1].internal_port = TLS_PORT
        nemesis = NetnsNemesis(nodes, network)
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        yield nemesis
    finally:
        if nemesis is not None:
            nemesis.close()
        network.destroy()
