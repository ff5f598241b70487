"""Side-by-side figures: interleaved repetitions, median and min–max, ratios, a table and JSON.

Every benchmark measures a *subject* (what hpc-tf does) next to a *baseline* (the bare tool) in the
same run, alternating the order of the variants from one repetition to the next, so that a noisy,
shared machine slows both alike. A figure is reported as medians with min–max and as the ratio and
the difference of the medians; paired differences (subject minus baseline of the same repetition)
are kept too, since they cancel most of the drift between repetitions.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def summary(values: Sequence[float]) -> dict[str, float | int]:
    """Median, min, max and count of ``values`` (empty: count 0 only)."""
    if not values:
        return {"n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def interleave(reps: int, variants: Mapping[str, Callable[[int], float]], warmup: int = 0) -> dict[str, list[float]]:
    """Run each variant once per repetition, reversing the order every other repetition (ABC, CBA, …).

    ``variants[name](rep)`` returns one measurement. ``warmup`` extra leading repetitions are run and
    dropped (first calls pay for cold caches: page cache, Python bytecode, the controller's).
    """
    names = list(variants)
    results: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(-warmup, reps):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            value = variants[name](rep)
            if rep >= 0:
                results[name].append(value)
    return results


@dataclass
class Figure:
    """One row of a results table: subject against baseline (or a single measured quantity)."""

    name: str
    unit: str
    subject_label: str
    subject: list[float]
    baseline_label: str | None = None
    baseline: list[float] | None = None
    target: str | None = None  # e.g. "< 300 ms"
    met: bool | None = None  # whether the target holds (None: no target, or not decidable)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.baseline or not self.subject:
            return None
        base = statistics.median(self.baseline)
        return statistics.median(self.subject) / base if base else None

    @property
    def paired_diffs(self) -> list[float]:
        if not self.baseline:
            return []
        return [a - b for a, b in zip(self.subject, self.baseline, strict=True)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "unit": self.unit, "subject_label": self.subject_label,
            "subject": summary(self.subject), "subject_values": self.subject,
            "baseline_label": self.baseline_label,
            "baseline": summary(self.baseline) if self.baseline is not None else None,
            "baseline_values": self.baseline,
            "ratio": self.ratio, "paired_diff": summary(self.paired_diffs) if self.baseline else None,
            "target": self.target, "met": self.met, "note": self.note,
        }


@dataclass
class Result:
    """Everything one benchmark measured."""

    benchmark: str
    quick: bool
    figures: list[Figure] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # counts, checks, environment details
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark, "quick": self.quick,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "figures": [f.as_dict() for f in self.figures], "facts": self.facts, "notes": self.notes,
        }


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    magnitude = abs(value)
    text = f"{value:.0f}" if magnitude >= 100 else f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def cell(values: Sequence[float] | None, unit: str) -> str:
    if not values:
        return "-"
    s = summary(values)
    return f"{fmt(s['median'], unit)} [{fmt(s['min'])}–{fmt(s['max'])}] n={s['n']}"


def table(result: Result) -> str:
    """The figures as a plain-text table (medians with [min–max])."""
    header = ("figure", "hpc-tf (subject)", "baseline", "ratio", "Δ paired median", "target")
    rows = [header]
    for f in result.figures:
        diffs = f.paired_diffs
        target = f.target or ""
        if f.met is not None:
            target += " MET" if f.met else " MISSED"
        elif f.note and target:
            target += f" not decided: {f.note}"
        rows.append((
            f.name,
            f"{f.subject_label}: {cell(f.subject, f.unit)}",
            f"{f.baseline_label}: {cell(f.baseline, f.unit)}" if f.baseline is not None else "",
            fmt(f.ratio, "x") if f.ratio is not None else "",
            fmt(statistics.median(diffs), f.unit) if diffs else "",
            target.strip(),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"== {result.benchmark}{' (quick)' if result.quick else ''}"
    extra = [f"   {key}: {value}" for key, value in result.facts.items() if not isinstance(value, (dict, list))]
    notes = [f"   note: {note}" for note in result.notes]
    return "\n".join([title, *lines, *extra, *notes])


def machine() -> dict[str, Any]:
    """What the numbers were measured on (no host names)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.system(),
            "machine": platform.machine(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def write_json(path: Path, results: Sequence[Result]) -> None:
    """Write all results to ``path`` (replaced whole: written to a temp name, then renamed)."""
    data = {"machine": machine(), "results": [r.as_dict() for r in results]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
