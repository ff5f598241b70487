"""``LocalScheduler``: the :class:`hpc.scheduler.Scheduler` protocol with no Slurm, for ``--site local``.

``submit`` reads the script's ``#SBATCH`` lines as sbatch would (nodes, tasks per node, GPUs, time
limit, warning signal, log file), records the job and starts its supervisor
(:mod:`hpc.local.supervisor`) as a detached process, which emulates the allocation and runs the
script. An array (``--array`` with a ``%N`` throttle) is one job and one supervisor per task; its
tasks share this machine's GPUs (:func:`machine_gpu_ids`; with none, one task's placeholder ids, so
one task runs at a time). Dependencies are sbatch's afterok, afterany, afternotok and aftercorr on
jobs, arrays (``12``) and array tasks (``12_3``). ``query`` reads the records (one directory, no
process is asked anything but "are you alive"); ``cancel`` signals the supervisors, which end their
jobs as scancel would.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from hpc.errors import HpcTfError
from hpc.local.jobs import NEVER_SATISFIED, TERMINAL_STATES, DependencyKind, LocalJob, LocalJobStore
from hpc.render.directives import gpu_count, read_gres, script_directives
from hpc.scheduler.fields import ExitCode
from hpc.scheduler.job_usage import JobUsage
from hpc.scheduler.reasons import parse_reason
from hpc.scheduler.states import JobState
from hpc.scheduler.status import JobStatus
from hpc.scheduler.submission import NO_OPTIONS, SubmitOptions
from hpc.text import shown
from hpc.units import parse_duration

LOCAL_CLUSTER = "local"
LOCAL_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the driver sees


class LocalScheduler:
    name = LOCAL_CLUSTER

    def __init__(self, state_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        self.store = LocalJobStore(state_dir)
        self.environ = dict(os.environ if environ is None else environ)

    def submit(self, script_path: Path | str, options: SubmitOptions = NO_OPTIONS) -> str:
        if options.hold:
            raise HpcTfError("the local launcher takes no held jobs", hint="submit the job when it should run")
        script = Path(script_path).resolve()
        after = [(kind, [self._named(ref) for ref in refs]) for kind, refs in options.after]
        array = options.array
        template = _job_from_script(script, self.environ, array=array is not None)
        template.cancel_if_never_satisfied = options.cancel_if_never_satisfied
        template.submitted_at = time.time()
        if array is None:
            job = dataclasses.replace(template, job_id=self.store.new_id(), after=_dependencies(after, None))
            self._start([job])
            return job.job_id
        if not array.indices:
            raise HpcTfError("a job array needs at least one task index")
        ids = {index: self.store.new_id() for index in sorted(set(array.indices))}
        array_id = next(iter(ids.values()))
        self.store.write_array(array_id, ids)
        self._start([dataclasses.replace(
            template, job_id=job_id, after=_dependencies(after, index), array_job_id=array_id, array_task_id=index,
            array_task_count=len(ids), array_task_min=min(ids), array_task_max=max(ids),
            array_throttle=array.throttle, gpu_ids=[], gpu_pool=_gpu_pool(len(template.gpu_ids), self.environ),
        ) for index, job_id in ids.items()])
        return array_id

    def _named(self, ref: str) -> list[LocalJob]:
        jobs = self.store.resolve(ref)
        if jobs is None:
            raise HpcTfError(f"cannot wait for local job {shown(ref)}: there is no such job")
        return jobs

    def _start(self, jobs: Sequence[LocalJob]) -> None:
        """Record each job and start its supervisor; if one cannot start, those already started are cancelled."""
        started: list[str] = []
        try:
            for job in jobs:
                job.reason = "Dependency" if job.after else ""
                self.store.write(job)
                with self.store.supervisor_log(job.job_id).open("ab") as log:
                    supervisor = subprocess.Popen(
                        [sys.executable, "-m", "hpc.local.supervisor", str(self.store.path(job.job_id))],
                        cwd=job.submit_dir, env=self.environ, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                        start_new_session=True,  # the job outlives this command, like a submitted Slurm job
                    )
                started.append(job.job_id)
                _wait_until_claimed(self.store, job.job_id, supervisor)
        except BaseException:
            self.cancel(started)
            raise

    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Each id as its jobs: a whole array (``12``) as its tasks (``12_0``, ``12_1`` …), as squeue lists them."""
        statuses: dict[str, JobStatus] = {}
        for job_id in job_ids:
            jobs = self.store.resolve(job_id)
            if jobs is None:
                statuses[job_id] = JobStatus(job_id=job_id, state=JobState.UNKNOWN, source="none")
            for job in jobs or ():
                statuses[job.display_id] = self._status(job)
        return statuses

    def cancel(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            for job in self.store.resolve(job_id) or ():
                if job.is_terminal:
                    continue
                if job.supervisor_alive and job.supervisor_pid is not None:
                    os.kill(job.supervisor_pid, signal.SIGTERM)
                elif job.reason == NEVER_SATISFIED:  # pending for good, its supervisor gone: nobody else writes it
                    job.state, job.state_text, job.ended_at = "CANCELLED", "cancelled while blocked", time.time()
                    self.store.write(job)

    def usage(self, job_ids: Sequence[str] = (), *, since: float | None = None,
              user: str | None = None) -> list[JobUsage]:
        """GPU time from the job records: the job's GPUs × how long it ran (to now while it runs). Every
        job here is this machine's user's: ``user`` selects nothing."""
        if not job_ids and since is not None:
            job_ids = [job.job_id for job in self.store.jobs() if job.ended_at is None or job.ended_at >= since]
        found = []
        for status in self.query(job_ids).values():
            ran = status.elapsed_s if status.node_list else 0  # a job that never started held no GPUs
            found.append(JobUsage(job_id=status.job_id, raw_id=status.raw_id, state=status.state,
                                  account=status.account, gpus=status.gpus if ran else 0, elapsed_s=ran or 0))
        return found

    def show_config(self) -> Mapping[str, str]:
        # arrays as Slurm's default allows them, so a campaign is cut into the same arrays here and there
        return {"ClusterName": LOCAL_CLUSTER, "SchedulerType": "hpc-tf local launcher",
                "StateSaveLocation": str(self.store.directory), "MaxArraySize": str(LOCAL_MAX_ARRAY_SIZE)}

    def _status(self, job: LocalJob) -> JobStatus:
        state, text, exit_status = job.effective_state, job.state_text, job.exit_status
        if state != job.state:
            log = self.store.supervisor_log(job.job_id)
            text, exit_status = f"its supervisor (pid {job.supervisor_pid}) is gone; see {log}", None
        ended = job.ended_at if job.ended_at is not None else time.time()
        terminal = state in TERMINAL_STATES
        return JobStatus(
            job_id=job.display_id,
            state=JobState(state),
            reason=parse_reason(job.reason) if state == "PENDING" and job.reason else None,
            # None when the batch script never ended by itself (cancelled before it started): no exit code
            exit_code=ExitCode(exit_status, job.exit_signal) if terminal and exit_status is not None else None,
            elapsed_s=int(ended - job.started_at) if job.started_at is not None else 0,
            time_limit_s=job.time_limit_s,
            nodes=job.nodes,
            node_list=",".join(job.node_names) if job.started_at is not None else "",
            gpus=job.nodes * job.gpus_per_node,
            restarts=job.restarts,
            partition=LOCAL_CLUSTER,
            state_text=text or state,
            ended=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(job.ended_at)) if job.ended_at is not None else "",
            note=text,
            raw_id=job.job_id,
            source="local",
        )


def _wait_until_claimed(store: LocalJobStore, job_id: str, supervisor: subprocess.Popen[bytes]) -> None:
    """Return once the supervisor has recorded its pid, so status and cancel can find it at once."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = store.read(job_id)
        if job is not None and job.supervisor_pid is not None:
            return
        if supervisor.poll() is not None:
            raise HpcTfError(f"the local supervisor of job {job_id} exited at once ({supervisor.returncode})",
                             hint=f"see {store.supervisor_log(job_id)}")
        time.sleep(0.02)
    raise HpcTfError(f"the local supervisor of job {job_id} did not start within 30 s",
                     hint=f"see {store.supervisor_log(job_id)}")


def _dependencies(after: Sequence[tuple[DependencyKind, list[list[LocalJob]]]],
                  index: int | None) -> list[tuple[DependencyKind, list[str]]]:
    """The single jobs each dependency waits for; aftercorr: the task of the same index (afterok on it)."""
    out: dict[DependencyKind, list[str]] = {}
    for kind, refs in after:
        jobs = [job for named in refs for job in named]
        if kind == "aftercorr":
            jobs = [job for job in jobs if job.array_task_id is None or job.array_task_id == index]
        out.setdefault("afterok" if kind == "aftercorr" else kind, []).extend(job.job_id for job in jobs)
    return [(kind, list(dict.fromkeys(ids))) for kind, ids in out.items() if ids]


def _job_from_script(script: Path, environ: Mapping[str, str], *, array: bool = False) -> LocalJob:
    """The allocation a script's ``#SBATCH`` lines ask for, as sbatch would read it."""
    options = script_directives(script)
    nodes = int(options.get("nodes") or 1)
    if options.get("ntasks-per-node"):
        tasks_per_node = int(options["ntasks-per-node"] or 1)
    else:
        tasks_per_node = max(1, int(options.get("ntasks") or 1) // nodes)
    gpus_per_node = 0
    if options.get("gres"):  # gpu:2 or gpu:a100:2, maybe beside other gres (nvme:200)
        gpus_per_node = sum(count for _, count in read_gres(options["gres"] or "")[0])
    elif options.get("gpus-per-task"):
        gpus_per_node = gpu_count(options["gpus-per-task"] or "")[1] * tasks_per_node
    warning = options.get("signal") or ""
    return LocalJob(
        job_id="",
        name=options.get("job-name") or script.name,
        script=str(script),
        output=options.get("output") or str(script.parent / ("slurm-%A_%a.out" if array else "slurm-%j.out")),
        submit_dir=str(Path.cwd()),
        nodes=nodes,
        tasks_per_node=tasks_per_node,
        gpus_per_node=gpus_per_node,
        gpu_ids=_gpu_ids(nodes * gpus_per_node, environ),
        time_limit_s=parse_duration(options["time"] or "") if options.get("time") else None,
        warning_s=int(warning.rpartition("@")[2]) if "@" in warning else None,
    )


def machine_gpu_ids(environ: Mapping[str, str]) -> list[str]:
    """This machine's GPUs as the launcher may lend them: CUDA_VISIBLE_DEVICES when set, else every
    NVIDIA GPU the driver lists (none without the driver)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    try:
        return [str(k) for k in range(len(list(NVIDIA_GPUS.iterdir())))]
    except OSError:
        return []


def _gpu_pool(count: int, environ: Mapping[str, str]) -> list[str]:
    """The GPU ids an array's tasks share, ``count`` each: this machine's, or, with none, one task's
    placeholders, so that its tasks then run one at a time."""
    if count == 0:
        return []
    ids = machine_gpu_ids(environ)
    return ids if len(ids) >= count else _gpu_ids(count, environ)


def _gpu_ids(count: int, environ: Mapping[str, str]) -> list[str]:
    """The GPUs this machine lends the job: those in the caller's CUDA_VISIBLE_DEVICES, or ids 0..n-1.

    Without GPUs the ids are placeholders: the GPU mapping runs as on a cluster, and TensorFlow,
    finding no device, runs on the CPU.
    """
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(k) for k in range(count)]
    ids = [d for d in visible.split(",") if d.strip()]
    if len(ids) < count:
        raise HpcTfError(f"the job asks for {count} GPU(s) but CUDA_VISIBLE_DEVICES={visible!r} lends this machine's "
                         f"launcher only {len(ids)}",
                         hint="ask for fewer GPUs, or unset CUDA_VISIBLE_DEVICES to hand out ids 0..n-1")
    return ids[:count]
