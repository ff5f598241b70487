"""Submit a training function through submitit with the resources of a job spec.

One run directory per submission, under the site's ``runs_dir`` as for ``hpc-tf launch``::

    <run_dir>/
      resolved.json        the resolved job (its command names the function)
      submission.json      job id (Slurm executor), so ``hpc-tf status RUN_DIR`` finds the job
      submitit/            submitit's folder: its batch script, pickles, results and task logs
      logs/task-<jobid>-<rank>.out, batch-<jobid>.out   links to submitit's task logs (``hpc-tf logs``)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc.backends import CHECK_QUOTA, QuotaPolicy, backend_for
from hpc.functions.plan import ExecutorKind, FunctionPlan, SpecInput, function_name, plan_function
from hpc.functions.task import FunctionTask
from hpc.paths import RunPaths
from hpc.quota import QuotaWarning, notices
from hpc.rundir import record_submission
from hpc.spec.model import JobSpec

if TYPE_CHECKING:
    import submitit


def submit_function(
    fn: Callable[..., Any],
    *args: Any,
    spec: SpecInput | JobSpec,
    site: str | None = None,
    overrides: Sequence[str] = (),
    executor: ExecutorKind | None = None,
    environ: Mapping[str, str] | None = None,
    quota: QuotaPolicy = CHECK_QUOTA,
    **kwargs: Any,
) -> submitit.Job[Any]:
    """Run ``fn(*args, **kwargs)`` in every task of a job with the resources of ``spec``.

    ``spec`` is a job.yaml path, a mapping with the same keys, or a :class:`~hpc.spec.model.JobSpec`;
    it is validated and resolved against ``site`` (and ``overrides``, ``KEY=VALUE`` as ``--set``)
    exactly as ``hpc-tf launch`` does. Its ``command`` is not used and may be left out.

    ``executor``: ``"slurm"`` (submitit's SlurmExecutor: ``sbatch`` from this machine) or ``"local"``
    (submitit's LocalExecutor: every worker a process on this machine, for debugging); by default
    the site's launcher decides. Each task sets itself up as hpc-tf's bootstrap sets up a command
    (TF_CONFIG, its GPU slice, the hooks, see :mod:`hpc.functions.task`) before it calls ``fn``, so
    ``tf.distribute.MultiWorkerMirroredStrategy()`` inside ``fn`` forms the job's cluster.

    ``fn`` is pickled: it must be importable on the compute nodes (a function of a module on the
    job's ``PYTHONPATH``; sbatch passes this process's environment on), or defined in ``__main__``.
    Keyword arguments of ``fn`` named like a parameter here: bind them with ``functools.partial``.

    The GPU quota is checked first, as ``hpc-tf launch`` checks it: a job that can never fit raises
    :class:`~hpc.errors.QuotaRefused`; one that must wait is submitted with a
    :class:`~hpc.quota.QuotaWarning` (``quota=QuotaPolicy(force=True)`` / ``no_queue=True`` as
    ``--force`` / ``--no-queue``).

    Returns submitit's job: ``job.result()`` is rank 0's return value, ``job.results()`` every task's,
    ``job.state``, ``job.cancel()``, ``job.stdout()``. The run directory is ``job.paths.folder.parent``.
    The results are files the tasks write before they exit, so ``job.result()`` may return while
    ``job.state`` still says RUNNING for the few seconds Slurm takes to end the job.

    With ``preemption.enabled``, Slurm warns the tasks with USR1 ``warning_seconds`` before the limit;
    the workers checkpoint at a step they agree on and the job is requeued (up to ``max_restarts``),
    after which ``fn`` is called again and ``model.fit`` resumes from the checkpoint. Under the local
    executor there is no requeue.
    """
    plan = plan_function(fn, spec, site, overrides, executor, environ)
    return submit_plan(plan, FunctionTask(
        fn,
        runtime=plan.job.runtime.model_dump(mode="json"),
        env=plan.job.env,
        run_dir=plan.job.run_dir,
        output_dir=plan.job.output_dir,
        workdir=plan.job.workdir,
        name=function_name(fn),
    ), args, kwargs, quota)


def submit_plan(
    plan: FunctionPlan, task: FunctionTask, args: Sequence[Any], kwargs: Mapping[str, Any],
    quota: QuotaPolicy = CHECK_QUOTA,
) -> submitit.Job[Any]:
    """Check the quota, create the run directory, submit through submitit; on a failed submit the run
    directory is removed again."""
    backend = backend_for(plan.executor, plan.run_dir.parent)
    verdict = backend.check_quota(plan.job, quota)
    if verdict is not None:
        for sentence, is_warning in notices(verdict, quota.force):
            if is_warning:
                warnings.warn(sentence, QuotaWarning, stacklevel=3)
    paths = backend.create_run_dir(plan.job)
    with backend.submitting(paths):
        job = _executor(plan).submit(task, *args, **kwargs)
    if plan.executor == "slurm":
        record_submission(paths, job.job_id, cluster=None)
    _link_logs(paths, plan, job.job_id)
    return job


def _executor(plan: FunctionPlan) -> submitit.Executor:
    import submitit  # only when submitting: importing hpc stays cheap

    executor: submitit.Executor
    if plan.executor == "slurm":
        executor = submitit.SlurmExecutor(folder=plan.folder, python=plan.python)
    else:
        executor = submitit.LocalExecutor(folder=plan.folder, python=plan.python)
    executor.update_parameters(**plan.parameters)
    return executor


def _link_logs(paths: RunPaths, plan: FunctionPlan, job_id: str) -> None:
    """``logs/task-<jobid>-<rank>.out`` (and the batch log) point at submitit's task logs."""
    links = {paths.task_log(job_id, rank): f"{job_id}_{rank}_log.out" for rank in range(plan.job.world_size)}
    if plan.executor == "slurm":  # submitit's batch output is task 0's file (%t = 0)
        links[paths.batch_log(job_id)] = f"{job_id}_0_log.out"
    for link, target in links.items():
        os.symlink(Path("..") / plan.folder.name / target, link)
