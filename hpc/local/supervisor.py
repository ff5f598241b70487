"""The supervisor of one local job: what slurmctld and slurmstepd do for a batch job, on this machine.

    python -m hpc.local.supervisor <runs dir>/.local-jobs/<id>.json

It waits for the jobs the record depends on (afterok, afterany, afternotok; aftercorr is afterok on
one task), and an array task for a place under its array's throttle and for free GPUs among the
array's, then runs the batch script with the variables of its emulated allocation (``SLURM_JOB_ID``,
``SLURM_ARRAY_*``, the node list ``local1,local2,…``, tasks per node, the job's GPU ids), in a
process group of its own so that the whole job can be signalled. Like Slurm it
sends USR1 to the batch shell ``--signal=B:USR1@N`` seconds before the time limit, ends the job with
TERM (then KILL after a grace period) at the limit or when cancelled, runs the script again when the
script's batch driver asks for a requeue (it decides by the one policy, hpc/runtime/node/requeue.py, and
leaves the file HPC_TF_LOCAL_REQUEUE_FILE where ``scontrol requeue`` would run under Slurm; SLURM_RESTART_COUNT
tells the next run how many came before), and records every change of state in the job's record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hpc.local.jobs import NEVER_SATISFIED, TERMINAL_STATES, LocalJobStore
from hpc.runtime.node.local_step import expand_filename_pattern, filename_values

KILL_WAIT_S = 30  # Slurm's default KillWait: from TERM to KILL
POLL_S = 0.1
READY_REASONS = frozenset({"", "Resources", "JobArrayTaskLimit"})  # pending for nothing but a free place
WAIT_POLL_S = 0.5  # a pending job looks at its dependencies and its array's running tasks this often
NODE_ADDRESS = "127.0.0.1"  # every emulated node; TF ports are distinct per address


class Supervisor:
    def __init__(self, record: Path) -> None:
        self.store = LocalJobStore(record.parent)
        job = self.store.read(record.stem)
        if job is None:
            raise SystemExit(f"hpc.local.supervisor: no job record at {record}")
        self.job = job
        self.cancelled = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._cancel)
        signal.signal(signal.SIGINT, self._cancel)
        self._update(supervisor_pid=os.getpid())
        if not self._wait_to_start():
            if self.cancelled and not self.job.is_terminal:  # a cancel that came as it left a blocked job
                self._finish("CANCELLED", None, "cancelled while blocked")
            return 0
        while not self.cancelled:
            status, ended_by = self._run_once()
            flag = self.store.requeue_flag(self.job.job_id)
            requeue = flag.exists()
            flag.unlink(missing_ok=True)
            if requeue and ended_by is None:
                self._update(restarts=self.job.restarts + 1, batch_pid=None)
                continue
            state = ended_by or ("COMPLETED" if status == 0 else "FAILED")
            self._finish(state, status)
            return 0
        self._finish("CANCELLED", None, "cancelled before it started")
        return 0

    def _wait_to_start(self) -> bool:
        """Wait for the dependencies, then (an array task) for the throttle and free GPUs; False: it ends unrun.

        A dependency that can never be met cancels the job when it was submitted so; otherwise the job
        stays pending with Slurm's reason DependencyNeverSatisfied, and this supervisor leaves (the job
        waits for nothing now, only for a cancel).
        """
        while not self.cancelled:
            waits, never = self._dependencies()
            if never:
                why = f"dependency never satisfied: {never}"
                if self.job.cancel_if_never_satisfied:
                    self._finish("CANCELLED", None, why)
                else:
                    self._set_reason(NEVER_SATISFIED, why)
                return False
            if waits:
                self._set_reason("Dependency", "")
            elif self._take_slot():
                return True
            time.sleep(WAIT_POLL_S)
        self._finish("CANCELLED", None, "cancelled while pending")
        return False

    def _dependencies(self) -> tuple[bool, str]:
        """Whether a dependency is still to end, and which one ended so that it can never be met."""
        waits = False
        for kind, ids in self.job.after:
            for dependency in ids:
                other = self.store.read(dependency)
                state = other.effective_state if other is not None else "PENDING"
                if state not in TERMINAL_STATES:
                    waits = True
                elif (kind == "afterok" and state != "COMPLETED") or (kind == "afternotok" and state == "COMPLETED"):
                    return waits, f"job {dependency} ended {state}"
        return waits, ""

    def _take_slot(self) -> bool:
        """An array task starts when fewer than the throttle of its siblings run and its GPUs are free."""
        array = self.job.array_job_id
        if array is None:
            return True
        with self.store.array_lock(array):
            siblings = [self.store.read(job_id) for job_id in (self.store.array_tasks(array) or {}).values()
                        if job_id != self.job.job_id]
            running = [s for s in siblings if s is not None and s.effective_state == "RUNNING"]
            if self.job.array_throttle is not None and len(running) >= self.job.array_throttle:
                self._set_reason("JobArrayTaskLimit", "")
                return False
            held = {gpu for s in running for gpu in s.gpu_ids}
            free = [gpu for gpu in self.job.gpu_pool if gpu not in held]
            need = self.job.nodes * self.job.gpus_per_node
            # a task ready before it in index order goes first, as Slurm starts an array's tasks
            ahead = any(s is not None and s.array_task_id is not None and self.job.array_task_id is not None
                        and s.array_task_id < self.job.array_task_id and s.reason in READY_REASONS
                        and s.effective_state == "PENDING" for s in siblings)
            if len(free) < need or ahead:
                self._set_reason("Resources", "")
                return False
            # RUNNING under the lock: the next sibling to look counts this task and its GPUs
            self._update(state="RUNNING", reason="", gpu_ids=free[:need], started_at=time.time())
            return True

    def _set_reason(self, reason: str, text: str) -> None:
        if (self.job.reason, self.job.state_text) != (reason, text):
            self._update(reason=reason, state_text=text)

    def _run_once(self) -> tuple[int, str | None]:
        """One run of the batch script: its exit status, and TIMEOUT/CANCELLED if the supervisor ended it."""
        env = self._job_environment()
        log = Path(expand_filename_pattern(self.job.output, filename_values(self.job.job_id, env)))
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            batch = subprocess.Popen(["bash", self.job.script], cwd=self.job.submit_dir, env=env,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        start = time.monotonic()
        # the start of this run, as Slurm's Start and Elapsed of a requeued job are its current run's
        self._update(state="RUNNING", reason="", batch_pid=batch.pid, started_at=time.time())
        limit = self.job.time_limit_s
        warn_at = start + limit - self.job.warning_s if limit and self.job.warning_s is not None else None
        ended_by: str | None = None
        kill_at: float | None = None
        while batch.poll() is None:
            now = time.monotonic()
            if warn_at is not None and now >= warn_at:
                warn_at = None
                _signal(batch.pid, signal.SIGUSR1, group=False)  # B: the batch shell only; its trap forwards
            if ended_by is None and (self.cancelled or (limit and now >= start + limit)):
                ended_by = "CANCELLED" if self.cancelled else "TIMEOUT"
                _signal(batch.pid, signal.SIGTERM, group=True)
                kill_at = now + KILL_WAIT_S
            if kill_at is not None and now >= kill_at:
                _signal(batch.pid, signal.SIGKILL, group=True)
                kill_at = None
            time.sleep(POLL_S)
        # the job ends with its batch script: whatever it left running goes too, as under Slurm
        _signal(batch.pid, signal.SIGKILL, group=True)
        return batch.returncode, ended_by

    def _job_environment(self) -> dict[str, str]:
        job = self.job
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        # the python running hpc-tf, and its venv's tools, come first: 'python3' in a job means it
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
        nodes = job.node_names
        env.update({
            "SLURM_JOB_ID": job.job_id,
            "SLURM_JOBID": job.job_id,
            "SLURM_JOB_NAME": job.name,
            "SLURM_JOB_NODELIST": ",".join(nodes),
            "SLURM_NODELIST": ",".join(nodes),
            "SLURM_JOB_NUM_NODES": str(job.nodes),
            "SLURM_NNODES": str(job.nodes),
            "SLURM_NTASKS": str(job.nodes * job.tasks_per_node),
            "SLURM_NTASKS_PER_NODE": str(job.tasks_per_node),
            "SLURM_TASKS_PER_NODE": f"{job.tasks_per_node}(x{job.nodes})",
            "SLURM_SUBMIT_DIR": job.submit_dir,
            "SLURM_CLUSTER_NAME": "local",
            "SLURMD_NODENAME": nodes[0],
            "SLURM_GPUS_PER_NODE": str(job.gpus_per_node),
            "CUDA_VISIBLE_DEVICES": ",".join(job.gpu_ids),
            "HPC_TF_NODE_ADDRESS_MAP": ",".join(f"{node}={NODE_ADDRESS}" for node in nodes),
            "HPC_TF_LOCAL_REQUEUE_FILE": str(self.store.requeue_flag(job.job_id)),
        })
        if job.array_job_id is not None:
            env.update({
                "SLURM_ARRAY_JOB_ID": job.array_job_id,
                "SLURM_ARRAY_TASK_ID": str(job.array_task_id),
                "SLURM_ARRAY_TASK_COUNT": str(job.array_task_count),
                "SLURM_ARRAY_TASK_MIN": str(job.array_task_min),
                "SLURM_ARRAY_TASK_MAX": str(job.array_task_max),
            })
        if job.restarts:
            env["SLURM_RESTART_COUNT"] = str(job.restarts)
        return env

    def _cancel(self, _signum: int, _frame: object) -> None:
        self.cancelled = True

    def _update(self, **changes: object) -> None:
        for key, value in changes.items():
            setattr(self.job, key, value)
        self.store.write(self.job)

    def _finish(self, state: str, status: int | None, text: str = "") -> None:
        exit_status, exit_signal = None, 0  # None: the batch script did not run to an end of its own
        if status is not None:
            exit_status, exit_signal = (status, 0) if status >= 0 else (0, -status)
        self._update(state=state, state_text=text, exit_status=exit_status, exit_signal=exit_signal,
                     ended_at=time.time())


def _signal(pid: int, signum: int, *, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, signum)  # the batch shell leads its own process group (start_new_session)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hpc.local.supervisor <job record .json>", file=sys.stderr)
        return 2
    return Supervisor(Path(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
