"""Recorded Slurm command outputs, and a runner that plays them back instead of calling Slurm.

Higher layers (status, quota, campaigns, the CLI) are tested by handing a :class:`ReplayRunner`
to :class:`hpc.scheduler.run.SlurmCli`: same code path as on a cluster, minus the cluster.

A recording file (``*.rec``) is the command, how it was produced, its exit code and its output::

    # command: squeue --noheader --jobs=1
    # note: controller stopped (a copy of slurm.conf whose SlurmctldPort nothing listens on)
    # returncode: 1            ("timeout" for a call killed at its timeout)
    # --- stdout
    # --- stderr
    slurm_load_jobs error: Unable to contact slurm controller (connect failure)
"""

from __future__ import annotations

import shlex
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpc.scheduler.run import CommandResult

_STDOUT, _STDERR = "# --- stdout", "# --- stderr"


@dataclass(frozen=True)
class Recording:
    result: CommandResult
    note: str = ""


def parse_recording(text: str) -> Recording:
    head, sep, rest = text.partition(_STDOUT + "\n")
    if not sep:
        raise ValueError(f"a recording needs a '{_STDOUT}' line")
    stdout, sep, stderr = rest.partition(_STDERR + "\n")
    if not sep:
        raise ValueError(f"a recording needs a '{_STDERR}' line")
    meta: dict[str, str] = {}
    for line in head.splitlines():
        key, colon, value = line.removeprefix("#").partition(":")
        if colon:
            meta[key.strip()] = value.strip()
    code = meta.get("returncode", "")
    result = CommandResult(
        tuple(shlex.split(meta["command"])),
        None if code == "timeout" else int(code),
        stdout,
        stderr,
    )
    return Recording(result, meta.get("note", ""))


def load_recording(path: Path) -> Recording:
    return parse_recording(path.read_text(encoding="utf-8"))


def format_recording(result: CommandResult, note: str = "") -> str:
    """The text of a ``.rec`` file for ``result`` (how the fixtures are written)."""
    code = "timeout" if result.returncode is None else str(result.returncode)
    lines = [f"# command: {shlex.join(result.argv)}", f"# note: {note}", f"# returncode: {code}", _STDOUT]
    body = "\n".join(lines) + "\n" + result.stdout
    if result.stdout and not result.stdout.endswith("\n"):
        body += "\n"
    return body + _STDERR + "\n" + result.stderr


class ReplayRunner:
    """Answers each argv with its recorded results, in order; the last one repeats.

    ``calls`` lists every argv asked for, so a test can assert "one sacct call for 1,000 jobs".
    An argv without a recording raises LookupError: a test must not silently talk to nothing.
    """

    def __init__(self, results: Iterable[CommandResult] = ()) -> None:
        self._answers: dict[tuple[str, ...], deque[CommandResult]] = {}
        self.calls: list[tuple[str, ...]] = []
        for result in results:
            self.add(result)

    def add(self, result: CommandResult) -> None:
        self._answers.setdefault(tuple(result.argv), deque()).append(result)

    def answer(
        self, argv: Sequence[str], stdout: str = "", stderr: str = "", returncode: int | None = 0
    ) -> None:
        self.add(CommandResult(tuple(argv), returncode, stdout, stderr))

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        key = tuple(argv)
        self.calls.append(key)
        queue = self._answers.get(key)
        if not queue:
            known = "\n  ".join(shlex.join(k) for k in self._answers) or "(none)"
            raise LookupError(f"no recording for: {shlex.join(key)}\nrecorded:\n  {known}")
        return queue.popleft() if len(queue) > 1 else queue[0]

    def count(self, tool: str) -> int:
        return sum(1 for argv in self.calls if argv and argv[0] == tool)
