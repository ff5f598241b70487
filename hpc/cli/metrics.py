"""``hpc-tf metrics RUN|JOBID``: what one run's training logged, epoch by epoch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from hpc.cli.console import err, out
from hpc.cli.options import JsonOpt, SetOpt, SiteOpt, print_json
from hpc.errors import HpcTfError
from hpc.metrics.cells import number, of_total, wall
from hpc.metrics.find import run_metrics
from hpc.metrics.read import RunMetrics
from hpc.paths import runs_root
from hpc.site.load import load_site

FIRST = ("loss", "val_loss")  # Keras prints these first; then the rest as logged


def _table(found: RunMetrics) -> Table:
    names = [n for n in FIRST if n in found.names] + [n for n in found.names if n not in FIRST]
    rows = found.main_rows
    by_step = bool(rows) and rows[0].kind == "step"
    requeued = found.attempts > 1
    table = Table("step" if by_step else "epoch", *names, "time", *(["attempt"] if requeued else []), box=None)
    previous: dict[tuple[str, int], float] = {}  # (job, attempt) → the time of its previous row
    for row in rows:
        since = row.time - previous[row.run] if row.run in previous else None
        previous[row.run] = row.time
        where = str(row.step) if by_step else of_total(row.epoch, row.epochs)
        table.add_row(where, *(number(row.values.get(n)) for n in names),
                      "-" if since is None else f"{since:.1f}s", *([str(row.attempt)] if requeued else []))
    return table


def metrics(
    target: Annotated[str, typer.Argument(help="Run directory, job id, a campaign task's output directory, or a "
                                               "metrics.jsonl file.", show_default=False)],
    as_json: JsonOpt = False,
    plot: Annotated[bool, typer.Option("--plot", help="Also draw the curves into a PNG (see --out).")] = False,
    out_file: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="FILE", help="The PNG --plot writes (default: metrics.png by metrics.jsonl).")] = None,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """The metrics a run's training logged (loss, compiled metrics, val_*, learning rate), one row per epoch."""
    if out_file is not None and not plot:
        raise HpcTfError("--out names the PNG of --plot", hint=f"hpc-tf metrics {target} --plot --out FILE")
    found = run_metrics(target, runs_root(load_site(site, set_ or ()).config.runs_dir, os.environ))
    if plot:
        from hpc.metrics.plot import run_figure, save_png

        where = out_file if out_file is not None else found.path.with_name("metrics.png")
        save_png(run_figure(found, f"{target}: {found.epochs} epoch(s)"), where)
        err().print(f"curves written to {where}")
    if as_json:
        print_json(found.as_dict())
        return
    out().print(_table(found))
    planned = f" of {found.epochs_planned}" if found.epochs_planned is not None else ""
    said = [f"{found.epochs} epoch(s){planned}", f"training time {wall(found.wall_s)}"]
    if found.attempts > 1:
        said.append(f"{found.attempts} attempts (requeued; epochs trained again are shown once)")
    if found.skipped:
        said.append(f"{found.skipped} damaged line(s) skipped")
    err().print(Text("; ".join(said)))
