"""Processes on this host, as the runtime and the serving node see them. Standard library only."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """A process with this pid exists (another user's counts: signal 0 is then refused, not unanswered)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
