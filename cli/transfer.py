"""Many files at once: the worker-thread uploads and downloads behind `put DIR`, `get PREFIX/`
and `sync`.

One kept-alive connection per worker (``-j``) instead of one process and one connection per
file is what makes a folder of small files fast. Every upload carries its sha256 (the node
verifies it); every download is hashed, checked against the node's ETag, fsynced and renamed
into place, so an interrupted run leaves complete files or none, and a re-run finishes the job.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .blocking import CHUNK, BlockingClient
from .client import key_path
from .failures import ApiError, CliError

PART_PREFIX = ".p2pstore-"  # temporary download files: skipped by listings, removed by sync
Advance = Callable[[int], None]


@dataclass(frozen=True)
class LocalFile:
    """A regular file under a folder: its path relative to the folder (with slashes) and size."""

    rel: str
    path: Path
    size: int


@dataclass(frozen=True)
class RemoteFile:
    """A key under a prefix, as the listing describes it."""

    key: str
    size: int
    sha256: str


def sha256_file(path: Path) -> str:
    """Stream a file through sha256."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def walk(folder: Path) -> list[LocalFile]:
    """Every regular file under ``folder`` (symlinks to files followed, our .part files skipped)."""
    found: list[LocalFile] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            if name.startswith(PART_PREFIX) and name.endswith(".part"):
                continue
            path = Path(root) / name
            if not path.is_file():
                continue
            rel = path.relative_to(folder).as_posix()
            found.append(LocalFile(rel, path, path.stat().st_size))
    return found


def list_remote(client: BlockingClient, prefix: str) -> list[RemoteFile]:
    """Every key under ``prefix`` with its size and sha256, paging through the listing."""
    found: list[RemoteFile] = []
    after: str | None = None
    while True:
        page = client.json("GET", "/files", params={"prefix": prefix, "limit": 1000, "after": after})
        files = page.get("files", [])
        found += [RemoteFile(f["key"], int(f.get("size") or 0), str(f.get("sha256") or "")) for f in files]
        after = page.get("next")
        if not after or not files:
            return found


class _CountingReader:
    """A file object for http.client that reports each block sent (for the progress bar)."""

    def __init__(self, path: Path, advance: Advance) -> None:
        self._fh = path.open("rb")
        self._advance = advance

    def read(self, size: int = -1) -> bytes:
        block = self._fh.read(size)
        self._advance(len(block))
        return block

    def close(self) -> None:
        self._fh.close()


def upload(
    client: BlockingClient,
    path: Path,
    key: str,
    advance: Advance,
    sha: str | None = None,
    content_type: str | None = None,
    w: int | None = None,
) -> Any:
    """PUT one file: hashed first (the node checks it), then streamed."""
    import mimetypes

    sha = sha or sha256_file(path)
    size = path.stat().st_size
    headers = {
        "X-Content-SHA256": sha,
        "Content-Length": str(size),
        "Content-Type": content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream",
    }
    readers: list[_CountingReader] = []

    def body() -> _CountingReader:
        for old in readers:  # a retry against the next node starts from the first byte
            old.close()
        readers.append(_CountingReader(path, advance))
        return readers[-1]

    try:
        return client.json("PUT", key_path(key), params={"w": w}, headers=headers, body=body)
    finally:
        for reader in readers:
            reader.close()


def _etag_sha(resp: http.client.HTTPResponse) -> str:
    return (resp.headers.get("ETag") or "").removeprefix("W/").strip('"').lower()


def stream_to(client: BlockingClient, key: str, sink: IO[bytes], query: str = "") -> None:
    """GET one key to a stream (stdout); its sha256 is checked once all is written. ``query``:
    e.g. one version of the file (cli/versions.py)."""
    digest = hashlib.sha256()
    with client.open("GET", key_path(key) + query) as resp:
        expected = _etag_sha(resp)
        while block := resp.read(CHUNK):
            sink.write(block)
            digest.update(block)
    sink.flush()
    if expected and digest.hexdigest() != expected:
        raise CliError(f"checksum mismatch for {key}: expected {expected}, got {digest.hexdigest()}")


def download(
    client: BlockingClient,
    key: str,
    target: Path,
    advance: Advance,
    sized: Advance | None = None,
    query: str = "",
) -> tuple[int, str]:
    """GET one key into ``target``: written beside it, verified, fsynced, then renamed in.
    ``sized`` learns the length once the node answers (a single file's progress bar). Returns
    (bytes, sha256)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{PART_PREFIX}{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh, client.open("GET", key_path(key) + query) as resp:
            expected = _etag_sha(resp)
            if sized is not None and resp.length is not None:
                sized(resp.length)
            digest = hashlib.sha256()
            written = 0
            while block := resp.read(CHUNK):
                fh.write(block)
                digest.update(block)
                written += len(block)
                advance(len(block))
            fh.flush()
            os.fsync(fh.fileno())
        if expected and digest.hexdigest() != expected:
            raise CliError(f"checksum mismatch for {key}: expected {expected}, got {digest.hexdigest()}")
        os.replace(tmp, target)
        return written, digest.hexdigest()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def local_target(folder: Path, prefix: str, key: str) -> Path:
    """Where key ``prefix + rel`` lands under ``folder``; a key that would escape it is refused."""
    rel = key[len(prefix) :]
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise CliError(f"key {key!r} does not map to a file under {folder}")
    return folder.joinpath(*parts)


def remove_stale_parts(folder: Path) -> None:
    """Delete download temporaries an interrupted run left behind."""
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if name.startswith(PART_PREFIX) and name.endswith(".part"):
                with contextlib.suppress(OSError):
                    (Path(root) / name).unlink()


@dataclass
class Outcome:
    """What a batch did: files and bytes done, and the failures (name, message)."""

    done: int = 0
    nbytes: int = 0
    failed: list[tuple[str, str]] | None = None


def run_parallel(
    jobs: int,
    tasks: Sequence[tuple[str, int, Callable[[Advance], Any]]],
    *,
    label: str,
    show_progress: bool | None = None,
) -> Outcome:
    """Run ``(name, size, fn(advance))`` tasks on ``jobs`` threads under one progress bar.

    A failed file is reported and the others go on; unreachable nodes stop the batch (every
    other file would fail the same way).
    """
    from .common import progress
    from .failures import UnreachableError

    outcome = Outcome(failed=[])
    total = sum(size for _, size, _ in tasks)
    with progress(show_progress) as bar:
        task_id = bar.add_task(f"{label} 0/{len(tasks)} files", total=total) if bar else None

        def advance(n: int) -> None:
            if bar is not None and task_id is not None and n:
                bar.advance(task_id, n)

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(fn, advance): (name, size) for name, size, fn in tasks}
            try:
                for future in as_completed(futures):
                    name, size = futures[future]
                    try:
                        future.result()
                    except UnreachableError:
                        raise
                    except ApiError as exc:
                        outcome.failed.append((name, exc.explained))  # type: ignore[union-attr]
                        continue
                    except (CliError, OSError, http.client.HTTPException) as exc:
                        outcome.failed.append((name, getattr(exc, "message", None) or str(exc)))  # type: ignore[union-attr]
                        continue
                    outcome.done += 1
                    outcome.nbytes += size
                    if bar is not None and task_id is not None:
                        bar.update(task_id, description=f"{label} {outcome.done}/{len(tasks)} files")
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return outcome
