"""Run a command with a pseudo-terminal as its stdout and stderr, as a user's shell would, and keep what it drew."""

from __future__ import annotations

import os
import pty
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_pty(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 600) -> tuple[int, str]:
    """The exit code and everything written to the terminal (escape codes kept: :func:`plain` drops them)."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=terminal,
                                stderr=terminal)
    finally:
        os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: every holder of the terminal's other end is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    return proc.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")


def plain(shown: str) -> str:
    """What a terminal drew, without its escape codes."""
    return ESCAPE.sub("", shown)
