"""Submit a training function through submitit with the resources of a job spec.

One run directory per submission, under the site's ``runs_dir`` as for ``hpc-tf launch``, with the
same run records whatever the executor (``hpc-tf status / logs / cancel RUN_DIR`` work on it)::

    <run_dir>/
      resolved.json        the resolved job (its command names the function)
      submission.json      job id and launcher, so ``hpc-tf status RUN_DIR`` finds the job
      submitit/            submitit's folder: the pickled call, the results (slurm: its script, task logs)
      logs/task-<jobid>-<rank>.out, batch-<jobid>.out   each task's log, the batch log (slurm: links to
                           submitit's task logs; local: written by the local launcher)
      job.sbatch           local: the script the local launcher runs (submitit's task entry point per task)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc.backends import CHECK_QUOTA, Backend, QuotaPolicy, backend_for, poll_backoff
from hpc.functions.job import FunctionJob
from hpc.functions.plan import ExecutorKind, FunctionPlan, SpecInput, function_name, plan_function, timeout_minutes
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
) -> FunctionJob[Any]:
    """Run ``fn(*args, **kwargs)`` in every task of a job with the resources of ``spec``.

    ``spec`` is a job.yaml path, a mapping with the same keys, or a :class:`~hpc.spec.model.JobSpec`;
    it is validated and resolved against ``site`` (and ``overrides``, ``KEY=VALUE`` as ``--set``)
    exactly as ``hpc-tf launch`` does. Its ``command`` is not used and may be left out.

    ``executor``: ``"slurm"`` (submitit's SlurmExecutor: ``sbatch`` from this machine) or ``"local"``
    (hpc-tf's local launcher: every worker a process on this machine, nodes emulated, for debugging);
    by default the site's launcher decides. Each task sets itself up as hpc-tf's bootstrap sets up a
    command (TF_CONFIG, its GPU slice, the hooks, see :mod:`hpc.functions.task`) before it calls
    ``fn``, so ``tf.distribute.MultiWorkerMirroredStrategy()`` inside ``fn`` forms the job's cluster.

    ``fn`` is pickled: it must be importable on the compute nodes (a function of a module on the
    job's ``PYTHONPATH``; sbatch passes this process's environment on), or defined in ``__main__``.
    Keyword arguments of ``fn`` named like a parameter here: bind them with ``functools.partial``.

    The GPU quota is checked first, as ``hpc-tf launch`` checks it: a job that can never fit raises
    :class:`~hpc.errors.QuotaRefused`; one that must wait is submitted with a
    :class:`~hpc.quota.QuotaWarning` (``quota=QuotaPolicy(force=True)`` / ``no_queue=True`` as
    ``--force`` / ``--no-queue``).

    Returns a :class:`~hpc.functions.job.FunctionJob`: ``job.result()`` is rank 0's return value,
    ``job.results()`` every task's (both wait; a failed task raises :class:`~hpc.errors.TaskFailed`
    naming the task, its log and the cause), ``job.job_id``, ``job.state``, ``job.done()``,
    ``job.cancel()``, ``job.log_path(rank)``; ``job.run_dir`` works with ``hpc-tf status`` and ``logs``.
    The results are files the tasks write before they exit, so ``job.result()`` may return while
    ``job.state`` still says RUNNING for the few seconds the scheduler takes to end the job.

    With ``preemption.enabled``, Slurm warns the tasks with USR1 ``warning_seconds`` before the limit;
    the workers checkpoint at a step they agree on and the job is requeued (up to ``max_restarts``),
    after which ``fn`` is called again and ``model.fit`` (or a loop with
    ``hpc_tf_runtime.preemption.Resumable``) resumes from the checkpoint; the local launcher requeues
    the same way.
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
        set_up_by_bootstrap=plan.executor == "local",
    ), args, kwargs, quota)


def submit_plan(
    plan: FunctionPlan, task: FunctionTask, args: Sequence[Any], kwargs: Mapping[str, Any],
    quota: QuotaPolicy = CHECK_QUOTA,
) -> FunctionJob[Any]:
    """Check the quota, create the run directory, submit, record the submission as ``hpc-tf launch``
    does; on a failed submit the run directory is removed again."""
    backend = backend_for(plan.executor, plan.run_dir.parent, plan.job.scheduler)
    verdict = backend.check_quota(plan.job, quota)
    if verdict is not None:
        for sentence, is_warning in notices(verdict, quota.force):
            if is_warning:
                warnings.warn(sentence, QuotaWarning, stacklevel=3)
    paths = backend.create_run_dir(plan.job, plan.script)
    with backend.submitting(paths):
        if plan.executor == "slurm":
            job_id = _executor(plan).submit(task, *args, **kwargs).job_id
        else:
            job_id = _submit_to_launcher(plan, backend, paths, task, args, kwargs)
    if plan.executor == "slurm":
        _link_logs(paths, plan, job_id)
    record_submission(paths, job_id, cluster=None, launcher=plan.executor)
    return FunctionJob(job_id, paths, plan.job.world_size, backend.scheduler, poll_backoff(backend.scheduler))


def _executor(plan: FunctionPlan) -> submitit.Executor:
    import submitit  # only when submitting: importing hpc stays cheap

    executor = submitit.SlurmExecutor(folder=plan.folder, python=plan.python)
    executor.update_parameters(**plan.parameters)
    return executor


def _submit_to_launcher(plan: FunctionPlan, backend: Backend, paths: RunPaths, task: FunctionTask,
                        args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The call pickled as submitit's task entry point reads it (``<jobid>_submitted.pkl``, which each
    task waits for), the run's script submitted through the launcher's backend."""
    from submitit.core.utils import DelayedSubmission  # only when submitting: importing hpc stays cheap

    plan.folder.mkdir()
    pending = plan.folder / ".submitted.pkl.partial"
    delayed = DelayedSubmission(task, *args, **kwargs)
    delayed.set_timeout(timeout_minutes(plan.job), 0)  # requeues are hpc-tf's policy, not submitit's
    delayed.dump(pending)
    job_id = backend.submit(paths.script)
    os.rename(pending, plan.folder / f"{job_id}_submitted.pkl")
    return job_id


def _link_logs(paths: RunPaths, plan: FunctionPlan, job_id: str) -> None:
    """``logs/task-<jobid>-<rank>.out`` and the batch log point at submitit's task logs (its batch
    output is task 0's file, %t = 0)."""
    links = {paths.task_log(job_id, rank): f"{job_id}_{rank}_log.out" for rank in range(plan.job.world_size)}
    links[paths.batch_log(job_id)] = f"{job_id}_0_log.out"
    for link, target in links.items():
        os.symlink(Path("..") / plan.folder.name / target, link)
