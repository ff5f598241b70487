"""``hpc-tf status``, ``logs`` and ``cancel``: the user's view of launched jobs."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table

from hpc.backends import cancel_runs, poll_backoff, query_runs, run_launcher, scheduler_for
from hpc.cli.console import err, out
from hpc.cli.options import JsonOpt, SetOpt, SiteOpt, print_json
from hpc.errors import HpcTfError, SchedulerUnavailable
from hpc.metrics.progress import ProgressReader, Update
from hpc.paths import runs_root
from hpc.quota import explain_waits
from hpc.runs import Run, find_run, list_runs, with_run_account
from hpc.scheduler import Follower, JobState, JobStatus, Scheduler
from hpc.scheduler.choice import SchedulerKind
from hpc.scheduler.status import degraded_warnings
from hpc.site.load import load_site
from hpc.units import format_duration

Targets = Annotated[list[str] | None, typer.Argument(help="Job ids or run directories.", show_default=False)]


@dataclass(frozen=True)
class _Where:
    """The runs directory, the launcher and the Slurm scheduler of the site the command runs for."""

    root: Path
    launcher: str
    scheduler: SchedulerKind


def _where(site: str | None, set_: list[str] | None) -> _Where:
    loaded = load_site(site, set_ or ())
    return _Where(runs_root(loaded.config.runs_dir, os.environ), loaded.config.launcher, loaded.config.scheduler)


def _runs(targets: list[str] | None, all_: bool, root: Path) -> list[Run]:
    if all_:
        return list_runs(root)
    if not targets:
        raise HpcTfError("name a job id or run directory, or pass --all")
    return [find_run(t, root) for t in targets]


def _time(status: JobStatus) -> str:
    elapsed = format_duration(status.elapsed_s) if status.elapsed_s is not None else "-"
    limit = format_duration(status.time_limit_s) if status.time_limit_s is not None else "-"
    return f"{elapsed}/{limit}"


def _info(status: JobStatus) -> str:
    return "; ".join(filter(None, (status.unanswered_note, _state_info(status))))


def _state_info(status: JobStatus) -> str:
    if status.reason is not None:
        return status.reason_sentence or ""
    if status.state.is_terminal:
        return status.ending
    if status.state is JobState.UNKNOWN:
        return "not known to sacct or squeue (too old, or another cluster)"
    return ""


def training_progress(runs: Sequence[Run], statuses: Mapping[str, JobStatus]) -> dict[str, Update]:
    """Where each running job's training is, from its run directory's metrics file (no scheduler call)."""
    return {run.job_id: ProgressReader(run.paths.metrics).update() for run in runs
            if run.paths is not None and statuses[run.job_id].state is JobState.RUNNING}


def status_rows(
    runs: list[Run], statuses: Mapping[str, JobStatus], quota_notes: Mapping[str, str],
    progress: Mapping[str, Update] | None = None,
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for run in runs:
        st = statuses[run.job_id]
        update = (progress or {}).get(run.job_id)
        rows.append({
            "job_id": run.job_id, "run": run.name, "state": st.state.value,
            "info": quota_notes.get(run.job_id) or _info(st),
            "elapsed_s": st.elapsed_s, "time_limit_s": st.time_limit_s, "nodes": st.node_list or st.nodes,
            "gpus": st.gpus, "restarts": st.restarts,
            "run_dir": str(run.paths.root) if run.paths else None,
            "reason": st.reason.code if st.reason else None,
            "exit_code": st.exit_code.shell_code if st.exit_code and st.state.exit_is_its_own else None,
            "unanswered": st.unanswered or None,
            "progress": update.latest if update is not None else None,
            "progress_fraction": update.fraction if update is not None else None,
        })
    return rows


def status(
    targets: Targets = None,
    all_: bool = typer.Option(False, "--all", help="Every run under the site's runs directory."),
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """One table of jobs: state, why they wait (in words), elapsed/limit, nodes, GPUs, where training is
    (epoch, latest loss, time per epoch, from the run's metrics file) — one scheduler query."""
    where = _where(site, set_)
    runs = _runs(targets, all_, where.root)
    statuses = query_runs(runs, where.launcher, where.root, where.scheduler) if runs else {}
    # jobs waiting on a GPU limit get the limit and who holds the GPUs (no scheduler call otherwise)
    rows = status_rows(runs, statuses, explain_waits(statuses), training_progress(runs, statuses))
    for warning in degraded_warnings(statuses.values()):
        err().print(f"hpc-tf: warning: {warning}", markup=False, soft_wrap=True)
    if as_json:
        print_json(rows)
        return
    if not rows:
        err().print("no runs found")
        return
    training = any(row["progress"] for row in rows)  # a column only while some job trains
    table = Table("job", "run", "state", "elapsed/limit", "nodes", "gpus", "restarts", "info",
                  *(["progress"] if training else []), box=None)
    for run, row in zip(runs, rows, strict=True):
        st = statuses[run.job_id]
        progress = [str(row["progress"] or "")] if training else []
        table.add_row(str(row["job_id"]), str(row["run"]), st.state.value, _time(st), str(row["nodes"]),
                      str(st.gpus), str(st.restarts), str(row["info"]), *progress)
    out().print(table)


def cancel(targets: Targets = None, site: SiteOpt = None, set_: SetOpt = None) -> None:
    """Cancel jobs by id or run directory (already finished jobs are fine)."""
    where = _where(site, set_)
    runs = _runs(targets, False, where.root)
    try:
        cancel_runs(runs, where.launcher, where.root, where.scheduler)
    except SchedulerUnavailable as error:
        raise HpcTfError(f"cannot cancel {', '.join(r.job_id for r in runs)}: {error.summary}, and only the "
                         "controller can cancel jobs; hpc-tf status still works (from accounting): try again "
                         "once it answers") from None
    err().print(f"cancelled {', '.join(r.job_id for r in runs)}")


def logs(
    target: Annotated[str, typer.Argument(help="Job id or run directory.", show_default=False)],
    task: int | None = typer.Option(None, "--task", "-t", metavar="RANK",
                                    help="A task's (worker's) output instead of the batch log."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Print a job's batch log (or one worker's log with --task N)."""
    where = _where(site, set_)
    run = find_run(target, where.root)
    if run.paths is None:
        raise HpcTfError(f"job {run.job_id} has no hpc-tf run directory under the runs directory",
                         hint="pass the run directory printed by hpc-tf launch")
    path = run.paths.batch_log(run.job_id) if task is None else run.paths.task_log(run.job_id, task)
    scheduler = scheduler_for(run_launcher(run, where.launcher), where.root, where.scheduler)
    follower = Follower(scheduler.query, [run.job_id], backoff=poll_backoff(scheduler)) if follow else None
    offset = 0
    while True:
        if path.exists():
            with path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            typer.echo(chunk.decode(errors="replace"), nl=False)
        elif follower is None:
            raise HpcTfError(f"no log yet at {path}", hint="the job may still be pending: hpc-tf status " + run.job_id)
        if follower is None:
            return
        if follower.seconds_until_due() == 0:
            follower.poll()
            if follower.done:
                follower = None
                continue  # one last read for what was written before the end
        time.sleep(0.5)


def _bar(done: float | None) -> list[RenderableType]:
    return [] if done is None else [ProgressBar(total=1.0, completed=done, width=24)]


def _row(parts: Sequence[RenderableType]) -> RenderableType:
    """The live line: the parts side by side, three spaces apart (a bar is no text, so a grid)."""
    grid = Table.grid(padding=(0, 3))
    grid.add_row(*parts)
    return grid


def wait_for(job_ids: Sequence[str], scheduler: Scheduler, runs: Sequence[Run] = ()) -> int:
    """Follow jobs with a live status line until all ended; return an exit code mirroring the first
    that did not succeed (0 when all did). ``runs``: the run directories of those jobs that have one;
    their training progress (hpc.metrics.progress) joins the live line, and each new epoch is printed."""
    follower = Follower(scheduler.query, job_ids, backoff=poll_backoff(scheduler))
    # training progress from each run's metrics file, read on the same polls as the status
    readers = {run.job_id: ProgressReader(run.paths.metrics) for run in runs if run.paths is not None}
    console = err()
    with console.status(f"job {', '.join(job_ids)}: submitted") as line:
        def show(statuses: Mapping[str, JobStatus]) -> None:
            progress = {job_id: reader.update() for job_id, reader in readers.items()}
            parts: list[RenderableType] = []
            for job_id in job_ids:
                if (st := statuses.get(job_id)) is not None:
                    parts.append(f"job {job_id}: {st.state.value}  {_time(st)}  {_info(st)}".rstrip())
                    if (update := progress.get(job_id)) is not None and update.latest is not None:
                        parts.extend(_bar(update.fraction))
                        parts.append(update.latest)
            line.update(_row(parts))
            for job_id, update in progress.items():
                for text in update.lines:  # printed above the live line on a terminal; a pipe gets only these
                    console.print(f"job {job_id}: {text}")
        final = dict(follower.wait(on_update=show))
    for run in runs:
        final[run.job_id] = with_run_account(run, final[run.job_id])
    for job_id in job_ids:
        err().print(f"job {job_id} ended: {final[job_id].state.value} {_info(final[job_id])}".rstrip())
    for job_id in job_ids:
        st = final[job_id]
        if not st.state.is_success:
            return st.exit_code.shell_code if st.exit_code and st.exit_code.shell_code else 1
    return 0
