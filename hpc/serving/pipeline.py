"""The hand-off as a dependent CPU job after training (job.yaml ``handoff:``): the command it runs.

Pure; :mod:`hpc.render.cpu_jobs` renders the job around it (quoting stays in :mod:`hpc.render`) and
:mod:`hpc.launch` submits it to start once the training job succeeded, on the partition resolved
for it (:func:`hpc.resolve.resolve`: serving.partition, else cpu_partition).
"""

from __future__ import annotations

from hpc.serving.names import check_model_name


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

