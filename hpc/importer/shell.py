"""Lines of a batch script read as bash reads them, far enough to move them into a job spec.

A word comes back in the spec's syntax for run-time text: a reference to a variable as ``${NAME}``, a
literal ``$`` as ``$$``, ``~`` at the start as ``${HOME}``; quotes are removed as bash removes them.
What the spec cannot say (``$(…)``, backquotes, ``${X:-y}``, ``$1``, globs, redirections, ``&&``) is
:class:`Unplaceable`: the caller keeps the line as shell code (a setup step) or as a note.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from hpc.text import run_time_literal

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = ";&|<>()"
# compound commands: their lines belong together, and a spec has no place for them
BLOCK_OPENERS = {"if": "fi", "for": "done", "while": "done", "until": "done", "case": "esac"}


class Unplaceable(ValueError):
    """Why a word or line has no place in a spec field; ``operator``: the line is more than one command."""

    def __init__(self, problem: str, *, operator: bool = False) -> None:
        super().__init__(problem)
        self.operator = operator


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, of the first physical line
    text: str  # continuation lines joined, stripped


@dataclass(frozen=True)
class Word:
    text: str  # in the spec's syntax (``${NAME}``, ``$$``)
    start: int  # offset of the word in the line, for "the rest of the line" as written


def logical_lines(script: str) -> list[Line]:
    """Non-blank lines with ``\\``-continuations joined (comments and ``#SBATCH`` lines kept)."""
    out: list[Line] = []
    pending: list[str] = []
    first = 0
    for number, raw in enumerate(script.split("\n"), start=1):
        if not pending:
            first = number
        stripped = raw.rstrip()
        if stripped.endswith("\\") and not stripped.endswith("\\\\"):
            pending.append(stripped[:-1])
            continue
        text = " ".join(part.strip() for part in [*pending, stripped]).strip()
        pending = []
        if text:
            out.append(Line(first, text))
    if pending:
        out.append(Line(first, " ".join(part.strip() for part in pending).strip()))
    return out


def words(line: str) -> Iterator[Word]:
    """The words of a simple command, lazily: an operator or construct the spec cannot hold raises
    Unplaceable only when reached, so a caller may stop reading before it (``srun … cp a b && c``)."""
    i, n = 0, len(line)
    while i < n:
        if line[i] in " \t":
            i += 1
            continue
        if line[i] == "#":
            return
        start, parts = i, []
        if line[i] == "~" and (i + 1 == n or line[i + 1] in "/ \t"):
            parts.append("${HOME}")
            i += 1
        while i < n and line[i] not in " \t":
            char = line[i]
            if char in _OPERATORS:
                raise Unplaceable(f"{char!r} (an operator or redirection)", operator=True)
            if char in "*?":
                raise Unplaceable(f"the pattern {char!r}")
            if char == "`":
                raise Unplaceable("a command substitution (`…`)")
            if char == "\\":
                parts.append(run_time_literal(line[i + 1:i + 2]))
                i += 2
            elif char == "'":
                end = line.find("'", i + 1)
                if end < 0:
                    raise Unplaceable("an unterminated quote")
                parts.append(run_time_literal(line[i + 1:end]))
                i = end + 1
            elif char == '"':
                i = _double_quoted(line, i + 1, parts)
            elif char == "$":
                i = _reference(line, i, parts)
            else:
                parts.append(char)
                i += 1
        yield Word("".join(parts), start)


def split(line: str) -> list[str]:
    """Every word of a simple command in the spec's syntax, or Unplaceable."""
    return [word.text for word in words(line)]


def _double_quoted(line: str, i: int, parts: list[str]) -> int:
    while i < len(line):
        char = line[i]
        if char == '"':
            return i + 1
        if char == "`":
            raise Unplaceable("a command substitution (`…`)")
        if char == "\\" and line[i + 1:i + 2] in ('"', "\\", "$", "`"):
            parts.append(run_time_literal(line[i + 1]))
            i += 2
        elif char == "$":
            i = _reference(line, i, parts)
        else:
            parts.append(char)
            i += 1
    raise Unplaceable("an unterminated quote")


def _reference(line: str, i: int, parts: list[str]) -> int:
    """``$NAME`` or ``${NAME}`` at ``i`` as ``${NAME}``; a lone ``$`` as ``$$``; the rest Unplaceable."""
    rest = line[i + 1:]
    braced = re.match(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", rest)
    if braced:
        parts.append("${" + braced.group(1) + "}")
        return i + 1 + braced.end()
    bare = _NAME.match(rest)
    if bare:
        parts.append("${" + bare.group() + "}")
        return i + 1 + bare.end()
    if not rest or rest[0] in " \t\"'/:":
        parts.append("$$")
        return i + 1
    if rest[0] == "(":
        raise Unplaceable("a command substitution ($(…))")
    raise Unplaceable(f"the shell expansion ${rest[:12].split()[0]}")
