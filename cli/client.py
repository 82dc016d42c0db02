"""Where the CLI's requests go: node URLs, the default one, and a key's path.

Any node is a gateway, so the CLI takes a list of node URLs and moves on to the next one when a
node cannot be reached or answers 503 (cli/blocking.py); every other answer is final.
"""

from __future__ import annotations

from urllib.parse import quote

from .failures import ApiError, BadInput, CliError, UnreachableError

__all__ = ["DEFAULT_URL", "ApiError", "BadInput", "CliError", "UnreachableError", "key_path", "parse_urls"]

DEFAULT_URL = "http://127.0.0.1:7000"


def parse_urls(raw: str | None) -> list[str]:
    """Split a comma-separated URL list; accept bare ``host:port`` for convenience."""
    urls = []
    for part in (raw or DEFAULT_URL).split(","):
        part = part.strip().rstrip("/")
        if not part:
            continue
        if "://" not in part:
            part = "http://" + part
        urls.append(part)
    if not urls:
        raise BadInput("no node URL given (use --url or P2PSTORE_URL)")
    return urls


def key_path(key: str) -> str:
    """``/files/<key>`` with every segment quoted but the slashes kept."""
    if not key:
        raise BadInput("key must not be empty")
    return "/files/" + "/".join(quote(seg, safe="") for seg in key.split("/"))
