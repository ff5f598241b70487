"""README.md as the tests read it: its fenced blocks, the commands in them, the outputs it shows.

A test runs a README command by its text, ``readme_argv("hpc-tf logs JOBID --task 0 -f", JOBID=job)``
(the text must be a command of the README, or the test fails: a README edit cannot leave a test
running a command the README no longer shows), and checks what the README shows as output with
``assert_shows(first_line, output, ...)``. tests/unit/test_readme_coverage.py maps every block and
command to the test that runs it: a block no test covers fails there.

Output lines are compared after masking what differs from run to run (paths, run names, elapsed
times, addresses, job ids the caller names); ``…`` in the README stands for anything.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
_FENCE = re.compile(r"^ *```(\S*)\s*$")


@dataclass(frozen=True)
class Block:
    line: int  # README.md line of the block's first content line
    info: str  # the fence's info string ("", "yaml", "python")
    lines: tuple[str, ...]  # content, dedented to the fence

    @property
    def first(self) -> str:
        return self.lines[0].strip() if self.lines else ""

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README, in order."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    out: list[Block] = []
    opened: tuple[int, str] | None = None  # (index of the opening fence, its info string)
    for index, line in enumerate(lines):
        fence = _FENCE.match(line)
        if fence is None:
            continue
        if opened is None:
            opened = (index, fence.group(1))
            continue
        start, info = opened
        body = textwrap.dedent("\n".join(lines[start + 1:index])).splitlines()
        out.append(Block(start + 2, info, tuple(body)))
        opened = None
    if opened is not None:
        raise AssertionError(f"{README}:{opened[0] + 1}: a fenced block is never closed")
    return out


def block(first: str) -> Block:
    """The one README block whose first line is ``first``."""
    found = [b for b in blocks() if b.first == first]
    assert len(found) == 1, f"README.md has {len(found)} blocks starting with {first!r}"
    return found[0]


def command_text(line: str) -> str:
    """A command line without its ``# comment``, its words joined by single spaces."""
    return shlex.join(shlex.split(line, comments=True))


def commands(block_: Block) -> list[tuple[int, str]]:
    """(README line, command text) of each command line of a command block."""
    return [(block_.line + i, command_text(line)) for i, line in enumerate(block_.lines) if command_text(line)]


def readme_argv(text: str, **placeholders: str) -> list[str]:
    """The argv of the README command ``text`` (as :func:`command_text` writes it), with placeholder
    words (``JOBID``, ``DIR``, ``RUN_DIR``) replaced by the real values from the previous steps."""
    shown = {cmd for b in blocks() if not b.info for _, cmd in commands(b)}
    assert text in shown, f"README.md shows no command {text!r}: update the test with the README"
    words = shlex.split(text)
    unused = set(placeholders) - set(words)
    assert not unused, f"placeholders {sorted(unused)} are not words of {text!r}"
    return [placeholders.get(word, word) for word in words]


def _mask(line: str, ids: Mapping[str, str]) -> str:
    for value, name in ids.items():
        line = re.sub(rf"(?<![\w.]){re.escape(value)}(?![\w])", f"<{name}>", line)
    line = re.sub(r"\b\d\d:\d\d:\d\d/", "<elapsed>/", line)  # elapsed/limit: only the limit is stable
    line = re.sub(r"[\w.-]+-\d{8}-\d{6}-[0-9a-f]{4}", "<run>", line)  # run names: name-date-time-random
    line = re.sub(r"(?:…)?/[^\s,():]+", "<path>", line)  # absolute paths, and README's elided "…/x"
    line = re.sub(r"\b\d{1,3}(?:\.\d{1,3}){3}:\d+\b", "<address>", line)
    return " ".join(line.split())


def missing_lines(shown: Sequence[str], output: str, ids: Mapping[str, str] = {}) -> list[str]:
    """The README lines ``shown`` that ``output`` does not print, in that order (after masking; ``…``
    matches anything). ``ids`` maps run-specific values (job ids) of the README and of the run to one
    name each, e.g. ``{"5007": "job", real_id: "job"}``."""
    actual = [_mask(line, ids) for line in output.splitlines()]
    missing: list[str] = []
    at = 0
    for line in shown:
        if not line.strip():
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in _mask(line, ids).split("…")))
        found = next((i for i in range(at, len(actual)) if pattern.fullmatch(actual[i])), None)
        if found is None:
            missing.append(line)
        else:
            at = found + 1
    return missing


def assert_shows(first: str, output: str, ids: Mapping[str, str] = {}, only: Sequence[str] | None = None) -> None:
    """The README block starting with ``first`` (only its lines starting with one of ``only``, if given)
    is what ``output`` printed, in order."""
    lines = block(first).lines
    if only is not None:
        lines = tuple(line for line in lines if line.strip().startswith(tuple(only)))
        assert lines, f"the README block {first!r} has no line starting with {only}"
    missing = missing_lines(lines, output, ids)
    assert not missing, ("README.md shows lines the command did not print:\n  " + "\n  ".join(missing)
                         + f"\n--- what it printed:\n{output[-4000:]}")
