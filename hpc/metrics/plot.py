"""Figures of what training logged: one run's curves, and a campaign's tasks side by side.

Each builder returns a matplotlib ``Figure`` (tests count its lines; :func:`png` renders it). Figures
are made without pyplot: no global state, no display, the Agg renderer only. matplotlib is an extra
(``hpc-tf[plots]``) imported by the builders, never when this module is imported.

A campaign's figures (:func:`campaign_figures`):

* ``curves``: the ranked metric against the epoch, one line per task that logged it, the best task's
  line drawn thick on top; tasks that did not complete dotted;
* ``by_param``: each task's best value against each parameter, one panel per parameter;
* ``parallel``: parallel coordinates, one vertical axis per parameter and one for the metric, one
  line per task (only when the campaign varies two parameters or more).
"""

from __future__ import annotations

import importlib
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hpc.atomic import write_bytes_atomic
from hpc.errors import HpcTfError
from hpc.metrics.cells import params_text
from hpc.metrics.read import Point, RunMetrics, read_metrics
from hpc.text import shown

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from hpc.campaign.results import CampaignResults, TaskResult

MISSING = "plots need matplotlib: pip install 'hpc-tf[plots]'"
BEST = "#d62728"  # the best task, in every figure
OTHERS = "#1f77b4"
MAX_LEGEND = 20  # more tasks than this: only the best is named in the legend
DPI = 100


def _figure(width: float, height: float) -> Figure:
    try:
        figure = importlib.import_module("matplotlib.figure")
    except ImportError:
        raise HpcTfError(MISSING) from None
    made: Figure = figure.Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return made


def png(fig: Figure) -> bytes:
    """The figure as a PNG (rendered by Agg: ``Figure.savefig`` needs no pyplot and no display)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save_png(fig: Figure, path: Path) -> None:
    write_bytes_atomic(path, png(fig))


def _plain(text: str) -> str:
    """A user's text as written: matplotlib reads ``$...$`` as TeX math, and fails on math it cannot parse."""
    return text.replace("$", r"\$")


def _group(name: str) -> str:
    """The panel a metric goes in: ``val_loss`` with ``loss``, ``val_accuracy`` with ``accuracy``."""
    return name.removeprefix("val_")


def run_figure(found: RunMetrics, title: str) -> Figure:
    """One run's curves: a panel per metric (its ``val_`` twin dashed in the same panel)."""
    groups = list(dict.fromkeys(_group(name) for name in found.names))
    if not groups:
        raise HpcTfError(f"{shown(str(found.path), 300)} holds no metric values to plot")
    by_step = _by_step(found)
    columns = min(3, len(groups))
    rows = math.ceil(len(groups) / columns)
    fig = _figure(4.2 * columns, 3.2 * rows)
    fig.suptitle(_plain(title))
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    for ax, group in zip(axes, groups, strict=False):
        for name in (group, f"val_{group}"):
            points = [(_x(p, by_step), p.value) for p in found.series(name)]
            if points:
                ax.plot([x for x, _ in points], [_nan(v) for _, v in points], marker="o", markersize=3,
                        linestyle="--" if name.startswith("val_") else "-", label=_plain(name))
        ax.set_title(_plain(group))
        ax.set_xlabel("step" if by_step else "epoch")
        _whole_numbers(ax)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    for ax in axes[len(groups):]:
        ax.set_axis_off()
    return fig


def _by_step(found: RunMetrics) -> bool:
    """A custom loop that logged steps only is drawn against the step (its rows may all be in epoch 0)."""
    return bool(found.main_rows) and found.main_rows[0].kind == "step"


def _x(point: Point, by_step: bool) -> float:
    """Where a point goes: its step, or its epoch 1-based as Keras prints "Epoch 1/3"."""
    at = point.step if by_step else None if point.epoch is None else point.epoch + 1
    return math.nan if at is None else at


def _nan(value: float | None) -> float:
    return math.nan if value is None else value  # a gap in the line, where training logged NaN


def task_runs(found: CampaignResults) -> dict[int, RunMetrics]:
    """Each task's metrics, for the tasks that logged any (the results table says why the others did not)."""
    runs: dict[int, RunMetrics] = {}
    for task in found.tasks:
        try:
            runs[task.task_id] = read_metrics(Path(task.metrics_file))
        except (FileNotFoundError, HpcTfError):
            continue
    return runs


def _label(task: TaskResult, best: TaskResult | None) -> str:
    said = _plain(f"task {task.task_id}: {params_text(task.params)}")
    if task is best:
        return f"{said} (best)"
    return said if task.state == "COMPLETED" else f"{said} ({task.state})"


def curves_figure(found: CampaignResults, runs: Mapping[int, RunMetrics]) -> Figure:
    """The metric against the epoch, one line per task that logged it; the best thick, on top."""
    best = found.best
    fig = _figure(10.0, 5.0)
    ax = fig.subplots()
    drawn = [(t, runs[t.task_id].series(found.metric)) for t in found.tasks if t.task_id in runs]
    drawn = [(t, points) for t, points in drawn if points]
    by_step = any(_by_step(runs[t.task_id]) for t, _ in drawn)
    for task, points in drawn:
        is_best = task is best
        ax.plot([_x(p, by_step) for p in points], [_nan(p.value) for p in points],
                color=BEST if is_best else OTHERS, alpha=1.0 if is_best else 0.45, linewidth=3.0 if is_best else 1.2,
                linestyle="-" if task.state == "COMPLETED" else ":", marker="o", markersize=4 if is_best else 2.5,
                zorder=3 if is_best else 2, label=_label(task, best))
    ax.set_title(f"{_plain(found.id)}: {_plain(found.metric)} per {'step' if by_step else 'epoch'} "
                 f"({'lower' if found.mode == 'min' else 'higher'} is better)")
    ax.set_xlabel("step" if by_step else "epoch")
    ax.set_ylabel(_plain(found.metric))
    ax.grid(alpha=0.3)
    _whole_numbers(ax)
    handles, labels = ax.get_legend_handles_labels()
    if len(handles) > MAX_LEGEND:  # a legend taller than the plot says nothing: name the best only
        keep = [i for i, (task, _) in enumerate(drawn) if task is best]
        handles, labels = [handles[i] for i in keep], [labels[i] for i in keep]
    if handles:
        ax.legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        _nothing(ax, f"no task logged {found.metric}")
    return fig


def _whole_numbers(ax: Axes) -> None:
    """Epochs and steps are counted: no tick at 1.5."""
    ax.xaxis.set_major_locator(importlib.import_module("matplotlib.ticker").MaxNLocator(integer=True))


def _nothing(ax: Axes, said: str) -> None:
    ax.text(0.5, 0.5, _plain(said), ha="center", va="center", transform=ax.transAxes)


def _param_names(found: CampaignResults) -> list[str]:
    return list(dict.fromkeys(name for t in found.tasks for name in t.params))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _scale(values: Sequence[object]) -> tuple[Callable[[object], float], list[tuple[float, str]], bool]:
    """Where each value of one parameter goes on [0, 1], the ticks to name, and whether it is numeric.

    Numbers keep their order and spacing (logarithmic when positive and spread over two decades or more,
    as learning rates are); anything else is a category, in the order the campaign lists it."""
    distinct = list(dict.fromkeys(values))
    if distinct and all(_is_number(v) for v in distinct):
        numbers = sorted(float(v) for v in distinct)  # type: ignore[arg-type]
        log = numbers[0] > 0 and numbers[-1] / numbers[0] >= 100
        low, high = (math.log10(numbers[0]), math.log10(numbers[-1])) if log else (numbers[0], numbers[-1])

        def numeric(value: object) -> float:
            x = math.log10(float(value)) if log else float(value)  # type: ignore[arg-type]
            return 0.5 if high == low else (x - low) / (high - low)

        ticks = [(numeric(v), f"{v:g}") for v in numbers] if len(numbers) <= 8 else \
            [(numeric(v), f"{v:g}") for v in (numbers[0], numbers[-1])]
        return numeric, ticks, True
    where = {str(v): i for i, v in enumerate(dict.fromkeys(str(v) for v in distinct))}

    def category(value: object) -> float:
        return 0.5 if len(where) == 1 else where[str(value)] / (len(where) - 1)

    return category, [(category(name), _plain(name)) for name in where], False


def by_param_figure(found: CampaignResults) -> Figure:
    """Each task's best value against each parameter: one panel per parameter; the best task ringed."""
    names = _param_names(found) or ["task"]
    valued = [t for t in found.tasks if t.best is not None]
    best = found.best
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig = _figure(4.2 * columns, 3.4 * rows)
    fig.suptitle(f"{_plain(found.id)}: best {_plain(found.metric)} of each task against each parameter")
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    for ax, name in zip(axes, names, strict=False):
        value_of: Callable[[TaskResult], object] = (lambda t: t.task_id) if name == "task" else \
            (lambda t, name=name: t.params.get(name))  # type: ignore[misc]
        where, ticks, numeric = _scale([value_of(t) for t in valued])
        raw = [(t, value_of(t)) for t in valued]
        xs = [float(v) if numeric else where(v) for _, v in raw]  # type: ignore[arg-type]
        done = [i for i, (t, _) in enumerate(raw) if t.state == "COMPLETED"]
        other = [i for i, (t, _) in enumerate(raw) if t.state != "COMPLETED"]
        ax.scatter([xs[i] for i in done], [raw[i][0].best for i in done], color=OTHERS, label="completed", zorder=2)
        if other:
            ax.scatter([xs[i] for i in other], [raw[i][0].best for i in other], facecolors="none",
                       edgecolors=OTHERS, label="not completed", zorder=2)
        if best is not None:
            ax.scatter([xs[i] for i, (t, _) in enumerate(raw) if t is best], [best.best], s=160, facecolors="none",
                       edgecolors=BEST, linewidths=2.5, label=f"best (task {best.task_id})", zorder=3)
        if numeric and min(xs, default=1.0) > 0 and max(xs, default=1.0) / min(xs, default=1.0) >= 100:
            ax.set_xscale("log")
        if numeric and len(ticks) == len(set(xs)):  # few values: a tick at each, as the campaign lists them
            ax.set_xticks(sorted(set(xs)), [label for _, label in ticks])
            ax.minorticks_off()
        elif not numeric:
            ax.set_xticks([x for x, _ in ticks], [label for _, label in ticks])
        ax.set_xlabel(_plain(name))
        ax.set_ylabel(f"best {_plain(found.metric)}")
        ax.grid(alpha=0.3)
        if not valued:
            _nothing(ax, f"no task logged {found.metric}")
    for ax in axes[len(names):]:
        ax.set_axis_off()
    if valued:  # one legend for every panel, under them
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize="small")
    return fig


def parallel_figure(found: CampaignResults) -> Figure | None:
    """Parallel coordinates: an axis per parameter and one for the metric, a line per task that has a
    value, coloured by it (the best red and thick, tasks that did not complete dotted); None when the
    campaign has fewer than two parameters."""
    names = _param_names(found)
    if len(names) < 2:
        return None
    valued = [t for t in found.tasks if t.best is not None]
    best = found.best
    fig = _figure(max(6.0, 2.2 * (len(names) + 1)), 5.0)
    ax = fig.subplots()
    ax.set_title(f"{_plain(found.id)}\nparameters and best {_plain(found.metric)} of each task")
    columns: list[tuple[str, Callable[[object], float], list[tuple[float, str]]]] = []
    for name in names:
        where, ticks, _ = _scale([t.params.get(name) for t in valued])
        columns.append((name, where, ticks))
    scores = [t.best for t in valued if t.best is not None]
    low, high = min(scores, default=0.0), max(scores, default=1.0)

    def score(value: object) -> float:
        return 0.5 if high == low else (float(value) - low) / (high - low)  # type: ignore[arg-type]

    metric_ticks = [(score(v), f"{v:.4g}") for v in (low, (low + high) / 2, high)] if scores else []
    columns.append((found.metric, score, metric_ticks))
    colours = importlib.import_module("matplotlib").colormaps["viridis_r" if found.mode == "max" else "viridis"]
    for task in valued:
        ys = [where(task.params.get(name)) for name, where, _ in columns[:-1]] + [score(task.best)]
        is_best = task is best
        ax.plot(range(len(columns)), ys, color=BEST if is_best else colours(score(task.best)),
                linewidth=3.5 if is_best else 1.5, alpha=1.0 if is_best else 0.8, zorder=3 if is_best else 2,
                linestyle="-" if task.state == "COMPLETED" else ":",
                label=_label(task, best) if is_best else None)
    ax.vlines(range(len(columns)), -0.04, 1.04, colors="black", linewidth=1.0, zorder=1)
    for x, (_, _, ticks) in enumerate(columns):
        for y, label in ticks:
            ax.text(x + 0.03, y, label, fontsize="small", va="center",
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.set_xticks(range(len(columns)), [_plain(name) for name, _, _ in columns])
    ax.set_xlim(-0.2, len(columns) - 0.6)
    ax.set_ylim(-0.08, 1.08)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    if best is not None:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(0.0, -0.08))
    elif not valued:
        _nothing(ax, f"no task logged {found.metric}")
    return fig


def campaign_figures(found: CampaignResults) -> dict[str, Figure]:
    """Every figure of a campaign by file stem (``curves``, ``by_param``, ``parallel``), in reading order;
    none while no task has logged a value of the metric."""
    if all(t.best is None for t in found.tasks):
        return {}
    figures = {"curves": curves_figure(found, task_runs(found)), "by_param": by_param_figure(found)}
    parallel = parallel_figure(found)
    if parallel is not None:
        figures["parallel"] = parallel
    return figures
