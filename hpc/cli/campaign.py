"""``hpc-tf campaign run|status|results|resubmit|cancel``: sweeps as job arrays, pipelines with dependencies."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hpc.backends import Backend
from hpc.cli.console import err, out
from hpc.cli.options import JsonOpt, SetOpt, SiteOpt, plain_typer, print_json
from hpc.errors import HpcTfError
from hpc.paths import runs_root
from hpc.site.load import load_site
from hpc.text import shown

if TYPE_CHECKING:
    from hpc.campaign.paths import CampaignPaths
    from hpc.campaign.plan import CampaignPlan
    from hpc.campaign.results import CampaignResults
    from hpc.campaign.status import CampaignView
    from hpc.metrics.progress import Update

# hpc.campaign (its models take ~0.2 s to build) is imported by the campaign commands only, so that
# hpc-tf launch/status/logs do not pay for it

campaign_app = plain_typer(help="Sweeps as job arrays and pipelines with dependencies.", no_args_is_help=True)

CampaignArg = Annotated[Path, typer.Argument(help="The campaign file (campaign.yaml).", show_default=False)]
TargetArg = Annotated[str, typer.Argument(help="Campaign directory (printed by run), id or name.",
                                          show_default=False)]


def _backend(paths: CampaignPaths, site: str | None, set_: list[str] | None) -> Backend:
    """The launcher that runs the campaign (its manifest says which); Slurm as the site's ``scheduler:`` reaches it."""
    from hpc.campaign import api

    return api.campaign_backend(paths, load_site(site, set_ or ()).config.scheduler)


def _target(target: str, site: str | None, set_: list[str] | None) -> CampaignPaths:
    from hpc.campaign import api

    return api.find_campaign(target, runs_root(load_site(site, set_ or ()).config.runs_dir, os.environ))


def _plan_text(plan: CampaignPlan) -> str:
    lines = [f"campaign {plan.loaded.spec.name}: {len(plan.tasks)} task(s), arrays of at most {plan.chunk_size} "
             f"(MaxArraySize {plan.max_array_size if plan.max_array_size is not None else 'not read'})"]
    for stage in plan.stages:
        job = stage.job
        kind = "array" if stage.per_task else "job"
        after = ", ".join(f"{kind_} {up}" for up, kind_ in stage.after) or "nothing"
        throttle = f"{stage.throttle.limit} at once" if stage.throttle.limit else "no throttle"
        lines.append(f"  {stage.name}: {kind} on partition {job.partition or '(default)'}, {job.nodes} node(s), "
                     f"{job.total_gpus} GPU(s) each; {throttle} ({stage.throttle.why}); after {after}")
    lines.append(f"  {len(plan.submissions)} submission(s); directory {plan.paths.root}")
    return "\n".join(lines)


@campaign_app.command("run", short_help="Expand the sweep and submit one array per stage.")
def run(
    campaign: CampaignArg,
    site: SiteOpt = None,
    set_: SetOpt = None,
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Print the plan and the first tasks' commands; submit nothing."),
    throttle: int | None = typer.Option(None, "--throttle", min=1, metavar="N",
                                        help="Array tasks running at once, every stage."),
    gpu_limit: int | None = typer.Option(None, "--gpu-limit", min=0, metavar="GPUS",
                                         help="GPUs the campaign may hold at once (default: the account's quota)."),
    chunk_size: int | None = typer.Option(None, "--chunk-size", min=1, metavar="N",
                                          help="Tasks per array (default and maximum: the cluster's MaxArraySize)."),
    as_json: JsonOpt = False,
) -> None:
    """Expand the parameters, write the campaign directory and submit one array per stage and chunk."""
    from hpc.campaign import api
    from hpc.quota import notices

    ran = api.run_file(campaign, site, set_ or (), dry_run=dry_run, gpu_limit=gpu_limit, chunk_size=chunk_size,
                       throttle=throttle)
    plan, submitted = ran.plan, ran.submitted
    if ran.offline:
        said = (f"Slurm did not answer ({ran.offline}): this dry run assumed Slurm's default MaxArraySize and "
                "knows no GPU quota; the real run reads both")
        err().print(Text.assemble(("warning: ", "yellow"), said))
    if submitted is None:
        first = [(task.id, stage.name, plan.task_command(stage.name, task))
                 for task in plan.tasks[:3] for stage in plan.stages if stage.per_task]
        if as_json:
            print_json({"dry_run": True, "directory": str(plan.paths.root), "tasks": len(plan.tasks),
                        "first_commands": [{"task": t, "stage": s, "command": c} for t, s, c in first]})
        else:
            for task_id, stage_name, command in first:
                typer.echo(f"task {task_id} {stage_name}: {json.dumps(command)}")
        err().print(Text.assemble(("dry run", "bold"), f": {_plan_text(plan)}\nnothing written or submitted"))
        return
    for verdict in submitted.quota:
        for sentence, is_warning in notices(verdict):
            err().print(Text.assemble(("warning: ", "yellow") if is_warning else "", sentence))
    if as_json:
        print_json({"campaign": submitted.manifest.id, "directory": str(submitted.paths.root),
                    "job_ids": list(submitted.job_ids)})
    else:
        typer.echo(str(submitted.paths.root))
    err().print(f"{_plan_text(plan)}\nsubmitted job(s) {', '.join(submitted.job_ids)}\n"
              f"follow it: hpc-tf campaign status {submitted.paths.root}")


MAX_ROWS = 20


def _params(params: Mapping[str, object]) -> str:
    from hpc.metrics.cells import params_text

    return params_text(params)


def _more(count: int) -> list[RenderableType]:
    return [Text(f"… and {count - MAX_ROWS} more (all of them: --json)")] if count > MAX_ROWS else []


def view_parts(view: CampaignView, progress: Mapping[tuple[str, int | None], Update] | None = None
               ) -> list[RenderableType]:
    """The campaign's state as printed on stdout; with ``progress`` (by stage and task), the running
    units too, each with where its training is (``campaign status --watch``)."""
    parts: list[RenderableType] = [Text.assemble("campaign ", (view.id, "bold"),
                                                 f" ({view.tasks} task(s))  {view.root}")]
    if view.error:
        parts.append(Text(view.error, style="red"))
    states = sorted({label for counts in view.counts.values() for label in counts})
    table = Table("stage", "partition", "GPUs/task", "throttle", "jobs", *states, box=None)
    for stage in view.stages:
        name = str(stage["name"])
        counts = view.counts.get(name, {})
        jobs = stage["jobs"]
        table.add_row(name, str(stage["partition"] or "-"), str(stage["gpus"]), str(stage["throttle"] or "-"),
                      ",".join(jobs) if isinstance(jobs, list) else "", *(str(counts.get(s, "")) for s in states))
    parts.append(table)
    if progress is not None and view.running:
        parts.append(Text("running", style="bold"))
        running = Table("stage", "task", "params", "job", "", "progress", box=None)
        for r in view.running[:MAX_ROWS]:
            update = progress.get((r.stage, r.task_id))
            done = update.fraction if update is not None else None
            running.add_row(r.stage, "-" if r.task_id is None else str(r.task_id), _params(r.params), r.job_id or "-",
                            "" if done is None else ProgressBar(total=1.0, completed=done, width=20),
                            update.latest if update is not None and update.latest else "no metrics yet")
        parts += [running, *_more(len(view.running))]
    if view.failures:
        parts.append(Text("failed", style="bold"))
        failed = Table("stage", "task", "params", "job", "state", "exit", "why", "log", box=None)
        for f in view.failures[:MAX_ROWS]:
            failed.add_row(f.stage, "-" if f.task_id is None else str(f.task_id), _params(f.params), f.job_id or "-",
                           f.state, "-" if f.exit_code is None else str(f.exit_code), f.explanation, f.log or "-")
        parts += [failed, *_more(len(view.failures))]
    if view.blocked:
        parts.append(Text.assemble(("blocked", "bold"), " (Slurm leaves these pending forever)"))
        blocked = Table("stage", "task", "params", "job", "why", box=None)
        for b in view.blocked[:MAX_ROWS]:
            blocked.add_row(b.stage, "-" if b.task_id is None else str(b.task_id), _params(b.params), b.job_id or "-",
                            b.explanation)
        parts += [blocked, *_more(len(view.blocked))]
        parts.append(Text("clear them with:  " + "\n             or:  ".join(view.clear_blocked)))
    return parts


def age_note(view: CampaignView, *, watching: bool = False) -> str:
    age = "" if view.age_s is None else f"states as of {view.age_s:.0f} s ago"
    if watching:
        return f"{age}; Ctrl-C stops watching, the campaign goes on".lstrip("; ")
    if not view.queried and view.age_s is not None:
        age += f"; next query in {view.next_query_s:.0f} s (--refresh asks now)"
    return age


def _print_view(view: CampaignView) -> None:
    for part in view_parts(view):
        out().print(part)
    if age := age_note(view):
        err().print(age)


@campaign_app.command("status", short_help="Counts per stage and state; failures, blockers.")
def status(
    target: TargetArg,
    as_json: JsonOpt = False,
    refresh: bool = typer.Option(False, "--refresh", help="Ask the scheduler now, even within the backoff interval."),
    watch: bool = typer.Option(False, "--watch", help="Keep showing the state and where each running task's "
                               "training is until every task ended: live on a terminal, a line per change in a "
                               "pipe (the scheduler is asked once per refresh, backing off)."),
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Counts per stage and state, failures with reasons and logs, blocked tasks: one scheduler query."""
    from hpc.campaign import api

    paths = _target(target, site, set_)
    scheduler = _backend(paths, site, set_).scheduler
    if watch:
        from hpc.cli.campaign_watch import watch_campaign

        watch_campaign(paths, scheduler, refresh=refresh, as_json=as_json)
        return
    view = api.status(paths, scheduler, refresh=refresh)
    if as_json:
        print_json(view.as_dict())
    else:
        _print_view(view)


def _print_results(found: CampaignResults) -> None:
    from hpc.metrics.cells import number, of_total

    header, rows = found.table()
    table = Table(*header, box=None)
    for row in rows:
        table.add_row(*row)
    out().print(table)
    if found.usage_note:
        err().print(Text.assemble(("warning:", "yellow"), f" {found.usage_note}"), soft_wrap=True)
    best = found.best
    if best is None:
        err().print(f"no completed task logged {found.metric} (stage {found.stage}): no best configuration yet")
        return
    err().print(Text.assemble("best: ", (f"task {best.task_id}", "bold"), f" ({_params(best.params)}): "
                              f"{found.metric} {number(best.best)} at epoch {of_total(best.best_epoch, None)}"))


MetricOpt = Annotated[str | None, typer.Option("--metric", metavar="NAME",
                                              help="What to rank by (default: val_loss if logged, else loss).")]
ModeOpt = Annotated[str | None, typer.Option("--mode", metavar="min|max",
                                             help="Lower or higher is better (default: max for acc/auc/precision/"
                                                  "recall in the name, else min).")]
StageOpt = Annotated[str | None, typer.Option("--stage", metavar="NAME",
                                              help="The per-task stage whose metrics to read (default: the last "
                                                   "that logged any).")]


@campaign_app.command("results", short_help="One row per task with its metric, ranked; the best named.")
def results(
    target: TargetArg,
    metric: MetricOpt = None,
    mode: ModeOpt = None,
    stage: StageOpt = None,
    as_csv: bool = typer.Option(False, "--csv", help="CSV on stdout: one line per task, parameters as columns."),
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Every task with its parameters, state, final and best value of a metric, epochs, time and GPU-hours;
    ranked."""
    if as_csv and as_json:
        raise HpcTfError("--csv and --json both ask for the whole output: choose one")
    _, found = _ranked(target, metric, mode, stage, site, set_)
    if as_json:
        print_json(found.as_dict())
    elif as_csv:
        typer.echo(found.to_csv(), nl=False)
    else:
        _print_results(found)


def _ranked(target: str, metric: str | None, mode: str | None, stage: str | None, site: str | None,
            set_: list[str] | None) -> tuple[CampaignPaths, CampaignResults]:
    """The campaign's results as ``campaign results`` ranks them, for the commands that draw them."""
    from hpc.campaign import api

    if mode not in (None, "min", "max"):
        raise HpcTfError(f"--mode {shown(mode)}: choose min or max")
    paths = _target(target, site, set_)
    return paths, api.ranked(paths, _backend(paths, site, set_).scheduler, metric=metric,
                             mode="max" if mode == "max" else "min" if mode == "min" else None, stage=stage)


@campaign_app.command("plot", short_help="PNGs: learning curves, the metric against each parameter.")
def plot(
    target: TargetArg,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="DIR", help="Where to write the PNGs (default: the campaign's plots/).")] = None,
    metric: MetricOpt = None,
    mode: ModeOpt = None,
    stage: StageOpt = None,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Learning curves of every task (the best highlighted), the metric against each parameter and, for two
    parameters or more, parallel coordinates: one PNG each. Prints the files written."""
    from hpc.metrics.plot import campaign_figures, save_png

    paths, found = _ranked(target, metric, mode, stage, site, set_)
    figures = campaign_figures(found)
    if not figures:
        raise HpcTfError(f"no task of campaign {found.id} has logged {shown(found.metric)} yet: nothing to plot",
                         hint=f"see where they are: hpc-tf campaign status {paths.root}")
    where = out_dir if out_dir is not None else paths.plots_dir
    for stem, figure in figures.items():
        save_png(figure, where / f"{stem}.png")
        typer.echo(str(where / f"{stem}.png"))


@campaign_app.command("report", short_help="One self-contained HTML file: the results table and the plots.")
def report(
    target: TargetArg,
    out_file: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="FILE", help="The HTML file to write (default: the campaign's report.html).")] = None,
    metric: MetricOpt = None,
    mode: ModeOpt = None,
    stage: StageOpt = None,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """The ranked results table and every plot in one HTML file (images inside it): open it in any browser."""
    from hpc.atomic import write_text_atomic
    from hpc.metrics.plot import campaign_figures, png
    from hpc.metrics.report import report_html

    paths, found = _ranked(target, metric, mode, stage, site, set_)
    where = out_file if out_file is not None else paths.report
    write_text_atomic(where, report_html(found, {stem: png(f) for stem, f in campaign_figures(found).items()}))
    typer.echo(str(where))


@campaign_app.command("resubmit", short_help="Resubmit only the failed tasks.")
def resubmit(
    target: TargetArg,
    failed: bool = typer.Option(False, "--failed", help="Rerun failed tasks (and the tasks blocked behind them)."),
    cancelled: bool = typer.Option(False, "--cancelled", help="Count cancelled tasks as failed."),
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Resubmit only the failed tasks, as new arrays of exactly those ids."""
    from hpc.campaign.submit import resubmit_failed

    if not failed:
        raise HpcTfError("say what to resubmit", hint="hpc-tf campaign resubmit DIR --failed")
    paths = _target(target, site, set_)
    result = resubmit_failed(paths, _backend(paths, site, set_), include_cancelled=cancelled)
    if as_json:
        print_json({"rerun": {stage: list(ids) for stage, ids in result.rerun.items()},
                    "cancelled": list(result.cancelled), "job_ids": list(result.job_ids)})
        return
    if not result.rerun:
        err().print("nothing failed: nothing resubmitted")
        return
    for stage, ids in result.rerun.items():
        err().print(f"{stage}: rerunning " + ("the job" if ids == (None,) else f"task(s) {', '.join(map(str, ids))}"))
    if result.cancelled:
        err().print(f"cancelled blocked {', '.join(result.cancelled)}")
    typer.echo(" ".join(result.job_ids))


@campaign_app.command("cancel", short_help="Cancel the campaign's jobs.")
def cancel(
    target: TargetArg,
    blocked: bool = typer.Option(False, "--blocked", help="Only the tasks blocked by a failed dependency."),
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Cancel every job of the campaign (one scancel), or only its blocked tasks."""
    from hpc.campaign.submit import cancel_campaign

    paths = _target(target, site, set_)
    ids = cancel_campaign(paths, _backend(paths, site, set_), blocked_only=blocked)
    err().print(f"cancelled {', '.join(ids)}" if ids else "nothing to cancel")
