"""``examples/preemption``: a custom training loop with ``Resumable`` and a ``preemption:`` section, on the
local launcher, as a user launches it.

The warning is emulated the way the local supervisor sends it at ``warning_seconds`` before the time
limit (and Slurm with ``--signal=B:USR1@N``): USR1 to the job's batch shell, here mid-training. The job
must checkpoint at a step the workers agree on, requeue itself, resume from that step and end with
the same final loss as the same loop run uninterrupted — in a job without any preemption or checkpoint
section, where ``hpc_tf_runtime`` is importable too and ``Resumable`` says it does nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.tf

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "preemption"
TIMEOUT_S = 300


def hpc_tf(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_TF_", "SLURM_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run([sys.executable, "-m", "hpc.cli", *args, "--site", "local",
                             "--set", f"runs_dir={project / 'runs'}"],
                            cwd=project, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, f"hpc-tf {' '.join(args)}: {result.stderr}\n{logs(project)}"
    return result


def logs(project: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(project.glob("runs/*/logs/*.out")))


def project_with(directory: Path, spec: dict[str, Any] | None = None) -> Path:
    """The example copied as a user copies it; ``spec`` replaces its job.yaml."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("job.yaml", "train.py"):
        shutil.copy(EXAMPLE / name, directory / name)
    if spec is not None:
        (directory / "job.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return directory


def status(project: Path, job_id: str) -> dict[str, Any]:
    (row,) = json.loads(hpc_tf(project, "status", job_id, "--json").stdout)
    return dict(row)


def wait_for(what: str, check: Any, project: Path) -> Any:
    deadline = time.monotonic() + TIMEOUT_S
    while not (found := check()):
        assert time.monotonic() < deadline, f"no {what} after {TIMEOUT_S} s\n{logs(project)}"
        time.sleep(0.2)
    return found


def test_the_preemption_example_checkpoints_on_the_warning_requeues_and_resumes(tmp_path: Path) -> None:
    spec = yaml.safe_load((EXAMPLE / "job.yaml").read_text(encoding="utf-8"))
    assert spec["preemption"]["enabled"] is True  # the example the README points at has the section

    project = project_with(tmp_path / "warned")
    job_id = hpc_tf(project, "launch", "job.yaml").stdout.strip()
    run_dir = Path(status(project, job_id)["run_dir"])
    chief_log = run_dir / "logs" / f"task-{job_id}-0.out"
    wait_for("step 400", lambda: chief_log.exists() and "worker 0: step 400 " in chief_log.read_text(), project)
    record = json.loads((project / "runs" / ".local-jobs" / f"{job_id}.json").read_text())
    os.kill(record["batch_pid"], signal.SIGUSR1)  # what the supervisor sends warning_seconds before the limit

    final = wait_for("end", lambda: (row := status(project, job_id))["state"] in ("COMPLETED", "FAILED") and row,
                     project)
    assert (final["state"], final["restarts"]) == ("COMPLETED", 1), logs(project)
    batch = (run_dir / "logs" / f"batch-{job_id}.out").read_text()
    assert "hpc-tf: preemption warning, forwarding USR1 to the tasks" in batch
    assert "requeueing the job (restart 1 of at most 3)" in batch
    resumed = re.search(r"hpc-tf: resuming the training loop from checkpoint ckpt-(\d+) at step (\d+)",
                        chief_log.read_text())
    assert resumed is not None, logs(project)
    step = int(resumed.group(2))
    assert int(resumed.group(1)) == step >= 400  # the agreed checkpoint, not the last periodic one (step 0..)
    assert f"worker 0: training steps {step}..2000" in chief_log.read_text()
    result = json.loads((run_dir / "output" / "result.json").read_text())
    assert (result["steps"], result["restarts"]) == (2000, 1)

    # the same loop in a job with no preemption or checkpoint section: it imports the runtime, runs
    # through, says Resumable does nothing, and ends where the resumed run ended, bit for bit
    plain = {key: value for key, value in spec.items() if key not in ("preemption", "checkpoint")}
    project = project_with(tmp_path / "plain", plain)
    plain_id = hpc_tf(project, "launch", "job.yaml", "--wait").stdout.strip()
    plain_dir = Path(status(project, plain_id)["run_dir"])
    text = (plain_dir / "logs" / f"task-{plain_id}-0.out").read_text()
    assert "hpc-tf: Resumable does nothing in this job: it has no preemption or checkpoint section" in text
    assert "worker 0: training steps 0..2000" in text
    reference = json.loads((plain_dir / "output" / "result.json").read_text())
    assert (reference["steps"], reference["restarts"]) == (2000, 0)
    assert reference["loss"] == result["loss"]
