"""Waiting for a condition in integration tests, and the trained weights the preemption tests compare."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60, interval: float = 0.2) -> None:
    """Return once ``condition()`` holds; fail the test, naming ``what``, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(interval)


def weights(out: Path, rank: int) -> list[bytes]:
    """Worker ``rank``'s final weights as saved by tests/fixtures/tf/preempt_fit.py, bytes per array."""
    import numpy as np

    saved = np.load(out / f"weights-{rank}.npz")
    return [saved[name].tobytes() for name in saved.files]
