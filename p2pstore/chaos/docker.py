"""Docker backend: the nemesis on compose.yaml's containers, with the real Docker commands.

The faults are exactly what an operator would type: ``docker kill`` (SIGKILL to the node, the
container stops), ``docker start`` (same container, same volume, same node id), ``docker pause``
/ ``unpause`` (cgroup freezer: sockets stay open, nothing answers) and ``docker network
disconnect`` / ``connect`` of one container from the compose network (its peers and its
published port lose it at once; on reconnect its service-name aliases are restored so peers
find it again by name). A partition here isolates whole nodes: every node outside the largest
group is disconnected, so only "one side is a set of lone nodes" partitions can be expressed;
one-way partitions, disk rot and wipes are not supported by this backend.

``compose_cluster`` runs compose.yaml under a unique project name with node ports published on
127.0.0.1 and removes every container, network and volume of that project on exit, even on
error. Starting the engine and building the image is the caller's business (the tests use
tests/support/docker.py, which drives scripts/docker-setup).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..launcher import LocalNode, free_ports
from .nemesis import Nemesis, Unsupported

SERVICES = ("node1", "node2", "node3")


class DockerCli:
    """``docker ...`` with a fixed environment (DOCKER_HOST); raises RuntimeError on failure."""

    def __init__(self, env: Mapping[str, str] | None = None, docker: str = "docker") -> None:
        self.env = dict(env if env is not None else os.environ)
        self.docker = docker

    def __call__(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.docker, *args], capture_output=True, text=True, timeout=timeout, env=self.env, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} -> {proc.returncode}: {proc.stderr.strip()[-400:]}")
        return proc

    def inspect(self, container: str) -> dict[str, Any]:
        data = json.loads(self("inspect", container).stdout)
        return data[0] if isinstance(data, list) else data


class DockerNode(LocalNode):
    """One compose service's container, reached through its published port on ``host``."""

    def __init__(
        self, name: str, container: str, port: int, cli: DockerCli, network: str, host: str = "127.0.0.1"
    ) -> None:
        super().__init__(Path(f"/nonexistent/{name}"), port, host, name=name)
        self.container = container
        self.cli = cli
        self.network = network
        self.disconnected = False
        self.pause_attempts = 0
        self._running = True
        self.aliases = self._aliases()

    def _aliases(self) -> list[str]:
        """The container's DNS names on the compose network (service name first), for reconnects."""
        info = self.cli.inspect(self.container)
        net = info.get("NetworkSettings", {}).get("Networks", {}).get(self.network) or {}
        names = [self.name, *(net.get("Aliases") or []), *(net.get("DNSNames") or [])]
        short = self.container[:12]
        cname = str(info.get("Name", "")).lstrip("/")
        return list(dict.fromkeys(a for a in names if a and a not in (short, self.container, cname)))

    @property
    def running(self) -> bool:
        return self._running

    def state(self) -> dict[str, Any]:
        """Docker's view: ``Running``, ``Paused``, ``Restarting``, ``ExitCode``..."""
        return dict(self.cli.inspect(self.container).get("State") or {})

    def start(self) -> DockerNode:
        """``docker start`` (a no-op when running), then reconnect to the compose network if cut off."""
        if not self._running:
            self.cli("start", self.container)
            self._running = True
            self.paused = False
        if self.disconnected:
            self.connect()
        return self

    def kill(self) -> None:
        """``docker kill``: SIGKILL to the node process, the container stops (a crash)."""
        if self._running:
            if self.cli("kill", self.container, check=False).returncode != 0 and self.paused:
                self.cli("unpause", self.container, check=False)  # old engines refuse to kill frozen ones
                self.cli("kill", self.container, check=False)
            self.cli("wait", self.container, timeout=30, check=False)
        self._running = False
        self.paused = False

    def pause(self, attempts: int = 5) -> None:
        """``docker pause``; ``pause_attempts`` says how many tries it took.

        runc gives up with "unable to freeze" when a task does not reach the frozen state in time
        (seen on a loaded host, e.g. a task in uninterruptible I/O); it thaws the cgroup again, so
        trying again a moment later is safe.
        """
        for attempt in range(1, attempts + 1):
            proc = self.cli("pause", self.container, check=False)
            self.pause_attempts = attempt
            if proc.returncode == 0:
                self.paused = True
                return
            if "freeze" not in proc.stderr or attempt == attempts:
                raise RuntimeError(f"docker pause {self.name}: {proc.stderr.strip()[-400:]}")
            time.sleep(0.5)

    def sync(self) -> None:
        """Take Docker's word for running / paused / connected (after a failed or foreign command)."""
        info = self.cli.inspect(self.container)
        state = info.get("State") or {}
        self._running = bool(state.get("Running"))
        self.paused = bool(state.get("Paused"))
        self.disconnected = self.network not in (info.get("NetworkSettings", {}).get("Networks") or {})

    def resume(self) -> None:
        self.cli("unpause", self.container)
        self.paused = False

    def disconnect(self) -> None:
        self.cli("network", "disconnect", self.network, self.container)
        self.disconnected = True

    def connect(self) -> None:
        args = [arg for alias in self.aliases for arg in ("--alias", alias)]
        self.cli("network", "connect", *args, self.network, self.container)
        self.disconnected = False

    def wait_ready(
        self, timeout: float = 60.0, *, joined: bool = True, interval: float = 0.2
    ) -> dict[str, Any]:
        """Poll /health through the published port until the node answers (and, with ``joined``,
        has joined its cluster); return that answer."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.health()
            if body is not None and (not joined or body.get("joined", True) is not False):
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} not ready after {timeout:.0f}s (state {self.state()}):\n{self.log_tail()}"
                )
            time.sleep(interval)

    def terminate(self, timeout: float = 10.0) -> int | None:
        """Leave it runnable for ``compose down``: thawed (the container itself is compose's to remove)."""
        if self.paused:
            self.cli("unpause", self.container, check=False)
            self.paused = False
        return None

    def log_tail(self, lines: int = 40) -> str:
        proc = self.cli("logs", "--tail", str(lines), self.container, check=False)
        return (proc.stdout + proc.stderr).strip()

    def __repr__(self) -> str:
        return f"<DockerNode {self.name} {self.container[:12]} {self.url}>"


class DockerNemesis(Nemesis):
    """kill / start / restart / pause / resume with the docker CLI, partitions by network disconnect."""

    backend = "docker"

    def __init__(self, nodes: Sequence[DockerNode], ready_timeout: float = 60.0, project: str = "") -> None:
        super().__init__(nodes, ready_timeout)
        self.docker_nodes = list(nodes)
        self.project = project

    def supports(self, fault: str) -> bool:
        return fault in ("kill", "pause", "resume", "restart", "start", "partition", "disconnect", "heal")

    def _node(self, node: LocalNode) -> DockerNode:
        assert isinstance(node, DockerNode), node
        return node

    def kill(self, node: LocalNode) -> None:
        """``docker kill``; the log says how Docker left it (the restart policy must not revive it)."""
        node.kill()
        state = self._node(node).state()
        self._log("kill", node, f"exit {state.get('ExitCode')}, running={state.get('Running')}")

    def pause(self, node: LocalNode) -> None:
        """``docker pause`` (cgroup freezer), retried when runc could not freeze in time."""
        dn = self._node(node)
        dn.pause()
        self._log("pause", node, f"{dn.pause_attempts} attempts" if dn.pause_attempts > 1 else "")

    def heal(self) -> None:
        """Re-read every container's state from Docker, then end every fault."""
        for node in self.docker_nodes:
            with contextlib.suppress(RuntimeError, ValueError, KeyError):
                node.sync()
        super().heal()

    def start(self, node: LocalNode) -> None:
        """``docker start`` a dead node (reconnecting it if it was cut off) and wait for /health."""
        was_cut = self._node(node).disconnected
        node.start()
        node.wait_ready(self.ready_timeout)
        self._log("start", node, "reconnected" if was_cut else "")

    def disconnect(self, node: LocalNode) -> None:
        """``docker network disconnect``: the node loses its peers and its published port."""
        self._node(node).disconnect()
        self._log("disconnect", node)

    def connect(self, node: LocalNode) -> None:
        """``docker network connect`` with the node's service-name aliases."""
        self._node(node).connect()
        self._log("connect", node)

    def partition(self, groups: Sequence[Sequence[LocalNode]]) -> None:
        """Keep the largest group connected, disconnect every other node (each one alone)."""
        groups = sorted((list(g) for g in groups), key=len, reverse=True)
        if any(len(g) > 1 for g in groups[1:]):
            raise Unsupported(
                "docker network disconnect isolates single nodes: minority groups must be singletons"
            )
        keep = {n.name for n in groups[0]} if groups else set()
        for node in self.nodes:
            if node.name not in keep and not self._node(node).disconnected:
                self.disconnect(node)

    def partition_one_way(self, src: Sequence[LocalNode], dst: Sequence[LocalNode]) -> None:
        raise Unsupported("one-way partitions need the netns backend")

    def flip_bytes(self, node: LocalNode, *args: Any, **kwargs: Any) -> str | None:
        raise Unsupported("disk rot is not injected into container volumes")

    def wipe(self, node: LocalNode, keep_identity: bool = False) -> None:
        raise Unsupported("wipe is not implemented for the docker backend")

    def heal_network(self) -> None:
        """Reconnect every disconnected node that is running (dead ones reconnect on start)."""
        for node in self.docker_nodes:
            if node.disconnected and node.running:
                self.connect(node)

    def down(self) -> list[LocalNode]:
        """Dead, frozen or cut-off nodes: the ones that count against ``max_down``."""
        return [n for n in self.docker_nodes if not n.running or n.paused or n.disconnected]


def project_leftovers(cli: DockerCli, project: str) -> dict[str, list[str]]:
    """Containers, networks and volumes still labelled with the compose project (should be none)."""
    label = f"label=com.docker.compose.project={project}"
    out: dict[str, list[str]] = {}
    for kind, args in (
        ("containers", ("ps", "-aq", "--filter", label)),
        ("networks", ("network", "ls", "-q", "--filter", label)),
        ("volumes", ("volume", "ls", "-q", "--filter", label)),
    ):
        proc = cli(*args, check=False)
        out[kind] = proc.stdout.split() if proc.returncode == 0 else [f"error: {proc.stderr.strip()}"]
    return out


def remove_project(cli: DockerCli, compose_cmd: Sequence[str], env: Mapping[str, str], project: str) -> None:
    """``compose down -v``, then force-remove whatever still carries the project's label."""
    label = f"label=com.docker.compose.project={project}"
    for cid in cli("ps", "-q", "--filter", label, check=False).stdout.split():
        cli("unpause", cid, check=False)  # a frozen container would hold `down` up
    subprocess.run(
        [*compose_cmd, "-p", project, "down", "-v", "--remove-orphans", "-t", "5"],
        capture_output=True, text=True, timeout=180, env=dict(env), check=False,
    )  # fmt: skip
    left = project_leftovers(cli, project)
    if left["containers"]:
        cli("rm", "-fv", *left["containers"], check=False)
    if left["networks"]:
        cli("network", "rm", *left["networks"], check=False)
    if left["volumes"]:
        cli("volume", "rm", "-f", *left["volumes"], check=False)


@contextlib.contextmanager
def compose_cluster(
    compose_cmd: Sequence[str],
    compose_file: Path,
    env: Mapping[str, str],
    image: str,
    project: str | None = None,
    services: Sequence[str] = SERVICES,
    extra_env: Mapping[str, str] | None = None,
    ready_timeout: float = 120.0,
) -> Iterator[DockerNemesis]:
    """compose.yaml's nodes from a built ``image`` (no build), ports on 127.0.0.1, all removed on exit.

    ``compose_cmd`` is ``["docker", "compose"]`` or ``["docker-compose"]``; ``env`` carries
    DOCKER_HOST. The nemesis's ``project`` attribute names the compose project.
    """
    project = project or f"p2pchaos{secrets.token_hex(4)}"
    ports = dict(zip(services, free_ports(len(services)), strict=True))
    full_env = dict(env)
    full_env.update(
        P2PSTORE_IMAGE=image,
        P2PSTORE_CLUSTER_SECRET=secrets.token_urlsafe(16),
        P2PSTORE_BIND_ADDRESS="127.0.0.1",
        **{f"P2PSTORE_PORT_{s.upper()}": str(p) for s, p in ports.items()},
        **(extra_env or {}),
    )
    cmd = [*compose_cmd, "-f", str(compose_file)]
    cli = DockerCli(full_env)
    try:
        up = subprocess.run(
            [*cmd, "-p", project, "up", "-d", "--no-build", *services],
            capture_output=True, text=True, timeout=300, env=full_env, check=False,
        )  # fmt: skip
        if up.returncode != 0:
            raise RuntimeError(f"compose up failed: {up.stderr.strip()[-1000:]}")
        nodes = []
        for service in services:
            cid = subprocess.run(
                [*cmd, "-p", project, "ps", "-q", service],
                capture_output=True, text=True, timeout=60, env=full_env, check=True,
            ).stdout.strip()  # fmt: skip
            if not cid:
                raise RuntimeError(f"no container for {service}")
            cid = cli.inspect(cid)["Id"]
            networks = list(cli.inspect(cid)["NetworkSettings"]["Networks"])
            net = f"{project}_default" if f"{project}_default" in networks else networks[0]
            nodes.append(DockerNode(service, cid, ports[service], cli, net))
        nemesis = DockerNemesis(nodes, ready_timeout=ready_timeout, project=project)
        for node in nodes:
            node.wait_ready(ready_timeout)
        yield nemesis
    finally:
        remove_project(cli, cmd, full_env, project)
