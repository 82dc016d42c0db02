"""Run a node: build the aiohttp application, start background tasks, stop cleanly on signals."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import resource
import signal
import sys
import uuid

from aiohttp import web

from .api.errors import error_response
from .api.gate import gate
from .api.guard import Guard, GuardedRunner, Limits
from .api.internal import add_internal_routes
from .api.overview import add_overview_routes, sample_activity
from .api.public import NODE_KEY, add_routes
from .api.tls_listener import MutualTLSSite
from .cluster.identity import resolve as resolve_identity
from .cluster.tls import public_context, server_context
from .config import NodeConfig
from .core.identity import Adoption, IdentityRefused
from .node import Node, stored_node_id
from .s3.admin import add_admin_routes
from .s3.app import build_s3_app, direct_handler
from .s3.app import error_response as s3_error_response
from .s3.errors import S3Error
from .s3.lifecycle import LifecycleRunner
from .s3.registry import Registry
from .s3.sweeper import UploadSweeper
from .web.routes import add_web_routes

log = logging.getLogger("p2pstore")

READ_BUFSIZE = 1 << 20
CLIENT_MAX_SIZE = 1024**2  # only for bodies read whole (forms, internal messages); files stream
REFREEZE_INTERVAL = 600.0  # seconds between full collections that refresh the frozen set
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle keep-alive connection is kept (aiohttp's default: an hour)


def build_app(node: Node, registry: Registry | None = None) -> web.Application:
    app = web.Application(
        middlewares=[gate],
        client_max_size=CLIENT_MAX_SIZE,
    )
    app[NODE_KEY] = node
    add_routes(app)
    add_overview_routes(app)
    add_web_routes(app)
    add_internal_routes(app)
    add_admin_routes(app, registry or Registry(node))
    return app


def limits_of(cfg: NodeConfig) -> Limits:
    return Limits(cfg.header_timeout, cfg.body_timeout, cfg.min_body_rate, cfg.max_uploads_per_client)


def refuse_json(request: web.BaseRequest, why: str, status: int = 503) -> web.StreamResponse:
    return error_response(status, why)


S3_REFUSALS = {503: "ServiceUnavailable", 431: "RequestHeaderSectionTooLarge", 400: "BadRequest"}


def refuse_s3(request: web.BaseRequest, why: str, status: int = 503) -> web.StreamResponse:
    err = S3Error(S3_REFUSALS.get(status, "BadRequest"), why)
    return s3_error_response(request, err, uuid.uuid4().hex[:16].upper())  # type: ignore[arg-type]


def setup_logging(level: str, node_id: str = "-") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s [{node_id}] %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def checkpoint_timer(node: Node) -> None:
    """Write a checkpoint every ``checkpoint_interval`` seconds (0 disables)."""
    interval = node.config.checkpoint_interval
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            result = await node.store.checkpoint(node.config.checkpoint_keep)
            log.info("checkpoint %s written", result["checkpoint"])
        except Exception:
            log.exception("timed checkpoint failed")


async def freeze_long_lived() -> None:
    """Keep the cyclic garbage collector's full passes short.

    A full pass walks every container object the process holds (modules, classes, the app,
    caches). Here one took 20-90 ms, several ran per minute under load, and each stalled every
    request in flight. Objects that live through start-up are moved out of the collector's
    sight (``gc.freeze``); every ten minutes they are put back, collected once, and frozen
    again, so cycles among them that died meanwhile are still reclaimed.
    """
    while True:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        await asyncio.sleep(REFREEZE_INTERVAL)


async def adoption_for(cfg: NodeConfig) -> Adoption | None:
    """A node whose data dir holds no id yet may take a dead member's place (a replaced disk):
    asked of the seeds before anything is built (cluster/identity.py)."""
    own = stored_node_id(cfg.data_dir)
    if own is not None:
        if cfg.replaces and cfg.replaces != own:
            raise SystemExit(f"error: --replaces {cfg.replaces}: the data dir already belongs to {own}; "
                             "a replacement starts with an empty data dir")  # fmt: skip
        return None
    try:
        adoption = await resolve_identity(cfg)
    except IdentityRefused as exc:
        raise SystemExit(f"error: --replaces {cfg.replaces}: {exc}") from exc
    if adoption is not None:
        log.info("empty data dir: taking the place of member %s (%s)", adoption.node_id, adoption.reason)
    return adoption


async def serve(cfg: NodeConfig, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set, then shut down in order: listener, tasks, store."""
    node = Node(cfg, await adoption_for(cfg))
    setup_logging(cfg.log_level, node.node_id)
    registry = Registry(node)  # S3 buckets and access keys, shared by both APIs
    app = build_app(node, registry)
    # Request bodies are buffered up to READ_BUFSIZE before the socket is paused: aiohttp's 64 KiB
    # default paused and resumed it 16 times per MiB uploaded.
    guard = Guard(limits_of(cfg))
    runner = GuardedRunner(app, guard, refuse_json, access_log=None, handler_cancellation=False,
                           read_bufsize=READ_BUFSIZE, keepalive_timeout=KEEPALIVE_TIMEOUT)  # fmt: skip
    await runner.setup()
    runners = [runner]
    public_tls = public_context(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert else None
    sites = [web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True, ssl_context=public_tls)]
    if cfg.internal_tls:  # the same app; /_internal/ answers only connections with a cluster cert
        internal_tls = server_context(cfg.cluster_ca, cfg.node_cert, cfg.node_key)
        port = cfg.internal_listen_port
        sites.append(MutualTLSSite(runner, cfg.host, port, internal_tls))
    if cfg.s3_port:
        s3_app = build_s3_app(node, registry)
        s3_runner = GuardedRunner(s3_app, guard, refuse_s3, direct_handler(s3_app), access_log=None,
                                  handler_cancellation=False, read_bufsize=READ_BUFSIZE,
                                  keepalive_timeout=KEEPALIVE_TIMEOUT)  # fmt: skip
        await s3_runner.setup()
        runners.append(s3_runner)
        sites.append(
            web.TCPSite(s3_runner, cfg.host, cfg.s3_port, reuse_address=True, ssl_context=public_tls)
        )
    for site in sites:
        try:
            await site.start()
        except OSError as exc:
            for r in runners:
                await r.cleanup()
            node.close()
            raise SystemExit(f"error: cannot listen on {site.name}: {exc.strerror}") from exc
    node.start()
    sweeper = UploadSweeper(node)
    lifecycle = LifecycleRunner(node)
    if cfg.s3_port:
        sweeper.start()
        lifecycle.start()
    tasks = [
        asyncio.create_task(guard.run(), name="slow-client-guard"),
        asyncio.create_task(checkpoint_timer(node), name="checkpoint-timer"),
        asyncio.create_task(freeze_long_lived(), name="gc-freeze"),
        asyncio.create_task(sample_activity(node), name="activity-sampler"),
    ]
    log.info("node %s ready at %s (data dir %s)", node.node_id, cfg.url, cfg.data_dir)
    if cfg.internal_tls:
        log.info("node-to-node traffic: mutual TLS on port %d", cfg.internal_listen_port)
    elif (warning := cfg.plain_warning) is not None:
        log.warning("%s", warning)
    if cfg.s3_port:
        scheme = "https" if public_tls else "http"
        log.info("S3 API on %s://%s:%d (region %s)", scheme, cfg.host, cfg.s3_port, cfg.s3_region)
    try:
        await stop.wait()
    finally:
        log.info("node %s stopping", node.node_id)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await sweeper.stop()
        await lifecycle.stop()
        await node.stop()
        for r in runners:
            await r.cleanup()
        node.close()
        log.info("node %s stopped", node.node_id)


def install_uvloop() -> None:
    """Run on uvloop (when installed), with aiohttp's vectored writes back on.

    On Python < 3.12.9 aiohttp never calls ``transport.writelines`` (asyncio's was unsafe on
    3.12.0-3.12.8) and joins a message's headers and body into one new bytes object instead: a
    1 MiB answer or replica write would be copied, or (to avoid that) sent as two writes, each
    waking the receiver. uvloop's ``writelines`` is one ``writev`` without a copy, so on uvloop headers
    and body leave together.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return
    from aiohttp import http_writer

    uvloop.install()
    http_writer.SKIP_WRITELINES = False  # not public API: aiohttp is pinned in pyproject.toml


# glibc mallopt() parameters (malloc.h) and the values a node sets, each unless the user set the
# matching MALLOC_*_ environment variable (glibc reads those itself at start).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MALLOC_SETTINGS = (
    (M_ARENA_MAX, 1, "MALLOC_ARENA_MAX"),
    (M_MMAP_THRESHOLD, 2 << 20, "MALLOC_MMAP_THRESHOLD_"),
    (M_TRIM_THRESHOLD, 4 << 20, "MALLOC_TRIM_THRESHOLD_"),
)


def tune_malloc() -> list[str]:
    """Keep glibc's allocator from holding memory the node no longer uses; returns what was set.

    By default glibc gives each thread that allocates its own arena (up to 8 per core), and
    after a large block is freed it raises its mmap threshold (up to 32 MiB), so later multi-MiB
    chunk buffers come from those arenas and stay resident there after they are freed: four
    concurrent 64 MiB GETs left a node at 150-200 MiB peak and ~100 MiB after.
    One arena (the GIL serialises nearly all allocation anyway), blocks of 2 MiB and more always
    mmapped (returned to the system when freed), and a heap trimmed above 4 MiB free keep the
    resident set near what is in use: memory an upload's pieces used (allocated by the event
    loop's thread) is reused by the next GET's pieces (read by an I/O thread) instead of sitting
    in another arena, and 1 MiB pieces, the common buffer size, are reused from the heap without
    page faults (docs/benchmarks.md, "Memory"). A no-op where the C library is not glibc."""
    try:  # the process's own symbols, libc's among them (find_library would run ldconfig)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return []
    done = []
    for param, value, env in MALLOC_SETTINGS:
        if env not in os.environ and mallopt(param, value) == 1:
            done.append(f"{env.rstrip('_')}={value}")
    return done


def raise_open_file_limit() -> None:
    """Raise this process's soft limit of open files to the hard limit: every client connection,
    peer stream and chunk file is a descriptor, and a soft limit of 1,024 lets a thousand idle
    sockets disable a node (its scrubber and repair then fail with EMFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("open file limit stays at %d: %s", soft, exc)


def run_node(cfg: NodeConfig) -> None:
    """Blocking entry point used by ``p2pstore node start``."""
    setup_logging(cfg.log_level)
    tune_malloc()  # before any worker thread exists: arenas are made per thread
    raise_open_file_limit()
    install_uvloop()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, stop)

    asyncio.run(main())
