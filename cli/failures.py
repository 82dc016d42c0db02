"""What went wrong, in the user's terms: one error class per category, each with its exit code.

Scripts branch on the exit code, people read the one line; docs/cli.md lists the codes. The
categories: the nodes could not be reached at all; a node answered and refused (its reason is
in the message); the key or member is not there; the input was bad (ours or as the node saw it).
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

EXIT_FAILED = 1  # the command ran and failed (a checksum mismatch, some files not copied)
EXIT_BAD_INPUT = 2  # a usage error, a missing local file, or a node answered 400/413/422
EXIT_UNREACHABLE = 3  # no node answered: refused connection, DNS failure, timeout
EXIT_NOT_FOUND = 4  # the node answered 404: no such key or member
EXIT_REFUSED = 5  # a node answered and refused (quorum not met, disk full, forbidden, 5xx)
EXIT_INTERRUPTED = 130

_BAD_INPUT_STATUSES = {400, 405, 411, 413, 414, 416, 422}


class CliError(Exception):
    """A failure to report to the user as one line, with its category's exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class BadInput(CliError):
    """The user's input was wrong before any node was asked."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_BAD_INPUT)


class ApiError(CliError):
    """A node answered with an error status (JSON ``{"error", "detail"}``)."""

    def __init__(self, status: int, message: str, detail: Any = None, node: str = "") -> None:
        super().__init__(message, exit_code_for(status))
        self.status = status
        self.detail = detail
        self.node = node

    @property
    def explained(self) -> str:
        """The message with its category: what a user reads."""
        where = f" by {self.node}" if self.node else ""
        if self.status == 404:
            return f"not found: {self.message}"
        if self.exit_code == EXIT_BAD_INPUT:
            return f"bad input (HTTP {self.status}): {self.message}"
        return f"refused{where} (HTTP {self.status}): {self.message}"


class UnreachableError(CliError):
    """No node in the URL list could be reached."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_UNREACHABLE)


def exit_code_for(status: int) -> int:
    """The exit code for a node's error status."""
    if status == 404:
        return EXIT_NOT_FOUND
    if status in _BAD_INPUT_STATUSES:
        return EXIT_BAD_INPUT
    return EXIT_REFUSED


def os_reason(exc: BaseException) -> str:
    """A short, human reason for a connection failure ("connection refused", "unknown host")."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    import ssl  # only here: it costs start-up time every command would pay

    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or exc
        return f"its TLS certificate is not trusted ({why}); name its CA with SSL_CERT_FILE=ca.pem"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        if exc.errno == errno.ECONNREFUSED:
            return "connection refused"
        if exc.errno > 0:
            return os.strerror(exc.errno).lower()
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def unreachable(urls: list[str], failures: list[str]) -> UnreachableError:
    """One line naming the nodes and why none could be reached."""
    distinct = {f.split(": ", 1)[1] for f in failures}
    reasons = distinct.pop() if len(distinct) == 1 else "; ".join(failures)
    return UnreachableError(f"cannot reach any node ({', '.join(urls)}): {reasons}")
