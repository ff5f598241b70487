"""The rich consoles commands print with, made when they print: a console reads the terminal's width
(``COLUMNS``) when it is made, and commands are imported on first use, not at start-up.

Markup and emoji codes are off: what commands print holds paths, names and Slurm's text, and
``[red]`` or ``:smile:`` in a directory name must come out as written (``[/red]`` alone would end the
command with a markup error). Styles are given as styles: ``print(text, style="bold")`` or
``Text.assemble(("bold part", "bold"), " plain part")``.
"""

from __future__ import annotations

from rich.console import Console


def out(*, width: int | None = None) -> Console:
    return Console(highlight=False, markup=False, emoji=False, width=width)


def err() -> Console:
    return Console(stderr=True, highlight=False, markup=False, emoji=False)
