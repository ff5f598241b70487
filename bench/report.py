"""``python -m bench.report RESULTS.json ...``: the results as Markdown tables (for BENCHMARKS.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    magnitude = abs(value)
    text = f"{value:.0f}" if magnitude >= 100 else f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def _cell(stats: dict[str, Any] | None, unit: str) -> str:
    if not stats or not stats.get("n"):
        return ""
    return f"{_num(stats['median'], unit)} [{_num(stats['min'])}–{_num(stats['max'])}]"


def markdown(result: dict[str, Any]) -> str:
    quick = " (quick)" if result["quick"] else ""
    lines = [f"#### {result['benchmark']}{quick}", "",
             "| figure | hpc-tf: median [min–max] | baseline: median [min–max] | ratio | paired Δ (median) | n "
             "| target |",
             "|---|---|---|---|---|---|---|"]
    for f in result["figures"]:
        base = f"{f['baseline_label']}: {_cell(f['baseline'], f['unit'])}" if f["baseline"] else ""
        ratio = f"{f['ratio']:.2f}×" if f["ratio"] is not None else ""
        diff = _num(f["paired_diff"]["median"], f["unit"]) if f["paired_diff"] and f["paired_diff"].get("n") else ""
        target = f["target"] or ""
        if f["met"] is not None:
            target += " — **met**" if f["met"] else " — **missed**"
        elif f.get("note") and target:
            target += f" — not decided: {f['note']}"
        lines.append(f"| {f['name'].strip()} | {f['subject_label']}: {_cell(f['subject'], f['unit'])} | {base} | "
                     f"{ratio} | {diff} | {f['subject']['n']} | {target} |")
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        for result in json.loads(Path(path).read_text())["results"]:
            print(markdown(result) + "\n")


if __name__ == "__main__":
    main()
