"""The one owner of file names inside a run directory, and of where run directories go (:func:`runs_root`).

A run directory holds everything about one launched job, so a user (or ``hpc-tf
status RUN_DIR``) can find the script, the resolved job, the job id and the logs
without knowing any naming convention::

    <run_dir>/
      job.sbatch          the rendered batch script, exactly as submitted
      resolved.json       the resolved job (spec + site config), read by the bootstrap
      submission.json     job id, cluster, submit time (written after sbatch succeeds)
      metrics.jsonl       what training logged, one JSON row per epoch (the chief's, appended; runtime metrics.py)
      tensorboard/        the same as TensorBoard events, with metrics: {tensorboard: true} (runtime tensorboard.py)
      handoff.sbatch      the dependent hand-off job's script (only with a ``handoff:`` section)
      handoff.json        the hand-off job's id and the training job it waits for (afterok)
      runtime/            stdlib-only bootstrap the tasks start through
      logs/batch-<jobid>.out        the batch shell's stdout/stderr
      logs/task-<jobid>-<rank>.out  each task's output (srun --output)
      logs/handoff-<jobid>.out      the hand-off job's output
      logs/restart-<jobid>.out      a requeued job's helper that lets it start again at once
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, overload

from hpc.errors import ConfigError
from hpc.text import expand_submit_time, run_time_literal


def expand_path(text: str, field: str, base_dir: Path, environ: Mapping[str, str]) -> str:
    """A path hpc-tf itself creates or reads (submit-time text, :data:`hpc.text.SubmitTimeText`: ``~``,
    ``$VAR``, ``${VAR}`` from ``environ``), relative paths anchored at ``base_dir``; an unset variable is
    a ConfigError naming the site key ``field``, never a directory named ``$VAR``."""
    try:
        text = expand_submit_time(text, _with_user(environ))
    except ValueError as err:
        raise ConfigError(f"{field} {err}",
                          hint=f"set the variable before running hpc-tf, or write {field} without it "
                               "($$ is a literal $)") from None
    path = Path(text)
    return str(path if path.is_absolute() else base_dir / path)


def _with_user(environ: Mapping[str, str]) -> Mapping[str, str]:
    """``environ`` with ``$USER`` as a login shell sets it (the account running hpc-tf) where it is missing,
    as under cron or in a container: a site's ``/scratch/$USER`` names that account's directory."""
    if "USER" in environ:
        return environ
    try:
        return {**environ, "USER": pwd.getpwuid(os.getuid()).pw_name}
    except KeyError:  # a uid without an account: $USER stays unset, and the error names it
        return environ


def run_time_path(text: str, base_dir: Path, environ: Mapping[str, str]) -> str:
    """A path the batch script expands on the node (run-time text, :data:`hpc.text.RunTimeText`): ``~``
    is this user's home now; a relative path is anchored at ``base_dir``; a path that starts with a
    ``${NAME}`` reference is left as written (the variable, not hpc-tf, says where it is)."""
    if text.startswith("~"):
        text = run_time_literal(environ.get("HOME", "~")) + text[1:]
    if text.startswith("${") or text.startswith("/"):
        return text
    return str(Path(run_time_literal(str(base_dir))) / text)


def runs_root(runs_dir: str, environ: Mapping[str, str]) -> Path:
    """The directory that holds every run and campaign directory (the site's ``runs_dir``, expanded).

    A relative ``runs_dir`` is relative to the current directory, for every command alike, so that
    ``hpc-tf status`` finds what ``hpc-tf launch`` created when both run from the same place.
    """
    return Path(expand_path(runs_dir, "runs_dir", Path.cwd(), environ))


class Under:
    """A fixed path below a layout's ``root``, declared once as a class attribute::

        class RunPaths(Layout):
            script = Under("job.sbatch")

    ``RunPaths.at(d).script`` is then ``d / "job.sbatch"``.
    """

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    @overload
    def __get__(self, layout: None, owner: type[Layout]) -> Under: ...

    @overload
    def __get__(self, layout: Layout, owner: type[Layout]) -> Path: ...

    def __get__(self, layout: Layout | None, owner: type[Layout]) -> Under | Path:
        return self if layout is None else layout.root.joinpath(*self.parts)


@dataclass(frozen=True)
class Layout:
    """A directory whose file names one class owns (a run directory, a campaign, a model repository)."""

    root: Path

    @classmethod
    def at(cls: type[_L], root: str | Path) -> _L:
        return cls(Path(root))


_L = TypeVar("_L", bound=Layout)


class RunPaths(Layout):
    script = Under("job.sbatch")
    resolved = Under("resolved.json")
    submission = Under("submission.json")
    metrics = Under("metrics.jsonl")  # the runtime's METRICS_FILE (hpc/runtime/node/hook_config.py)
    tensorboard = Under("tensorboard")  # the runtime's TENSORBOARD_DIR, beside the metrics file
    handoff_script = Under("handoff.sbatch")
    handoff_submission = Under("handoff.json")
    runtime_dir = Under("runtime")
    bootstrap = Under("runtime", "bootstrap.py")
    submitit_dir = Under("submitit")  # submitit's folder for a function submitted with hpc.submit_function
    local_step = Under("runtime", "local_step.py")  # srun for the local launcher (launchers/local_step.py)
    batch_driver = Under("runtime", "batch.py")  # what the batch script execs after its setup (launchers/batch.py)
    logs_dir = Under("logs")

    # File name patterns for --output: Slurm expands %j (job id) and %t (task rank).
    BATCH_LOG_PATTERN = "batch-%j.out"
    TASK_LOG_PATTERN = "task-%j-%t.out"
    HANDOFF_LOG_PATTERN = "handoff-%j.out"
    RESTART_LOG_PATTERN = "restart-%j.out"

    def batch_log(self, job_id: str) -> Path:
        return self.logs_dir / f"batch-{job_id}.out"

    def task_log(self, job_id: str, rank: int) -> Path:
        return self.logs_dir / f"task-{job_id}-{rank}.out"

    def handoff_log(self, job_id: str) -> Path:
        return self.logs_dir / f"handoff-{job_id}.out"
