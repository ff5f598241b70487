"""The task entry point: Slurm env → GPUs, TF_CONFIG, hooks → exec the user's command.

    srun ... python3 -S <run_dir>/runtime/bootstrap.py --resolved <run_dir>/resolved.json -- CMD ARGS...

The process is replaced by CMD (same pid, so Slurm's signals reach the user's code).
Before that, one line goes to stderr so the task's log shows what was set::

    hpc-tf bootstrap: {"rank": 0, "node": "node1", "address": "node1:20012", "env": {...}, ...}

Errors (outside a step, a malformed variable, no GPUs where some were asked for) print
``hpc-tf bootstrap: error: ...`` and exit with RuntimeSetupError's exit code.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Mapping, Sequence

from ._errors import HpcTfError, RuntimeSetupError
from .settings import RuntimeSettings, load_settings
from .task_env import TaskPlan, plan_task

RECORD_PREFIX = "hpc-tf bootstrap: "

SITE_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "sitedir")


def main(argv: Sequence[str] | None = None) -> int:
    resolved, command = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(resolved) if resolved else RuntimeSettings()
        plan = plan_task(os.environ, settings, site_dir=SITE_DIR)
        if plan.address is not None:
            _check_port_free(plan.address, node=plan.step.node, rank=plan.step.rank)
        print(RECORD_PREFIX + json.dumps(task_record(plan, command)), file=sys.stderr, flush=True)
        _exec(command, {**os.environ, **plan.env})
    except HpcTfError as err:
        print(f"{RECORD_PREFIX}error: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    return 0  # not reached: _exec replaces the process


def task_record(plan: TaskPlan, command: Sequence[str]) -> dict[str, object]:
    step = plan.step
    return {
        "job_id": step.job_id,
        "step_id": step.step_id,
        "rank": step.rank,
        "local_rank": step.local_rank,
        "node": step.node,
        "hostname": os.uname().nodename,  # where the task really runs, to compare with "node"
        "address": plan.address,
        # what Slurm handed the task, under the variable it came in (ROCR_VISIBLE_DEVICES on AMD nodes)
        f"inherited_{'rocr' if plan.gpus.amd else 'cuda'}_visible_devices": (
            None if plan.gpus.inherited is None else ",".join(plan.gpus.inherited)
        ),
        "env": plan.env,
        "command": list(command),
    }


def _parse_args(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The resolved job's path and the command. The batch script's own form, ``--resolved FILE --
    COMMAND...``, is read directly: argparse would cost every task ~4 ms of imports."""
    if len(argv) > 3 and argv[0] == "--resolved" and argv[2] == "--":
        return argv[1], list(argv[3:])
    import argparse  # anything else: --help, other spellings, usage errors

    from .argv import parse_with_command

    parser = argparse.ArgumentParser(
        prog="bootstrap.py", description="Set up one Slurm task for TensorFlow, then exec COMMAND."
    )
    parser.add_argument("--resolved", help="the resolved job (resolved.json)")
    args = parse_with_command(parser, argv)
    return args.resolved, args.command


def _check_port_free(address: str, *, node: str, rank: int) -> None:
    """Fail now, with a clear message, if another process holds this task's port."""
    port = int(address.rpartition(":")[2])
    import socket  # only tasks with a TF address need it (2-3 ms of every task's start)

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # gRPC sets SO_REUSEADDR too, so only a live listener counts as taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
            raise RuntimeSetupError(
                f"port {port} on {node} (rank {rank}) is already in use",
                hint="another job or a leftover process holds it; choose another runtime port_range",
            ) from err


def _exec(command: Sequence[str], env: Mapping[str, str]) -> None:
    try:
        os.execvpe(command[0], list(command), dict(env))
    except OSError as err:
        raise RuntimeSetupError(
            f"cannot run {command[0]!r}: {err.strerror}",
            hint="check the command and the PATH of the job's environment",
        ) from err
