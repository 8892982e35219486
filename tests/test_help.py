"""Every command and subcommand answers ``--help`` with examples, and every example is a valid command."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator

import pytest

from connector.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


COMMANDS = list(_commands(build_parser()))


def _examples(help_text: str) -> list[str]:
    assert "\nexamples:\n" in help_text
    block = help_text.split("\nexamples:\n", 1)[1]
    return [line.strip() for line in block.splitlines() if line.startswith("  ") and line.strip()]


def _argv(example: str) -> list[str]:
    """The connector's own arguments in a shell example: environment assignments before it and
    redirections or pipes after it are the shell's."""
    words = shlex.split(example)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words.pop(0)
    assert words[0] == "connector", example
    cut = next((i for i, w in enumerate(words) if w in {"<", ">", "|", "&&", ";"}), len(words))
    return words[1:cut]


def test_every_command_is_covered() -> None:
    """The walk finds the top level, every command and the subcommands of config and dlq."""
    assert {
        (), ("run",), ("sandbox",), ("demo",), ("trace",), ("resync",), ("config", "show"), ("dlq", "redrive"),
    } <= set(COMMANDS)  # fmt: skip
    assert len(COMMANDS) == 16


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(("connector", *p)))
def test_help_shows_examples_that_parse(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """``connector ... --help`` exits 0 and ends with examples of that very command; each example's
    arguments are accepted by the parser."""
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(('connector', *path))}")
    examples = _examples(out)
    assert examples
    for example in examples:
        argv = _argv(example)
        assert tuple(argv[: len(path)]) == path, f"{example!r} is not an example of {path}"
        build_parser().parse_args(argv)  # exits 2 on an argument the command does not take


def test_a_broken_example_would_be_caught() -> None:
    """The check above is not vacuous: an example with an unknown option does not parse."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(_argv("connector demo --no-such-option"))
