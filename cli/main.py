"""The `p2pstore` command: root app, global options and the no-traceback entry point.

New command groups register here: write a module with a ``register(app)`` function (add a
sub-app with ``app.add_typer`` or commands with ``app.command``) and add it to ``_MODULES``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from . import admin, bench, chaos, cluster, files, keys, node, recover, sync, versions
from .client import DEFAULT_URL
from .common import Connection
from .failures import EXIT_INTERRUPTED, ApiError, CliError


def _coerce_plain_values_without_pydantic() -> None:
    """typer coerces every parameter through a pydantic TypeAdapter, and importing pydantic costs
    more than a whole `p2pstore stat` may take. A str needs no validation, a bool flag is one
    already, and a number that parses and is within its range is that number: those are coerced
    here; anything else (a bad value and its error message, paths, choices, parsers) still goes
    to typer's own coercion. Guarded so that a typer without these internals is left as it is."""
    try:
        from dataclasses import dataclass
        from typing import Any

        from typer import _coercion, core
    except ImportError:
        return
    build = getattr(core, "build_runtime_param", None)
    base = getattr(_coercion, "RuntimeParam", None)
    if build is None or base is None:
        return

    @dataclass(frozen=True)
    class Plain(base):  # type: ignore[misc, valid-type]
        descriptor: Any = None

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if self.annotation is str and isinstance(value, str):
                return value
            if self.annotation is bool and isinstance(value, bool):
                return value
            number_like = isinstance(value, str | int | float) and not isinstance(value, bool)
            if self.annotation in (int, float) and number_like:
                try:
                    number = self.annotation(value)  # "8" from the command line, 1000 as a default
                except ValueError:
                    number = None
                if isinstance(value, float) and self.annotation is int:
                    number = None  # 2.5 for an int: typer's error
                low, high = self.parameter_info.min, self.parameter_info.max
                if number is not None and (low is None or number >= low) and (high is None or number <= high):
                    return number
            return build(self.descriptor)._coerce_value(value, param=param, ctx=ctx)

    def plain_or_typer(descriptor: Any) -> Any:
        info = descriptor.parameter_info
        simple = (
            descriptor.annotation in (str, bool, int, float)
            and descriptor.file_annotation is None
            and getattr(info, "parser", None) is None
            and getattr(info, "click_type", None) is None
            and not descriptor.is_choice
            and not getattr(info, "clamp", False)
        )
        if simple:
            return Plain(parameter_info=info, annotation=descriptor.annotation, descriptor=descriptor)
        return build(descriptor)

    core.build_runtime_param = plain_or_typer


_coerce_plain_values_without_pydantic()

app = typer.Typer(
    name="p2pstore",
    help="p2pstore: a peer-to-peer, self-healing, triple-replicated file store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rich's help renderer doubles the start-up time
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            "--url",
            envvar="P2PSTORE_URL",
            help="Node URL(s), comma-separated; the next one is tried when a node is down.",
        ),
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="P2PSTORE_API_TOKEN", help="API token (Bearer)."),
    ] = None,
) -> None:
    """Keep the connection options for the client commands."""
    ctx.obj = Connection(url=url, token=token)


_MODULES = (files, sync, admin, node, cluster, recover, chaos, bench, keys, versions)
for _module in _MODULES:
    _module.register(app)


def _fail(message: str, code: int) -> None:
    """One line on stderr, then exit: the only way the CLI reports an error."""
    message = " ".join(str(message).split()) or "unknown error"
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def _no_such_option(exc: Exception, ctx: typer.Context) -> str:
    """"no such option" with a suggestion only when one is really close (click's compares the
    dashes too, so it offers --long for --bogus)."""
    import difflib

    given = str(getattr(exc, "option_name", ""))
    wanted = given.lstrip("-")
    options = [o for param in ctx.command.params for o in getattr(param, "opts", []) if o.startswith("--")]
    by_bare = {o.lstrip("-"): o for o in options}
    close = difflib.get_close_matches(wanted, list(by_bare), n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join(by_bare[c] for c in close)}?" if close else ""
    return f"no such option: {given}{hint}"


def _fail_click_or_other(exc: Exception) -> None:
    """Report a click/typer exception (typer vendors its own click, so match by shape)."""
    name = type(exc).__name__
    ctx = getattr(exc, "ctx", None)
    if name == "NoArgsIsHelpError":
        sys.stderr.write(ctx.get_help() + "\n" if ctx else "")
        sys.exit(2)
    if isinstance(exc, typer.Abort) or name == "Abort":
        _fail("aborted", 130)
    if name == "NoSuchOption" and ctx is not None:
        _fail(f"{_no_such_option(exc, ctx)} (see '{ctx.command_path} --help')", 2)
    format_message = getattr(exc, "format_message", None)
    exit_code = getattr(exc, "exit_code", None)
    if callable(format_message) and isinstance(exit_code, int):
        message = format_message().replace("Value error, ", "")
        if exit_code == 2 and ctx is not None:
            message += f" (see '{ctx.command_path} --help')"
        _fail(message, exit_code)
    _fail(f"{name}: {exc}", 1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn every failure into one line on stderr."""
    try:
        command = typer.main.get_command(app)
        rv = command.main(args=argv, prog_name="p2pstore", standalone_mode=False)
    except ApiError as exc:
        _fail(exc.explained, exc.exit_code)
    except CliError as exc:
        _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `p2pstore get big | head`: the reader left; not our error.
        sys.stderr.close()
        sys.exit(0)
    except Exception as exc:
        _fail_click_or_other(exc)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
