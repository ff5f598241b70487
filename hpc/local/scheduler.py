"""``LocalScheduler``: the :class:`hpc.scheduler.Scheduler` protocol with no Slurm, for ``--site local``.

``submit`` reads the script's ``#SBATCH`` lines as sbatch would (nodes, tasks per node, GPUs, time
limit, warning signal, log file), records the job and starts its supervisor
(:mod:`hpc.local.supervisor`) as a detached process, which emulates the allocation and runs the
script. ``query`` reads the records (one directory, no process is asked anything but "are you
alive"); ``cancel`` signals the supervisors, which end their jobs as scancel would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from hpc.errors import HpcTfError
from hpc.local.jobs import TERMINAL_STATES, LocalJob, LocalJobStore
from hpc.render.directives import gpu_count, read_gres, script_directives
from hpc.scheduler.accounting import JobUsage
from hpc.scheduler.fields import ExitCode
from hpc.scheduler.reasons import parse_reason
from hpc.scheduler.states import JobState
from hpc.scheduler.status import JobStatus
from hpc.scheduler.submission import NO_OPTIONS, SubmitOptions
from hpc.units import parse_duration

LOCAL_CLUSTER = "local"


class LocalScheduler:
    name = LOCAL_CLUSTER

    def __init__(self, state_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        self.store = LocalJobStore(state_dir)
        self.environ = dict(os.environ if environ is None else environ)

    def submit(self, script_path: Path | str, options: SubmitOptions = NO_OPTIONS) -> str:
        unsupported = [what for what, asked in (
            ("a job array", options.array is not None),
            ("a hold", options.hold),
            ("a dependency other than afterok", any(kind != "afterok" for kind, _ in options.after)),
        ) if asked]
        if unsupported:
            raise HpcTfError(f"the local launcher takes no sbatch options ({', '.join(unsupported)})",
                             hint="run job arrays and campaigns on a Slurm site")
        after_ok = options.after_ok
        script = Path(script_path).resolve()
        for dependency in after_ok:
            if self.store.read(dependency) is None:
                raise HpcTfError(f"cannot wait for local job {dependency}: there is no such job")
        job = _job_from_script(script, self.environ)
        job.job_id = self.store.new_id()
        job.after_ok = list(after_ok)
        job.submitted_at = time.time()
        self.store.write(job)
        with self.store.supervisor_log(job.job_id).open("ab") as log:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "hpc.local.supervisor", str(self.store.path(job.job_id))],
                cwd=job.submit_dir, env=self.environ, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,  # the job outlives this command, like a submitted Slurm job
            )
        _wait_until_claimed(self.store, job.job_id, supervisor)
        return job.job_id

    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        return {job_id: self._status(job_id) for job_id in job_ids}

    def cancel(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            job = self.store.read(job_id)
            if job is None or job.is_terminal or job.supervisor_pid is None:
                continue
            if supervisor_alive(job):
                os.kill(job.supervisor_pid, signal.SIGTERM)

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
        return {"ClusterName": LOCAL_CLUSTER, "SchedulerType": "hpc-tf local launcher",
                "StateSaveLocation": str(self.store.directory)}

    def _status(self, job_id: str) -> JobStatus:
        job = self.store.read(job_id) if job_id.isdigit() else None
        if job is None:
            return JobStatus(job_id=job_id, state=JobState.UNKNOWN, source="none")
        state, text, exit_status = job.state, job.state_text, job.exit_status
        if not job.is_terminal and not supervisor_alive(job):
            log = self.store.supervisor_log(job_id)
            state, text, exit_status = "FAILED", f"its supervisor (pid {job.supervisor_pid}) is gone; see {log}", None
        ended = job.ended_at if job.ended_at is not None else time.time()
        terminal = state in TERMINAL_STATES
        return JobStatus(
            job_id=job_id,
            state=JobState(state),
            reason=parse_reason("Dependency") if state == "PENDING" and job.after_ok else None,
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
            raw_id=job_id,
            source="local",
        )


def supervisor_alive(job: LocalJob) -> bool:
    """The job's supervisor still runs (a zombie, or another program that took its pid, does not count)."""
    if job.supervisor_pid is None:
        return False
    try:
        stat = Path(f"/proc/{job.supervisor_pid}/stat").read_text()
        cmdline = Path(f"/proc/{job.supervisor_pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z" and b"hpc.local.supervisor" in cmdline


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


def _job_from_script(script: Path, environ: Mapping[str, str]) -> LocalJob:
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
        output=options.get("output") or str(script.parent / "slurm-%j.out"),
        submit_dir=str(Path.cwd()),
        nodes=nodes,
        tasks_per_node=tasks_per_node,
        gpus_per_node=gpus_per_node,
        gpu_ids=_gpu_ids(nodes * gpus_per_node, environ),
        time_limit_s=parse_duration(options["time"] or "") if options.get("time") else None,
        warning_s=int(warning.rpartition("@")[2]) if "@" in warning else None,
    )


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
