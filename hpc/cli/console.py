"""The rich consoles commands print with, made when they print: a console reads the terminal's width
(``COLUMNS``) when it is made, and commands are imported on first use, not at start-up."""

from __future__ import annotations

from rich.console import Console


def out(*, width: int | None = None) -> Console:
    return Console(highlight=False, width=width)


def err() -> Console:
    return Console(stderr=True, highlight=False)
