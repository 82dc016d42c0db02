"""Every configuration field is settable the three documented ways: a row in the one table of
docs/configuration.md (field, flag, environment variable) and a flag of `p2pstore node start`."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

from cli.node import start
from p2pstore.config import NodeConfig, from_env

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


def test_every_field_has_its_row_in_the_table() -> None:
    for f in dataclasses.fields(NodeConfig):
        row = f"| `{f.name}` | `--{f.name.replace('_', '-')}` | `P2PSTORE_{f.name.upper()}` |"
        assert row in DOC, f"docs/configuration.md lacks the row for {f.name}"


def test_every_field_is_a_flag_of_node_start() -> None:
    flags = set(inspect.signature(start).parameters)
    missing = [f.name for f in dataclasses.fields(NodeConfig) if f.name not in flags]
    assert not missing, f"`p2pstore node start` has no flag for {missing}"


def test_environment_variables_fill_the_fields() -> None:
    cfg = from_env(env={"P2PSTORE_READ_LEASE": "0", "P2PSTORE_SCRUB_RATE": "1024"})
    assert cfg.read_lease == 0 and cfg.scrub_rate == 1024
