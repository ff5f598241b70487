"""``hpc-tf campaign status --watch``: the campaign's state and where each running task's training is,
until every task ended.

On a terminal one live view, redrawn in place; in a pipe or a log, a line per change (a stage's
counts, a task's new epoch), since a redrawn screen is noise there; both end with the full status.
With ``--json`` nothing until the end, then the final status as the one JSON document (a script's
"wait for the campaign").
Each refresh is one :func:`hpc.campaign.api.status` call, which asks the scheduler once for the whole
campaign and only when its backoff says so; training progress comes from the tasks' metrics files.
A controller that does not answer is said and asked again, backing off; Ctrl-C stops the watching,
never the campaign.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from pathlib import Path

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from hpc.campaign import api
from hpc.campaign.paths import CampaignPaths
from hpc.campaign.status import DEFAULT_BACKOFF, CampaignView
from hpc.cli.campaign import _print_view, age_note, view_parts
from hpc.cli.console import err, out
from hpc.cli.options import print_json
from hpc.errors import SchedulerUnavailable
from hpc.metrics.cells import params_text
from hpc.metrics.progress import ProgressReader, Update
from hpc.render.quoting import sh
from hpc.scheduler import Scheduler

REFRESH_S = 2.0  # how often the metrics files are read again; the scheduler is asked far less often
Unit = tuple[str, int | None]  # (stage, task id; None for a stage's single job)


class _Progress:
    """A :class:`ProgressReader` per unit seen running, read while it runs and once more when it ended (its
    last epochs); kept, so a requeued task shows only what its new attempt logs."""

    def __init__(self) -> None:
        self._readers: dict[Unit, ProgressReader] = {}
        self._names: dict[Unit, str] = {}
        self._running: set[Unit] = set()

    def update(self, view: CampaignView) -> dict[Unit, Update]:
        for unit in view.running:
            key = (unit.stage, unit.task_id)
            if key not in self._readers:
                self._readers[key] = ProgressReader(Path(unit.metrics_file))
                task = f"{unit.stage}" if unit.task_id is None else f"task {unit.task_id} {unit.stage}"
                self._names[key] = f"{task} ({params_text(unit.params)})" if unit.params else task
        running = {(unit.stage, unit.task_id) for unit in view.running}
        due = [key for key in self._readers if key in running or key in self._running]  # in the order first seen
        self._running = running
        return {key: self._readers[key].update() for key in due}

    def name(self, key: Unit) -> str:
        return self._names[key]


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def watch_campaign(paths: CampaignPaths, scheduler: Scheduler, *, refresh: bool, as_json: bool) -> None:
    console = out()
    live_view = console.is_terminal and not as_json
    progress = _Progress()
    shown_counts: dict[str, dict[str, int]] = {}
    screen = Live(console=console, auto_refresh=False, transient=True) if live_view else None
    shown: list[RenderableType] = []  # the live view's last state, kept while Slurm does not answer
    wait_s = REFRESH_S
    try:
        with screen or contextlib.nullcontext():
            while True:
                try:
                    view = api.status(paths, scheduler, refresh=refresh)
                except SchedulerUnavailable as error:  # a busy or restarting controller: watching goes on
                    wait_s = DEFAULT_BACKOFF.next_s(wait_s, changed=False)
                    note = f"Slurm did not answer ({error.reason}); asking again in {wait_s:.0f} s"
                    if screen is not None:
                        screen.update(Group(*shown, Text(note, style="yellow")), refresh=True)
                    else:
                        err().print(note)
                    time.sleep(wait_s)
                    continue
                refresh, wait_s = False, REFRESH_S
                updates = progress.update(view) if not as_json else {}
                if screen is not None:
                    shown = view_parts(view, updates)
                    screen.update(Group(*shown, Text(age_note(view, watching=True), style="dim")), refresh=True)
                elif not as_json:
                    for key, update in updates.items():
                        for line in update.lines:
                            console.print(f"{progress.name(key)}: {line}")
                    for stage, counts in view.counts.items():
                        if shown_counts.get(stage) != counts:
                            console.print(f"{stage}: {_counts(counts)}")
                    shown_counts = {k: dict(v) for k, v in view.counts.items()}
                if view.finished or view.blocked or view.error:
                    break
                time.sleep(REFRESH_S)
    except KeyboardInterrupt:
        err().print(f"stopped watching; the campaign goes on (hpc-tf campaign status {sh(str(paths.root))})")
        raise typer.Exit(130) from None
    if as_json:
        print_json(view.as_dict())
    else:
        _print_view(view)
