"""Where ``hpc-tf metrics TARGET`` reads: a metrics file, a directory holding one (a run directory, or a
campaign task's output directory ``tasks/<id>/<stage>``), or a job id among the runs hpc-tf launched."""

from __future__ import annotations

from pathlib import Path

from hpc.errors import HpcTfError
from hpc.metrics.read import RunMetrics, read_metrics
from hpc.paths import RunPaths
from hpc.runs import find_run
from hpc.text import shown


def metrics_path(target: str, root: Path) -> Path:
    path = Path(target).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return RunPaths.at(path).metrics
    run = find_run(target, root)  # a job id, or an error that says what else to pass
    if run.paths is None:
        raise HpcTfError(f"job {run.job_id} has no hpc-tf run directory under {shown(str(root), 300)}",
                         hint="pass the run directory printed by hpc-tf launch")
    return run.paths.metrics


def run_metrics(target: str, root: Path) -> RunMetrics:
    path = metrics_path(target, root)
    try:
        return read_metrics(path)
    except FileNotFoundError:
        raise HpcTfError(f"no metrics recorded at {shown(str(path), 300)} (yet)",
                         hint="the chief task writes a row after each epoch; a job still pending or in its "
                              "first epoch has none") from None
