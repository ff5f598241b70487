"""``hpc-tf usage``: GPU-hours from accounting beside the GPU-minute budget."""

from __future__ import annotations

import os

import typer
from rich.table import Table
from rich.text import Text

from hpc.cli.console import err, out
from hpc.cli.options import JsonOpt, SetOpt, SiteOpt, print_json
from hpc.site.load import load_site
from hpc.units import format_duration
from hpc.usage import NOT_IN_A_CAMPAIGN, UsageReport, grouping, site_usage


def usage(
    since: str = typer.Option("30d", "--since", metavar="SPAN|DATE",
                              help="From when: 30d, 12h, 2w back from now, or a date (2026-11-01)."),
    by: str = typer.Option("job", "--by", metavar="job|campaign|account", help="One row per job, campaign or account."),
    top: int = typer.Option(20, "--top", min=0, metavar="N",
                            help="Show the N rows that cost most (0: every row); the total counts them all."),
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """GPU-hours your jobs held (allocated GPUs × elapsed, from accounting) next to your GPU-minute budget."""
    grouped = grouping(by)
    config = load_site(site, set_ or ()).config
    report = site_usage(config, since, grouped, os.environ)
    for warning in report.warnings:
        err().print(Text.assemble(("warning:", "yellow"), f" {warning}"), soft_wrap=True)
    if as_json:
        print_json(report.as_dict())
    else:
        render(report, top)


def hours(gpu_seconds: int) -> str:
    return f"{gpu_seconds / 3600:.2f}"


def render(report: UsageReport, top: int = 0) -> None:
    since = report.as_dict()["since"]
    out().print(f"GPU-hours of {report.user} since {since} ({report.launcher} launcher), by {report.by}", style="bold")
    columns = ("job", "run / campaign", "account", "state", "GPUs") if report.by == "job" else (report.by, "jobs")
    table = Table(*columns, "elapsed", "GPU-hours", box=None)
    shown = report.rows[:top] if top else report.rows  # most GPU-hours first
    for row in shown:
        cells = ((row.key, row.label, row.account or "-", row.state, str(row.gpus)) if report.by == "job"
                 else (row.key if row.key != NOT_IN_A_CAMPAIGN else "(not in a campaign)", str(row.allocations)))
        table.add_row(*cells, format_duration(row.elapsed_s), hours(row.gpu_seconds))
    if report.rows:
        out().print(table)
    if len(shown) < len(report.rows):
        rest = report.rows[len(shown):]
        spent = hours(sum(r.gpu_seconds for r in rest))
        out().print(f"… {len(rest)} more {report.by}(s) with {spent} GPU-hours in all (--top 0 shows every row)")
    out().print(f"total: {hours(report.gpu_seconds)} GPU-hours ({report.gpu_seconds // 60} GPU-minutes) "
                f"in {len(report.jobs)} allocation(s)")
    if report.budgets is None:
        out().print(f"the {report.launcher} launcher has no GPU quota: no budget to compare with")
    elif not report.budgets:
        out().print("no GPU-minute budget (GrpTRESMins) on your accounts or QOS")
    for budget in report.budgets or ():
        used = "" if budget.used_minutes is None else (
            f": {budget.used_minutes} used, {max(budget.minutes - budget.used_minutes, 0)} left "
            "(Slurm's count: every user of it, decayed over time)")
        out().print(f"budget: {budget.words}{used}")
