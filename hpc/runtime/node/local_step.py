"""``srun`` for an emulated local allocation: start every task of one job step as a local process.

The local launcher (``hpc-tf launch --site local``) runs the same batch script as a Slurm job, with
this program where the script would call srun. It reads the allocation from the variables the local
supervisor set for the batch script, as srun reads its allocation from Slurm:

    SLURM_JOB_ID, SLURM_JOB_NODELIST (node names, comma-separated), SLURM_NTASKS_PER_NODE,
    SLURM_GPUS_PER_NODE and CUDA_VISIBLE_DEVICES (the job's GPU ids, split into per-node blocks)

and gives each task what a task of a real step sees: SLURM_PROCID/LOCALID/NODEID, the step's node
list and task counts, SLURMD_NODENAME, SLURM_GTIDS, and its node's GPU ids in CUDA_VISIBLE_DEVICES,
so the bootstrap runs unchanged. Like ``srun --kill-on-bad-exit=1``: the first task that fails stops
the others, and its exit code (128 + signal when killed) is the step's. USR1, USR2, TERM, INT and HUP
are passed on to every task. Standard library only: it runs with the job's python.

    python3 <run_dir>/runtime/local_step.py --output=LOGS/task-%j-%t.out -- COMMAND ARGS...

(``launchers/local_step.py``, copied into the run directory beside this package, calls :func:`main`.)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from .argv import parse_with_command

FORWARDED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
KILL_WAIT_S = 10.0  # after TERM, a task that fails to stop is killed, as Slurm's KillWait does


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        environments = task_environments(os.environ)
    except ValueError as err:
        print(f"local_step: error: {err}", file=sys.stderr)
        return 1
    return run_step(args.command, environments, args.output, os.environ["SLURM_JOB_ID"])


def task_environments(environ: Mapping[str, str]) -> list[dict[str, str]]:
    """Each task's environment, rank order (block distribution, as srun's default)."""
    try:
        job_id = environ["SLURM_JOB_ID"]
        nodes = [n for n in environ["SLURM_JOB_NODELIST"].split(",") if n]
        tasks_per_node = int(environ["SLURM_NTASKS_PER_NODE"])
    except KeyError as err:
        raise ValueError(f"{err.args[0]} is not set: run inside a job of hpc-tf's local launcher") from None
    gpus_per_node = int(environ.get("SLURM_GPUS_PER_NODE") or 0)
    devices = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if len(devices) < gpus_per_node * len(nodes):
        raise ValueError(
            f"the job has {len(devices)} GPU ids ({environ.get('CUDA_VISIBLE_DEVICES', '')!r}) "
            f"for {len(nodes)} node(s) x {gpus_per_node} GPU(s)"
        )
    step = {
        "SLURM_STEP_ID": "0",
        "SLURM_STEPID": "0",
        "SLURM_STEP_NODELIST": ",".join(nodes),
        "SLURM_STEP_NUM_NODES": str(len(nodes)),
        "SLURM_STEP_NUM_TASKS": str(len(nodes) * tasks_per_node),
        "SLURM_STEP_TASKS_PER_NODE": f"{tasks_per_node}(x{len(nodes)})",
        "SLURM_NTASKS": str(len(nodes) * tasks_per_node),
        "SLURM_DISTRIBUTION": "block",
    }
    environments = []
    for node_index, node in enumerate(nodes):
        node_gpus = devices[node_index * gpus_per_node:(node_index + 1) * gpus_per_node]
        first_rank = node_index * tasks_per_node
        for local_rank in range(tasks_per_node):
            env = {**environ, **step,
                   "SLURM_JOB_ID": job_id,
                   "SLURM_PROCID": str(first_rank + local_rank),
                   "SLURM_LOCALID": str(local_rank),
                   "SLURM_NODEID": str(node_index),
                   "SLURMD_NODENAME": node,
                   "SLURM_GTIDS": ",".join(str(first_rank + k) for k in range(tasks_per_node)),
                   "CUDA_VISIBLE_DEVICES": ",".join(node_gpus)}
            if gpus_per_node:
                env["SLURM_GPUS_ON_NODE"] = str(gpus_per_node)
            environments.append(env)
    return environments


def log_path(pattern: str, job_id: str, env: Mapping[str, str]) -> str:
    """One task's log file."""
    return expand_filename_pattern(pattern, {**filename_values(job_id, env), "t": env["SLURM_PROCID"],
                                             "n": env["SLURM_NODEID"], "N": env["SLURMD_NODENAME"]})


def filename_values(job_id: str, env: Mapping[str, str]) -> dict[str, str]:
    """The job's parts of a filename pattern: ``%j``, and in an array ``%A`` (array id) and ``%a`` (index)."""
    values = {"j": job_id}
    if "SLURM_ARRAY_JOB_ID" in env:
        values.update(A=env["SLURM_ARRAY_JOB_ID"], a=env.get("SLURM_ARRAY_TASK_ID", ""))
    return values


def expand_filename_pattern(pattern: str, values: Mapping[str, str]) -> str:
    """Slurm's filename pattern: ``%j`` job id, ``%t`` rank, … from ``values``; ``%%`` is a ``%``."""
    values = {**values, "%": "%"}
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%" and i + 1 < len(pattern) and pattern[i + 1] in values:
            out.append(values[pattern[i + 1]])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


def run_step(command: Sequence[str], environments: Sequence[Mapping[str, str]], output: str, job_id: str) -> int:
    tasks: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        for task in tasks:
            if task.poll() is None:
                task.send_signal(signum)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    for env in environments:
        path = log_path(output, job_id, env)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "ab") as log:  # appended, as the batch log is: a requeued run adds to it
            tasks.append(subprocess.Popen(list(command), env=dict(env), stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT))
    first_failure: int | None = None
    stop_deadline: float | None = None
    while any(task.returncode is None for task in tasks):
        for rank, task in enumerate(tasks):
            if task.returncode is not None:
                continue
            returned = task.poll()
            if returned is None:
                continue
            code = returned if returned >= 0 else 128 - returned
            if code != 0 and first_failure is None:
                first_failure = code
                print(f"local_step: task {rank}: exited with exit code {code}; stopping the others",
                      file=sys.stderr, flush=True)
                forward(signal.SIGTERM, None)
                stop_deadline = time.monotonic() + KILL_WAIT_S
        if stop_deadline is not None and time.monotonic() > stop_deadline:
            for task in tasks:
                if task.poll() is None:
                    task.kill()
        time.sleep(0.05)
    return first_failure or 0


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="local_step.py", description="srun for hpc-tf's local launcher.")
    parser.add_argument("--output", required=True, help="each task's log: a Slurm filename pattern (%%j, %%t)")
    return parse_with_command(parser, argv)
