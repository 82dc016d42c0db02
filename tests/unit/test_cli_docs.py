"""docs/cli.md matches the program: every command has its section, every option of a command is
in that section (or in the page the section links to for its options), and every command and
option the page names exists.

A section is a ``### `cmd ARGS`, `cmd2 ...` — what`` heading; its commands are the leading
lower-case words of each backticked part.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
from p2pstore_cli.main import app

DOCS = Path(__file__).resolve().parents[2] / "docs"
CLI_MD = (DOCS / "cli.md").read_text()
GLOBAL = {"--help", "-h", "--url", "--token"}  # documented once, under "Connecting to a cluster"


def commands() -> dict[str, Any]:
    """Every runnable command by its path ("cluster restart"). (typer vendors its own click, so
    commands are told apart by shape.)"""
    found: dict[str, Any] = {}

    def walk(cmd: Any, path: list[str]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = cmd

    walk(typer.main.get_command(app), [])
    return found


def options(cmd: Any) -> set[str]:
    """The long (and lone short) option names of a command."""
    names: set[str] = set()
    for param in cmd.params:
        if param.param_type_name == "option":
            opts = [*param.opts, *param.secondary_opts]
            long = [o for o in opts if o.startswith("--")]
            names.update(long or opts)
    return names - GLOBAL


def section_list() -> list[tuple[list[str], str]]:
    """(command paths, text) per section; the text includes a docs page the section links to
    for its options."""
    found = []
    for part in re.split(r"^### ", CLI_MD, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        text = heading + "\n" + body.split("\n## ", 1)[0]
        for page in re.findall(r"\]\(([a-z0-9_-]+\.md)\)", text):
            if (DOCS / page).exists() and "options" in text.lower():
                text += (DOCS / page).read_text()
        paths = []
        for code in re.findall(r"`([^`]+)`", heading):
            words = []
            for word in code.split():
                if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
                    break
                words.append(word)
            if words:
                paths.append(" ".join(words))
        found.append((paths, text))
    return found


def sections() -> dict[str, str]:
    """Command path -> the text of its section(s)."""
    found: dict[str, str] = {}
    for paths, text in section_list():
        for path in paths:
            found[path] = found.get(path, "") + text
    return found


def test_every_command_has_a_section() -> None:
    documented = sections()
    missing = sorted(path for path in commands() if path not in documented)
    assert not missing, f"docs/cli.md has no section for: {missing}"


def test_every_option_is_documented_in_its_section() -> None:
    documented = sections()
    missing = []
    for path, cmd in commands().items():
        text = documented.get(path, "")
        named = set(re.findall(r"(?<![\w-])(--?[a-z0-9][a-z0-9-]*)", text))
        missing += [f"{path} {o}" for o in sorted(options(cmd) - named)]
    assert not missing, f"options missing from docs/cli.md: {missing}"


def test_every_documented_command_and_option_exists() -> None:
    cmds = commands()
    unknown = sorted(path for path in sections() if path not in cmds)
    assert not unknown, f"docs/cli.md documents commands that do not exist: {unknown}"
    wrong = []
    for paths, text in section_list():
        known = GLOBAL.union(*(options(cmds[p]) for p in paths))
        heading, _, body = text.partition("\n")
        named = set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", heading))
        named |= set(re.findall(r"^\| `(--[a-z0-9-]+)", body.split("\n## ", 1)[0], flags=re.M))
        wrong += [f"{paths} {opt}" for opt in sorted(named - known)]
    assert not wrong, f"docs/cli.md names options that do not exist: {wrong}"


def test_exit_codes_are_documented() -> None:
    from p2pstore_cli import failures

    for name in ("EXIT_FAILED", "EXIT_BAD_INPUT", "EXIT_UNREACHABLE", "EXIT_NOT_FOUND", "EXIT_REFUSED"):
        code = getattr(failures, name)
        assert re.search(rf"^\| `{code}` \|", CLI_MD, flags=re.M), f"exit code {code} ({name}) not listed"
