"""Every command says what it does, and every option what it means (issue 18, "Help and messages")."""

from __future__ import annotations

import argparse

import pytest

from symzoo.cli import build_parser


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, path + (name,))


COMMANDS = list(_commands(build_parser()))


@pytest.mark.parametrize("path, parser", COMMANDS, ids=[" ".join(p) or "symzoo" for p, _ in COMMANDS])
def test_every_option_has_a_help_text(path, parser):
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"symzoo {' '.join(path)} {'/'.join(action.option_strings) or action.dest}: no help text"


def test_the_commands_a_newcomer_starts_with_state_their_defaults():
    helps = {" ".join(path): parser.format_help() for path, parser in COMMANDS}
    assert "(default: 5)" in helps["metanet train"] and "(default: 50)" in helps["metanet train"]
    assert "(default: symzoo-" in helps["quickstart"] and "600" in helps["quickstart"]
    generate = " ".join(helps["generate"].split())
    for words in ("$SYMZOO_DATA, then ~/.cache/symzoo/data", "default: the preset's, e.g. 1000", "paired row by row"):
        assert words in generate
