"""One array task's parameters, applied on the compute node (standard library only).

Copied into each stage's ``runtime/`` as ``campaign_task.py``; the bootstrap execs it in place of
the user's command, and it execs the user's command with this task's arguments appended::

    srun … python3 bootstrap.py --resolved … -- python3 campaign_task.py --tasks DIR --stage train -- python3 train.py

The task id is ``$HPC_TF_TASK_OFFSET + $SLURM_ARRAY_TASK_ID`` (an array chunk past the cluster's
MaxArraySize starts its indices at 0 again). ``DIR/<id>/task.json`` holds, per stage, the final
argument list and environment, computed and quoted by nothing: they go from JSON into ``execve``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

PREFIX = "hpc-tf campaign task: "
EXIT_SETUP = 4  # RuntimeSetupError's exit code


class TaskSetupError(Exception):
    pass


def task_id(environ: dict[str, str]) -> int:
    index = environ.get("SLURM_ARRAY_TASK_ID")
    if index is None:
        raise TaskSetupError("SLURM_ARRAY_TASK_ID is not set: this runs inside an array task of a campaign")
    try:
        return int(environ.get("HPC_TF_TASK_OFFSET", "0")) + int(index)
    except ValueError:
        raise TaskSetupError(f"bad array task id {index!r} or offset {environ.get('HPC_TF_TASK_OFFSET')!r}") from None


def load_stage(tasks_dir: str, task: int, stage: str) -> dict[str, object]:
    path = os.path.join(tasks_dir, str(task), "task.json")
    try:
        with open(path, encoding="utf-8") as fh:
            document = json.load(fh)
    except OSError as err:
        raise TaskSetupError(f"cannot read {path}: {err.strerror}") from None
    except (ValueError, RecursionError) as err:
        raise TaskSetupError(f"{path} is not valid JSON: {err}") from None
    stages = document.get("stages", {}) if isinstance(document, dict) else {}
    entry = stages.get(stage) if isinstance(stages, dict) else None
    if not isinstance(entry, dict):
        raise TaskSetupError(f"{path} has no stage {stage!r}")
    return entry


def plan(
    tasks_dir: str, stage: str, command: Sequence[str], environ: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment this task's command runs with."""
    entry = load_stage(tasks_dir, task_id(environ), stage)
    args, env = entry.get("args", []), entry.get("env", {})
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise TaskSetupError("task.json: args must be a list of strings")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise TaskSetupError("task.json: env must map names to strings")
    return [*command, *args], {**environ, **env}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="campaign_task.py",
                                     description="Run COMMAND with this array task's parameters.")
    parser.add_argument("--tasks", required=True, help="the campaign's tasks directory")
    parser.add_argument("--stage", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    try:
        full, env = plan(args.tasks, args.stage, command, dict(os.environ))
        output = env.get("HPC_TF_OUTPUT_DIR")
        if output:
            os.makedirs(output, exist_ok=True)
        print(PREFIX + json.dumps({"task": env.get("HPC_TF_TASK_ID"), "stage": args.stage, "command": full}),
              file=sys.stderr, flush=True)
        os.execvpe(full[0], full, env)
    except TaskSetupError as err:
        print(f"{PREFIX}error: {err}", file=sys.stderr, flush=True)
        return EXIT_SETUP
    except OSError as err:
        print(f"{PREFIX}error: cannot run {command[0]!r}: {err.strerror}", file=sys.stderr, flush=True)
        return EXIT_SETUP
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
