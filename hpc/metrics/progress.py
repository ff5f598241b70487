"""Where a running job's training is, in words, from its ``metrics.jsonl`` (for ``launch --wait``).

Two views of the same rows: one line per row when it appears (``epoch 2/3  loss 0.4123  1.8s/epoch``),
which a log or a pipe keeps, and the latest of them with the fraction done, for a live bar on a
terminal. The file may not exist yet (the job is pending, or its script has not reached ``fit``),
and its last line may be half-written: both only mean nothing new to show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpc.errors import HpcTfError
from hpc.metrics.read import Row, RunMetrics, read_metrics


def _value(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4g}"


def position(row: Row) -> str:
    """``epoch 2/3`` (Keras counts epochs from 0; people count from 1), ``step 40/96``, or ``epoch 2``
    when the total is not known."""
    if row.kind == "epoch" and row.epoch is not None:
        return f"epoch {row.epoch + 1}" + (f"/{row.epochs}" if row.epochs is not None else "")
    if row.step is not None:
        return f"step {row.step}" + (f"/{row.steps}" if row.steps is not None else "")
    return "epoch ?" if row.epoch is None else f"epoch {row.epoch + 1}"


def fraction(row: Row) -> float | None:
    """How much of the planned training the row marks as done, when the total is known."""
    if row.kind == "step" and row.step is not None and row.steps:
        return min(1.0, row.step / row.steps)
    if row.epoch is not None and row.epochs:
        return min(1.0, (row.epoch + 1) / row.epochs)
    return None


def describe(row: Row, previous: Row | None = None) -> str:
    """The row as one line: position, every value it logged, and the time since ``previous`` (the row
    before it of the same attempt; the first row has none, its time includes start-up)."""
    parts = [position(row), *(f"{name} {_value(value)}" for name, value in row.values.items())]
    if previous is not None and previous.run == row.run and row.time >= previous.time:
        parts.append(f"{row.time - previous.time:.3g}s/{'epoch' if row.kind == 'epoch' else 'row'}")
    if row.attempt:
        parts.append(f"(attempt {row.attempt + 1})")
    return "  ".join(parts)


@dataclass(frozen=True)
class Update:
    lines: Sequence[str]  # one per row not shown before, in training order
    latest: str | None  # the newest row, described (None: nothing logged yet)
    fraction: float | None


class ProgressReader:
    """Reads ``metrics.jsonl`` again on each :meth:`update` and says what is new since the last one.

    A row counts as new once per attempt: a requeued run that trains an epoch again shows it again,
    marked with its attempt."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._shown: set[tuple[tuple[str, int], tuple[str, int | None, int | None]]] = set()

    def update(self) -> Update:
        try:
            metrics = read_metrics(self.path)
        except (FileNotFoundError, HpcTfError):  # not there yet, or unreadable: progress is only a nicety
            return Update(lines=(), latest=None, fraction=None)
        return self._new(metrics)

    def _new(self, metrics: RunMetrics) -> Update:
        rows = metrics.main_rows
        lines = []
        for previous, row in zip([None, *rows], rows, strict=False):
            if (row.run, row.key) not in self._shown:
                self._shown.add((row.run, row.key))
                lines.append(describe(row, previous))
        if not rows:
            return Update(lines=lines, latest=None, fraction=None)
        latest = rows[-1]
        text, done = describe(latest, rows[-2] if len(rows) > 1 else None), fraction(latest)
        steps = [r for r in metrics.rows if r.kind == "step"]
        if latest.kind == "epoch" and steps and steps[-1].time > latest.time:  # within the next epoch
            text, done = f"{text}  {position(steps[-1])}", fraction(steps[-1])
        return Update(lines=lines, latest=text, fraction=done)
