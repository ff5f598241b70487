"""The rich consoles commands print with, made when they print: a console reads the terminal's width
(``COLUMNS``) when it is made, and commands are imported on first use, not at start-up.

Markup and emoji codes are off: what commands print holds paths, names and Slurm's text, and
``[red]`` or ``:smile:`` in a directory name must come out as written (``[/red]`` alone would end the
command with a markup error). Styles are given as styles: ``print(text, style="bold")`` or
``Text.assemble(("bold part", "bold"), " plain part")``.

Only a terminal has a width. Output that goes to a pipe or a file (scripts, logs, ``| less``) is
neither wrapped nor cut: a command line, a path or a job id stays whole on its line, so it can be
copied and pasted, and a table is as wide as its widest cells (``COLUMNS`` is not read there).
"""

from __future__ import annotations

import sys

from rich.console import Console

# "No width" for rich: a table narrower than this is never shrunk, and text is not wrapped at all
UNLIMITED = sys.maxsize


def out() -> Console:
    return _console(stderr=False)


def err() -> Console:
    return _console(stderr=True)


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False, markup=False, emoji=False)
    if not console.is_terminal:
        console.width = UNLIMITED
        console.soft_wrap = True
    return console
