"""One requeue policy (hpc/runtime/node/requeue.py) behind every way a job ends on the node.

The policy is a pure function; the batch driver runs it for a launched job (Slurm and the local
launcher) and for a ``submit_function`` job's teardown. Both entry points are run here in bash,
with stand-ins for srun and scontrol, and must requeue exactly when the policy says so.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from _batch_fixtures import install_run_dir

from hpc.functions import plan_function
from hpc.functions.plan import requeue_lines
from hpc.render.script import render_script
from hpc.resolve import resolve
from hpc.resources import data_dir
from hpc.runtime.node.requeue import (
    REQUEUE_EXIT_CODE,
    decide,
    may_start,
    requeue_reason,
    restart_count,
    slurm_requeued,
)
from hpc.site.load import load_site
from hpc.spec import load_spec_text

CHECKPOINTS = "/scratch/run/output/checkpoints"


@pytest.mark.parametrize(("status", "reason"), [
    (REQUEUE_EXIT_CODE, "the workers saved a checkpoint and asked to be requeued"),
    (137, "a task was killed by signal 9 (a lost worker or node)"),
    (129, "a task was killed by signal 1 (a lost worker or node)"),
    (192, "a task was killed by signal 64 (a lost worker or node)"),
    (0, None), (1, None), (2, None), (128, None), (193, None),
    (253, None),  # srun: out of memory
])
def test_requeue_reason(status: int, reason: str | None) -> None:
    assert requeue_reason(status) == reason


@pytest.mark.parametrize(("status", "restarts", "requeue"), [
    (REQUEUE_EXIT_CODE, 0, True), (REQUEUE_EXIT_CODE, 1, True), (REQUEUE_EXIT_CODE, 2, False),
    (137, 1, True), (137, 2, False), (0, 0, False), (1, 0, False), (253, 0, False),
])
def test_decide_requeues_up_to_max_restarts(status: int, restarts: int, requeue: bool) -> None:
    decision = decide(status, restarts, 2, CHECKPOINTS)
    assert decision.requeue is requeue
    if requeue:
        assert decision.message == f"{requeue_reason(status)}: requeueing the job (restart {restarts + 1} of at most 2)"
    elif requeue_reason(status):
        assert decision.message is not None and "not requeueing; the newest checkpoint is in " + CHECKPOINTS \
            in decision.message
    else:
        assert decision.message is None


def test_a_run_beyond_the_cap_does_not_start() -> None:
    assert may_start(0, 2, CHECKPOINTS) == (True, None)
    assert may_start(2, 2, CHECKPOINTS)[0] is True
    allowed, message = may_start(3, 2, CHECKPOINTS)
    assert not allowed and message is not None and "more than preemption.max_restarts (2)" in message


def test_restart_count_and_slurms_own_requeue() -> None:
    assert restart_count({}) == 0 and restart_count({"SLURM_RESTART_COUNT": "2"}) == 2
    assert slurm_requeued(1, 0) and not slurm_requeued(0, 0) and not slurm_requeued(None, 0)


# ---------------------------------------------------------------- both entry points, in bash

STUB = '#!/bin/bash\necho "$(basename "$0") $*" >> "$STUB_LOG"\n'
PREEMPTION = {"enabled": True, "warning_seconds": 120, "max_restarts": 2}


def _stubs(tmp_path: Path, srun_status: int) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    for name, body in (("srun", f"{STUB}exit {srun_status}\n"), ("scontrol", STUB), ("sbatch", STUB)):
        (directory / name).write_text(body, encoding="utf-8")
        (directory / name).chmod(0o755)
    return directory


def _requeued(tmp_path: Path, script: str, stubs: Path, restarts: int) -> bool:
    log = tmp_path / "calls.log"
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": str(restarts),
           "STUB_LOG": str(log), "HOME": str(tmp_path)}
    subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=False)
    return "scontrol requeue 42" in (log.read_text(encoding="utf-8") if log.exists() else "")


def _launched(tmp_path: Path) -> str:
    """A job as ``hpc-tf launch`` renders it, run directory in place."""
    text = ("name: p\ncommand: [python, train.py]\nresources: {time: '1:00:00'}\n"
            "preemption: {enabled: true, warning_seconds: 120, max_restarts: 2}\n")
    environ = {"HOME": str(tmp_path), "USER": "alice"}
    site = load_site("sandbox", (f"runs_dir={tmp_path / 'runs'}",), environ)
    job = resolve(load_spec_text(text, "job.yaml", tmp_path), site, "p-run", environ)
    install_run_dir(job)
    return render_script(job)


def _submitted_function(tmp_path: Path, status: int) -> str:
    """submitit's batch script ends with its srun line, then hpc-tf's teardown."""
    plan = plan_function(print, {"name": "fn", "resources": {"time": "1:00:00"}, "preemption": PREEMPTION},
                         "sandbox", [f"runs_dir={tmp_path / 'runs'}"], environ={"HOME": str(tmp_path), "USER": "a"})
    install_run_dir(plan.job)
    return "\n".join([f"srun python -m submitit.core._submit; (exit {status})", *requeue_lines(plan.job)])


@pytest.mark.parametrize("restarts", [0, 2])
@pytest.mark.parametrize("status", [REQUEUE_EXIT_CODE, 137, 143, 0, 1, 253])
def test_a_launched_job_and_a_function_job_requeue_under_the_same_policy(
    tmp_path: Path, status: int, restarts: int
) -> None:
    expected = decide(status, restarts, 2, CHECKPOINTS).requeue
    launched, function = tmp_path / "launched", tmp_path / "function"
    launched.mkdir()
    function.mkdir()
    assert _requeued(launched, _launched(launched), _stubs(launched, status), restarts) is expected
    assert _requeued(function, _submitted_function(function, status), _stubs(function, 0), restarts) is expected


SLURM_COMMAND = re.compile(r"\b(sbatch|squeue|scontrol|sacct)\b")


def test_the_templates_contain_no_slurm_command() -> None:
    """Submit-side Slurm syntax lives in hpc/scheduler/, node-side in the runtime (slurm_node.py).
    Comments may name commands (and ``#SBATCH`` lines are directives): only script lines count."""
    found = []
    for template in sorted(data_dir("templates").glob("*.j2")):
        text = re.sub(r"\{#.*?#\}", "", template.read_text(encoding="utf-8"), flags=re.DOTALL)
        for number, line in enumerate(text.splitlines(), 1):
            code = line.strip()
            if code.startswith("#"):
                continue
            if SLURM_COMMAND.search(code):
                found.append(f"{template.name}:{number}: {code}")
    assert found == []
