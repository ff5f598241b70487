"""Run a command with a pseudo-terminal as its stdout and stderr, as a user's shell would, and keep what it drew."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(shown: str) -> str:
    """What a terminal drew, without its escape codes."""
    return ESCAPE.sub("", shown)


def _default_sigint() -> None:
    """Ctrl-C as on a terminal: a run started in the background by a non-interactive shell (CI's ``... &``)
    ignores SIGINT, the ignored disposition is inherited across exec, and Python then installs no handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_on_pty(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 600,
               interrupt_on: str | None = None) -> tuple[int, str]:
    """The exit code and everything written to the terminal (escape codes kept: :func:`plain` drops them).

    ``interrupt_on``: once the terminal shows this text, press Ctrl-C (SIGINT to the command's process
    group, as the terminal driver sends it to the foreground job)."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=None if env is None else dict(env), stdin=subprocess.DEVNULL,
                                stdout=terminal, stderr=terminal, start_new_session=True, preexec_fn=_default_sigint)
    finally:
        os.close(terminal)
    chunks = []
    interrupted = interrupt_on is None
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: every holder of the terminal's other end is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
        if not interrupted and str(interrupt_on) in plain(b"".join(chunks).decode(errors="replace")):
            os.killpg(proc.pid, signal.SIGINT)
            interrupted = True
    os.close(controller)
    return proc.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")
