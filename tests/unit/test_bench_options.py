"""The benchmark's options, defined once in BenchOptions: the command is built from its fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from p2pstore_cli.main import app

from p2pstore.bench.options import (
    DEFAULT_PHASES,
    BenchError,
    BenchOptions,
    flag_name,
    flags,
    options_from_flags,
)


def test_the_bench_command_has_one_option_per_field() -> None:
    command = typer.main.get_command(app).commands["bench"]  # type: ignore[attr-defined]
    options = {p.name: p.opts for p in command.params}
    assert options == {f.name: [flag_name(f, flag)] for f, flag in flags()}
    assert options["urls"] == ["--url"] and options["mem_1g"] == ["--mem-1g"]


def test_flags_not_given_keep_the_defaults() -> None:
    opts = options_from_flags({"phases": DEFAULT_PHASES, "token": None})
    assert opts == BenchOptions(local=1)  # neither --url nor --local: one local node


def test_text_flags_are_parsed_and_checked() -> None:
    given = {"urls": "10.0.0.1:7000,http://b:7000/", "pids": "12,34", "phases": "put-1m,get-1m"}
    opts = options_from_flags({**given, "json": Path("x")})
    assert opts.urls == ["http://10.0.0.1:7000", "http://b:7000"]
    assert opts.pids == [12, 34] and opts.phases == ["put-1m", "get-1m"] and opts.local is None
    with pytest.raises(BenchError, match="--pids: invalid literal"):
        options_from_flags({"urls": "a:1", "pids": "1,x"})
    with pytest.raises(BenchError, match="give --url or --local, not both"):
        options_from_flags({"urls": "a:1", "local": 2})
