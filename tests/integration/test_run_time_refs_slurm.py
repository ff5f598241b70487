"""``${NAME}`` references on the real cluster: the batch script expands them on the node (the job's id,
a variable of the submitting environment), in env values, workdir, output_dir, checkpoint.dir and
command arguments; a hostile value of a referenced variable reaches the task as text and runs nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    from tests.conftest import JobStatus, SlurmCluster

pytestmark = pytest.mark.slurm

Run = Callable[..., subprocess.CompletedProcess[str]]

# what a neighbour's script or a careless export could leave in a variable the spec refers to
HOSTILE = "$(touch PWNED-1); touch PWNED-2 `touch PWNED-3` ${HOME} 'q' \"d\" \\ *"
# each task records what it got, in its working directory (no $ in the code: nothing to expand)
RECORD = ("import json, os, sys; open('task-%s.json' % os.environ['SLURM_PROCID'], 'w').write(json.dumps("
          "{'argv': sys.argv[1:], 'cwd': os.getcwd(), 'job': os.environ['SLURM_JOB_ID'], "
          "'DATA': os.environ['DATA'], 'EVIL': os.environ['EVIL'], 'out': os.environ['HPC_TF_OUTPUT_DIR'], "
          "'hooks': json.loads(os.environ['HPC_TF_HOOKS'])}))")


def test_references_expand_on_the_node_and_hostile_values_stay_text(
    researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster, wait_for_job: Callable[..., JobStatus]
) -> None:
    work = scratch_dir / "work"
    work.mkdir()
    spec = {
        "name": "refs",
        "command": [sys.executable, "-c", RECORD, "${SLURM_JOB_ID}", "id-${SLURM_JOB_ID}.ckpt", "${HOSTILE}",
                    "$$HOME"],
        "workdir": "${WORK}",
        "output_dir": "${WORK}/out-${SLURM_JOB_ID}",
        "checkpoint": {"dir": "${WORK}/ckpt-${SLURM_JOB_ID}", "every_steps": 100},
        "env": {"DATA": "${WORK}/data-${SLURM_JOB_ID}", "EVIL": "${HOSTILE}"},
        "resources": {"nodes": 2, "tasks_per_node": 1, "partition": "gpu", "time": "2:00"},
        "tf": {"strategy": "none"},
    }
    (scratch_dir / "job.yaml").write_text(yaml.safe_dump(spec))
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)

    launched = researcher_run(
        ["hpc-tf", "launch", "job.yaml", "--site", "sandbox", "--set", f"runs_dir={scratch_dir / 'runs'}",
         "--set", f"python={sys.executable}"],
        cwd=scratch_dir, env={"WORK": str(work), "HOSTILE": HOSTILE}, timeout=120)
    job_id = launched.stdout.strip()
    assert wait_for_job(job_id).state == "COMPLETED"

    records = [json.loads((work / f"task-{rank}.json").read_text()) for rank in (0, 1)]
    for record in records:
        assert record["job"] == job_id
        assert record["argv"] == [job_id, f"id-{job_id}.ckpt", HOSTILE, "$HOME"]
        assert record["cwd"] == str(work)
        assert record["DATA"] == f"{work}/data-{job_id}"
        assert record["EVIL"] == HOSTILE
        assert record["out"] == f"{work}/out-{job_id}"
        # the runtime checkpoints where the batch script expanded checkpoint.dir, not in resolved.json's text
        assert record["hooks"]["preemption"]["checkpoint_dir"] == f"{work}/ckpt-{job_id}"
    assert (work / f"out-{job_id}").is_dir()  # created by the batch script, under its expanded name
    assert not list(scratch_dir.rglob("PWNED*")), "a hostile value was executed"
    assert not list(Path(slurm_cluster.scratch_dir).glob("PWNED*"))
