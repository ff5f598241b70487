"""Command lines of the node programs: options, then ``-- COMMAND ARGS...`` passed on untouched."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def parse_with_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` into ``parser``'s options plus ``command``: the words after ``--``, required."""
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given after --")
    return args
