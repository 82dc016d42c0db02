"""Local node processes: start, stop, kill, pause and resume ``python -m p2pstore node start``.

The one launcher for everything that runs nodes on this machine: ``p2pstore cluster up``, the
benchmarks, the chaos harness and the tests. A node is a child of the interpreter that launches
it (``sys.executable -m p2pstore``, with this package importable whether it is installed or a
checkout), in its own session so a Ctrl-C in the terminal reaches only the launcher, which then
stops its nodes. Its output is appended to ``<data_dir>.log`` beside its data dir. Readiness is
GET /health polled against a deadline, never a fixed sleep. Every node still running when the
launching process exits is killed.

Standard library only: the CLI imports this module, and so do the benchmarks and the tests.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import site
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

# The folder holding the p2pstore package: a checkout's root, or site-packages when installed.
SRC_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SECRET_ENV = "P2PSTORE_CLUSTER_SECRET"

_live: weakref.WeakSet[LocalNode] = weakref.WeakSet()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (with SO_REUSEADDR, as the node binds,
    so a closed connection still in TIME_WAIT does not count as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free ports (the OS may hand out a port again once its socket is closed)."""
    ports: list[int] = []
    while len(ports) < n:
        if (port := free_port(host)) not in ports:
            ports.append(port)
    return ports


def flags_to_args(flags: Mapping[str, Any]) -> list[str]:
    """``{"chunk_size": 4096, "fsync": "never"}`` -> ``["--chunk-size", "4096", "--fsync", "never"]``.

    Underscores become dashes (a dashed name stays as it is), True adds a bare flag, None and
    False drop it, lists and tuples become comma-separated values.
    """
    args: list[str] = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif isinstance(value, list | tuple):
            args += [flag, ",".join(str(v) for v in value)]
        else:
            args += [flag, str(value)]
    return args


def _installed_in_site_dir(root: Path) -> bool:
    """True when ``root`` is a site-packages folder, which every interpreter has on its path."""
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return any(Path(d).resolve() == root for d in dirs if d)


def child_env(extra: Mapping[str, str] | None = None, *, keep_settings: bool = False) -> dict[str, str]:
    """The environment of a ``python -m p2pstore`` child.

    The parent's environment, without its P2PSTORE_* variables unless ``keep_settings`` (a
    harness's nodes are configured by their flags alone, so a variable left in a developer's
    shell cannot change a test), with this package importable from a checkout (its root goes on
    PYTHONPATH; an installed copy is already importable and its site-packages is not pushed
    ahead of the standard library) and unbuffered output, so a log shows what a killed node
    printed last. ``extra`` is applied last.
    """
    env = {k: v for k, v in os.environ.items() if keep_settings or not k.startswith("P2PSTORE_")}
    if not _installed_in_site_dir(SRC_ROOT):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def http_json(
    url: str,
    method: str = "GET",
    body: Any = None,
    token: str | None = None,
    timeout: float = 5.0,
) -> tuple[int, Any]:
    """A small blocking JSON request: (status, decoded body or None). Never raises on 4xx/5xx;
    raises OSError when the node cannot be reached."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


class NodeNotReady(RuntimeError):
    """A node ended, or did not answer in time, before it was ready.

    The message ends with the tail of the node's log (what a test report needs); ``summary`` is
    one line with the log's last line, for a command that reports errors in one line.
    """

    def __init__(self, node: LocalNode, reason: str) -> None:
        self.node = node
        self.reason = reason
        head = f"node {node.name} ({node.url}) {reason}"
        last = node.log_tail(1).strip() or "(empty)"
        self.summary = f"{head}; the last line of {node.log_path}: {last[:300]}"
        super().__init__(f"{head}; the end of {node.log_path}:\n{node.log_tail()}")


def _is_ready(health: dict[str, Any] | None, joined: bool) -> bool:
    return health is not None and (not joined or health.get("joined", True) is not False)


class LocalNode:
    """One ``python -m p2pstore node start`` child process.

    ``url`` is where clients reach it (``host``), ``listen`` the address it binds (``host``
    unless given; a different one makes it advertise ``host:port``). ``prefix`` runs it behind a
    command that execs it, such as ``ip netns exec NS``, so the pid stays the node's. ``env``
    adds to (and ``keep_settings`` keeps the P2PSTORE_* variables of) the environment
    :func:`child_env` builds. ``token`` is the API token requests to it carry.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        args: Sequence[str] = (),
        *,
        name: str | None = None,
        token: str | None = None,
        env: Mapping[str, str] | None = None,
        keep_settings: bool = False,
        prefix: Sequence[str] = (),
        listen: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()  # the child runs in the data dir's parent
        self.name = name or self.data_dir.name
        self.host = host
        self.port = port or free_port(host)
        self.args = list(args)
        self.token = token
        self.env = dict(env or {})
        self.keep_settings = keep_settings
        self.prefix = list(prefix)
        self.listen = listen or host
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.node_id: str | None = None  # as its last /health answer reported it
        self.started_at = 0.0
        self.ready_seconds: float | None = None  # from the last start to its first good /health
        self.s3_port = 0  # the S3 API's port when the node serves one
        self.internal_port: int | None = None  # the mutual-TLS port peers call, when TLS is on

    @property
    def s3_url(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @classmethod
    def cluster(
        cls,
        parent: Path,
        n: int,
        flags: Mapping[str, Any] | None = None,
        *,
        ports: Sequence[int] | None = None,
        host: str = "127.0.0.1",
        name: str = "node",
        env: Mapping[str, str] | None = None,
        keep_settings: bool = False,
        s3_ports: Sequence[int] | None = None,
        tls: Path | None = None,
        internal_ports: Sequence[int] | None = None,
    ) -> list[Self]:
        """``n`` unstarted nodes in ``parent/<name><i>`` that form one cluster.

        Node 0 is the seed of the others (unless ``flags`` names seeds). Without ``tls`` all share
        one cluster secret: the ``cluster_secret`` flag, else ``env``'s P2PSTORE_CLUSTER_SECRET (kept out of
        the command line, which every local user can read), else a fresh one given as a flag.
        ``flags`` go to every node (see :func:`flags_to_args`; ``chunk_size`` and ``chunk-size``
        name the same flag); ``api_token`` among them is also what requests to the nodes carry.
        ``ports`` default to free ones; ``s3_ports``, when given, are the nodes' S3 API ports.
        ``tls``: a folder made by ``p2pstore cluster certs`` (``ca.pem``, ``node<i>.pem``,
        ``node<i>-key.pem``): node-to-node traffic is mutual TLS on a free internal port per
        node (or ``internal_ports``), and the seed is node 0's internal address. Without it the
        nodes run plain HTTP with signed requests (``--insecure-plain``, see :meth:`command`).
        """
        flags = {k.replace("-", "_"): v for k, v in (flags or {}).items()}
        if tls is None and "cluster_secret" not in flags and CLUSTER_SECRET_ENV not in (env or {}):
            flags["cluster_secret"] = f"local-{os.getpid()}-{time.monotonic_ns()}"
        ports = list(ports) if ports is not None else free_ports(n, host)
        if len(ports) != n:
            raise ValueError(f"{n} nodes need {n} ports, not {len(ports)}")
        internal = list(internal_ports or [p for p in free_ports(3 * n, host) if p not in ports][:n])
        if tls is None:
            internal = ports
        nodes: list[Self] = []
        for i, port in enumerate(ports):
            node_flags = dict(flags)
            if i > 0 and "seeds" not in flags:
                node_flags["seeds"] = f"{host}:{internal[0]}"
            if tls is not None:
                node_flags |= {"cluster_ca": str(tls / "ca.pem"), "node_cert": str(tls / f"node{i}.pem"),
                               "node_key": str(tls / f"node{i}-key.pem"),
                               "internal_port": internal[i]}  # fmt: skip
            if s3_ports is not None:
                node_flags["s3_port"] = s3_ports[i]
            nodes.append(
                cls(
                    Path(parent) / f"{name}{i}", port, host, flags_to_args(node_flags),
                    token=flags.get("api_token"), env=env, keep_settings=keep_settings,
                )
            )  # fmt: skip
            if s3_ports is not None:
                nodes[-1].s3_port = s3_ports[i]
            if tls is not None:
                nodes[-1].internal_port = internal[i]
        return nodes

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def command(self) -> list[str]:
        """The node's command line; a node given neither TLS files nor ``--insecure-plain`` gets
        the latter (the harnesses' nodes run plain HTTP with signed requests unless asked)."""
        peer_port = self.internal_port or self.port
        advertise = [] if self.listen == self.host else ["--advertise", f"{self.host}:{peer_port}"]
        settings = {**(os.environ if self.keep_settings else {}), **self.env}
        chosen = {"--cluster-ca", "--insecure-plain"} & set(self.args) or {
            "P2PSTORE_CLUSTER_CA", "P2PSTORE_INSECURE_PLAIN"} & set(settings)  # fmt: skip
        plain = [] if chosen else ["--insecure-plain"]
        return [
            *self.prefix, sys.executable, "-m", "p2pstore", "node", "start",
            "--data-dir", str(self.data_dir), "--host", self.listen, "--port", str(self.port),
            *advertise, *self.args, *plain,
        ]  # fmt: skip

    def start(self) -> Self:
        """Launch the process without waiting for it (see :meth:`wait_ready`); a no-op while it runs."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = self.command()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} start {' '.join(command)}\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=child_env(self.env, keep_settings=self.keep_settings), cwd=str(self.data_dir.parent),
                start_new_session=True,
            )  # fmt: skip
        self.paused = False
        self.ready_seconds = None
        _live.add(self)
        return self

    def health(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """GET /health, or None when the node does not answer 200; remembers the node id."""
        try:
            status, body = http_json(self.url + "/health", token=self.token, timeout=timeout)
        except (OSError, ValueError):
            return None
        if status != 200 or not isinstance(body, dict):
            return None
        self.node_id = body.get("node_id", self.node_id)
        return body

    def healthy(self, joined: bool = True, timeout: float = 1.0) -> bool:
        """One /health poll: the node answers 200 and, with ``joined``, has found its cluster (a
        node started with seeds answers file requests with 503 until then)."""
        return _is_ready(self.health(timeout), joined)

    def wait_ready(
        self, timeout: float = 30.0, *, joined: bool = True, interval: float = 0.05
    ) -> dict[str, Any]:
        """Poll /health until :meth:`healthy`; return that answer and set ``ready_seconds``.

        Raises NodeNotReady when the process ends first or ``timeout`` passes.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None:
                raise NodeNotReady(self, "was never started")
            if self.proc.poll() is not None:
                raise NodeNotReady(self, f"exited with code {self.proc.returncode} before it was ready")
            body = self.health()
            if body is not None and _is_ready(body, joined):
                self.ready_seconds = time.monotonic() - self.started_at
                return body
            if time.monotonic() > deadline:
                raise NodeNotReady(self, f"was not ready within {timeout:.0f}s")
            time.sleep(interval)

    def get_json(self, path: str, timeout: float = 10.0) -> Any:
        """GET a JSON endpoint of this node; RuntimeError on a non-2xx status, OSError when down."""
        status, body = http_json(self.url + path, token=self.token, timeout=timeout)
        if status >= 300:
            raise RuntimeError(f"GET {path} on {self.url}: HTTP {status}: {body}")
        return body

    def _signal(self, sig: int) -> None:
        if self.running and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap: a crash or power cut for this process."""
        if self.proc is not None:
            self._signal(signal.SIGKILL)
            self.proc.wait()
        self.paused = False

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM for a graceful stop (a paused node is woken to receive it); SIGKILL when it takes
        longer than ``timeout``. Returns the exit code."""
        self._ask_to_stop()
        return self._wait_or_kill(timeout)

    def _ask_to_stop(self) -> None:
        if self.running:
            self._signal(signal.SIGTERM)
            if self.paused:
                self._signal(signal.SIGCONT)

    def _wait_or_kill(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.paused = False
        return self.returncode

    def pause(self) -> None:
        """SIGSTOP: the process is frozen, its sockets stay open and nothing answers."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def restart(self, timeout: float = 30.0, kill: bool = False) -> Self:
        """Stop (gracefully, or SIGKILL when ``kill``) and start again with the same data dir and port."""
        if kill:
            self.kill()
        else:
            self.terminate()
        self.start()
        self.wait_ready(timeout)
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited({self.returncode})"
        return f"<{type(self).__name__} {self.name} {self.url} {state}>"


def start_all(
    nodes: Sequence[LocalNode],
    timeout: float = 60.0,
    *,
    one_by_one: bool = False,
    joined: bool = True,
    converged: bool = False,
    interval: float = 0.05,
) -> None:
    """Start the nodes and wait until each is ready; if one fails, kill them all and raise.

    ``one_by_one`` waits for each before starting the next, so each ``ready_seconds`` is a
    start-up time not shared with the others' start-ups. ``converged`` also waits until every
    node sees all of them alive (see :func:`wait_converged`).
    """
    try:
        for node in nodes:
            node.start()
            if one_by_one:
                node.wait_ready(timeout, joined=joined, interval=interval)
        for node in nodes:
            if node.ready_seconds is None:
                node.wait_ready(timeout, joined=joined, interval=interval)
        if converged:
            wait_converged(nodes, timeout)
    except BaseException:
        for node in nodes:
            node.kill()
        raise


def wait_converged(nodes: Sequence[LocalNode], timeout: float = 60.0) -> None:
    """Poll /status until every node sees all of them alive: a benchmark that starts earlier
    measures writes placed on a partial view, and the repairs that follow them."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            views = [node.get_json("/status") for node in nodes]
            if all(sum(m["state"] == "alive" for m in v["members"]) >= len(nodes) for v in views):
                return
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the {len(nodes)} nodes did not all see each other within {timeout:.0f}s")
        time.sleep(0.1)


def stop_all(nodes: Iterable[LocalNode], timeout: float = 10.0) -> None:
    """SIGTERM every running node at once, then wait up to ``timeout`` seconds for each and
    SIGKILL it after that: stopping them together keeps a cluster's shutdown as short as one
    node's."""
    nodes = list(nodes)
    for node in nodes:
        node._ask_to_stop()
    for node in nodes:
        node._wait_or_kill(timeout)


def reap_all() -> None:
    """Kill every node this process started that still runs (at exit, and after a failed start)."""
    for node in list(_live):
        with contextlib.suppress(Exception):
            node.kill()


atexit.register(reap_all)
