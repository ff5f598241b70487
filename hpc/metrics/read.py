"""Reading a run's ``metrics.jsonl``: tolerant of a crash, and of a requeue that trained epochs again.

The file (written by the chief task, hpc/runtime) is JSON Lines, append-only, one row per line::

    {"v": 1, "kind": "epoch", "epoch": 0, "step": null, "epochs": 5, "steps": null,
     "values": {"loss": 0.41, "val_loss": 0.5}, "time": 1764938400.5, "attempt": 0, "job": "4711"}

A crash leaves at most a partial last line (no newline yet): it is not a row. A line that is not a
row of this format (damaged, or from a newer hpc-tf) is skipped and counted, never fatal.

A requeued run resumes from its checkpoint and logs the epochs after it again, with a higher
``attempt``. What the run really ended with (:func:`dedupe`): for each (kind, epoch, step) the row of
the latest attempt (the later line on a tie); and rows of an earlier attempt at or past the first
position a later attempt logged are lost work, dropped.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import stat
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hpc.errors import HpcTfError
from hpc.text import shown

FORMAT = 1
LIMIT = 256 << 20  # a row every step of a long run stays far below it; /dev/zero does not fill memory
Kind = Literal["epoch", "step"]
Mode = Literal["min", "max"]
_MAX_WORDS = ("acc", "auc", "precision", "recall")  # metrics where higher is better


@dataclass(frozen=True)
class Row:
    kind: Kind
    epoch: int | None  # 0-based, as Keras counts (History index)
    step: int | None  # the global step, when known
    epochs: int | None  # planned totals, when known
    steps: int | None
    values: Mapping[str, float | None]  # None: the value was NaN or infinite
    time: float  # unix time the row was written
    attempt: int  # requeue count
    job: str

    @property
    def key(self) -> tuple[str, int | None, int | None]:
        return (self.kind, self.epoch, self.step)

    @property
    def run(self) -> tuple[str, int]:
        """Which attempt of which job wrote the row."""
        return (self.job, self.attempt)

    @property
    def position(self) -> int:
        """Where in training the row is, for comparing attempts: the step if known, else the epoch."""
        if self.kind == "step" and self.step is not None:
            return self.step
        return self.epoch if self.epoch is not None else -1


def _int_or_none(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("not a count")
    return value


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("not a number")
    return float(value) if math.isfinite(value) else None


def parse_row(line: str) -> Row | None:
    """The row a line holds, or None if it holds none of this format."""
    try:
        doc = json.loads(line)
        if not isinstance(doc, dict) or doc.get("v") != FORMAT or doc.get("kind") not in ("epoch", "step"):
            return None
        values = doc["values"]
        if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
            return None
        when, attempt, job = doc["time"], doc["attempt"], doc["job"]
        if not isinstance(job, str) or isinstance(attempt, bool) or not isinstance(attempt, int):
            return None
        time = _number(when)
        if time is None:
            return None
        return Row(kind=doc["kind"], epoch=_int_or_none(doc["epoch"]), step=_int_or_none(doc["step"]),
                   epochs=_int_or_none(doc["epochs"]), steps=_int_or_none(doc["steps"]),
                   values={k: _number(v) for k, v in values.items()}, time=time, attempt=attempt, job=job)
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def read_lines(path: Path) -> tuple[list[str], int]:
    """The complete lines of ``path`` (a partial last line left out), and how many were not UTF-8.

    FileNotFoundError passes through; any other problem is one HpcTfError naming the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise HpcTfError(f"cannot read {shown(str(path), 300)}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise HpcTfError(f"{shown(str(path), 300)} is not a regular file", hint="is it the right path?")
        data = fh.read(LIMIT + 1)
    if len(data) > LIMIT:
        raise HpcTfError(f"{shown(str(path), 300)} is larger than {LIMIT >> 20} MiB, the most hpc-tf reads",
                         hint="log every N steps less often (or epochs only)")
    lines, undecodable = [], 0
    for raw in data.split(b"\n")[:-1]:  # the last piece has no newline: partial, or empty
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            undecodable += 1
    return lines, undecodable


def dedupe(rows: Iterable[Row]) -> list[Row]:
    """The rows a run ended with, in training order (see the module docstring).

    Attempts are ranked by where they first appear in the file: the file only grows, so that is the
    order they ran in. Within one job it is the attempt number's order (the contract's "highest attempt
    wins"); it also puts a campaign task resubmitted as a new job (its attempt counts from 0 again) after
    the job that failed, which the attempt number alone would not."""
    rows = list(rows)
    rank: dict[tuple[str, int], int] = {}  # (job, attempt) → the order it ran in
    for row in rows:
        rank.setdefault(row.run, len(rank))
    first: dict[tuple[str, int], int] = {}  # (kind, rank) → the first position that attempt logged
    for row in rows:
        where = (row.kind, rank[row.run])
        first[where] = min(first.get(where, row.position), row.position)

    def lost(row: Row) -> bool:  # a later attempt resumed at or before it: the work was redone
        own = rank[row.run]
        return any(kind == row.kind and later > own and start <= row.position for (kind, later), start in first.items())

    kept: dict[tuple[str, int | None, int | None], Row] = {}
    for row in rows:
        if not lost(row):
            kept[row.key] = row  # the later line of the same attempt wins
    return sorted(kept.values(), key=lambda r: (r.kind, r.position))


def default_mode(metric: str) -> Mode:
    """``max`` for accuracy-like metrics (acc, auc, precision, recall in the name), else ``min``."""
    name = metric.lower()
    return "max" if any(word in name for word in _MAX_WORDS) else "min"


@dataclass(frozen=True)
class Point:
    epoch: int | None
    step: int | None
    value: float | None


@dataclass(frozen=True)
class Best:
    value: float
    epoch: int | None
    step: int | None


@dataclass(frozen=True)
class RunMetrics:
    """What one run logged, after :func:`dedupe`."""

    path: Path
    rows: Sequence[Row]  # epoch rows, then step rows, each in training order
    skipped: int = 0  # lines that were no row (damaged, or of a newer format)
    attempts: int = 0  # how many attempts logged anything (requeues + 1, and resubmissions)
    wall_s: float | None = None  # see :func:`wall_seconds`
    names: Sequence[str] = field(default_factory=tuple)  # every metric name, in the order first logged

    @property
    def epoch_rows(self) -> list[Row]:
        return [r for r in self.rows if r.kind == "epoch"]

    @property
    def main_rows(self) -> list[Row]:
        """The epoch rows, or the step rows of a run that logged only steps (a custom loop)."""
        return self.epoch_rows or [r for r in self.rows if r.kind == "step"]

    @property
    def epochs(self) -> int:
        return len(self.epoch_rows)

    @property
    def epochs_planned(self) -> int | None:
        planned = [r.epochs for r in self.rows if r.epochs is not None]
        return planned[-1] if planned else None

    def series(self, metric: str) -> list[Point]:
        return [Point(r.epoch, r.step, r.values.get(metric)) for r in self.main_rows if metric in r.values]

    def final(self, metric: str) -> float | None:
        """The value at the last row that logged ``metric`` (None if it was NaN there)."""
        points = self.series(metric)
        return points[-1].value if points else None

    def best(self, metric: str, mode: Mode) -> Best | None:
        finite = [Best(p.value, p.epoch, p.step) for p in self.series(metric) if p.value is not None]
        if not finite:
            return None
        pick = min if mode == "min" else max
        return pick(finite, key=lambda b: b.value)  # the first on a tie

    def as_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "epochs": self.epochs, "epochs_planned": self.epochs_planned,
                "attempts": self.attempts, "wall_s": self.wall_s, "skipped_lines": self.skipped,
                "metrics": list(self.names),
                "rows": [{"kind": r.kind, "epoch": r.epoch, "step": r.step, "values": dict(r.values), "time": r.time,
                          "attempt": r.attempt, "job": r.job} for r in self.rows]}


def wall_seconds(rows: Sequence[Row]) -> float | None:
    """Training time: per attempt, the span of its epoch rows plus one typical epoch (the first epoch
    has no row before it; the median time between consecutive epochs stands in). Time between attempts,
    waiting in the queue, is not counted. None when no two consecutive epochs give a typical epoch."""
    by_attempt: dict[tuple[str, int], list[float]] = {}
    for row in rows:
        if row.kind == "epoch":
            by_attempt.setdefault(row.run, []).append(row.time)
    gaps = [later - earlier for times in by_attempt.values()
            for earlier, later in itertools.pairwise(sorted(times))]
    if not gaps:
        return None
    typical = statistics.median(gaps)
    return sum(max(times) - min(times) + typical for times in by_attempt.values())


def read_metrics(path: Path) -> RunMetrics:
    """The run's metrics from ``path``; FileNotFoundError when it logged none (yet)."""
    lines, skipped = read_lines(path)
    rows: list[Row] = []
    for line in lines:
        row = parse_row(line)
        if row is None:
            skipped += 1 if line.strip() else 0
        else:
            rows.append(row)
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.values))
    return RunMetrics(path=path, rows=dedupe(rows), skipped=skipped, attempts=len({r.run for r in rows}),
                      wall_s=wall_seconds(rows), names=tuple(names))
