"""The hand-off as a dependent CPU job after training (job.yaml ``handoff:``): what to run and where.

Pure functions; the launch path renders them (quoting stays in :mod:`hpc.render`) and submits the job
with ``--dependency=afterok:<training job id>`` on the site's CPU/serving partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpc.serving.names import check_model_name


@dataclass(frozen=True)
class HandoffJob:
    argv: tuple[str, ...]  # the command the dependent job runs (no shell)
    partition: str | None
    dependency: str  # the value of sbatch --dependency


def handoff_command(
    *,
    python: str,
    run_dir: str,
    model: str,
    fmt: str | None,
    savedmodel_subdir: str,
    site: str,
    repository: str | None = None,
) -> tuple[str, ...]:
    """``python -m hpc.cli handoff <run_dir> --model M --site S [--savedmodel D] [--format F] [--repository R]``."""
    check_model_name(model)
    argv = [python, "-m", "hpc.cli", "handoff", run_dir, "--model", model, "--site", site]
    if savedmodel_subdir != "export":
        argv += ["--savedmodel", savedmodel_subdir]
    if fmt is not None:
        argv += ["--format", fmt]
    if repository is not None:
        argv += ["--repository", repository]
    return tuple(argv)


def handoff_job(
    *,
    python: str,
    run_dir: str,
    model: str,
    fmt: str | None,
    savedmodel_subdir: str,
    site: str,
    training_job_id: str,
    partition: str | None,
    repository: str | None = None,
) -> HandoffJob:
    """:func:`handoff_command` to run after the training job."""
    argv = handoff_command(python=python, run_dir=run_dir, model=model, fmt=fmt, savedmodel_subdir=savedmodel_subdir,
                           site=site, repository=repository)
    return HandoffJob(argv, partition, f"afterok:{training_job_id}")
