"""``hpc-tf import`` against the real sbatch: a batch script and the script its draft renders to, both
submitted held, ask Slurm for the same allocation (as ``scontrol show job`` reports it)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = pytest.mark.slurm

Run = Callable[..., subprocess.CompletedProcess[str]]

ORIGINAL = """#!/bin/bash
#SBATCH --job-name=imported
#SBATCH -N 2
#SBATCH --ntasks-per-node=2
#SBATCH --gres=gpu:2
#SBATCH -c 2
#SBATCH --mem=1G
#SBATCH -t 5:00
#SBATCH -p gpu
#SBATCH -A lab
#SBATCH --comment=imported-from-sbatch
#SBATCH --output=%x-%j.out

export GREETING=hello
srun python train.py --epochs 1
"""
# memory per GPU, GPUs per task, srun's options read from the environment and the srun line
PER_GPU = (ORIGINAL.replace("#SBATCH --gres=gpu:2\n", "#SBATCH --gpus-per-task=1\n")
           .replace("--mem=1G", "--mem-per-gpu=256M")
           .replace("export GREETING=hello\n", "export SLURM_CPU_BIND=cores\n")
           .replace("srun python", "srun -l -u python"))
# what both jobs must ask for alike; the script's name, paths and times differ by design
COMPARED = ("JobName", "NumNodes", "NumTasks", "NumCPUs", "CPUs/Task", "ReqTRES", "TRES", "TresPerNode",
            "TresPerTask", "MinMemoryNode", "MemPerTres", "TimeLimit", "Partition", "Account", "QOS", "Comment",
            "Features", "Contiguous")


def job_fields(job_id: str) -> dict[str, str]:
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30,
                           check=True).stdout
    return dict(word.split("=", 1) for word in shown.split() if "=" in word)


@pytest.mark.parametrize("script", [ORIGINAL, PER_GPU], ids=["mem-gres", "mem-per-gpu"])
def test_the_draft_asks_slurm_for_what_the_script_asked(
    script: str, researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster
) -> None:
    (scratch_dir / "train.sbatch").write_text(script)
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    researcher_run(["hpc-tf", "import", "train.sbatch", "-o", "job.yaml"], cwd=scratch_dir)
    rendered = researcher_run(["hpc-tf", "render", "job.yaml", "--site", "sandbox"], cwd=scratch_dir).stdout
    (scratch_dir / "rendered.sbatch").write_text(rendered)
    if script is PER_GPU:  # the srun options, from the line and from the environment, on the tasks' srun
        assert "--cpu-bind=cores --label --unbuffered" in rendered, rendered
    subprocess.run(["chown", slurm_cluster.user, str(scratch_dir / "rendered.sbatch")], check=True)
    jobs = [researcher_run(["sbatch", "--hold", "--parsable", name], cwd=scratch_dir).stdout.strip().split(";")[0]
            for name in ("train.sbatch", "rendered.sbatch")]
    try:
        original, imported = (job_fields(job_id) for job_id in jobs)
    finally:
        researcher_run(["scancel", *jobs], cwd=scratch_dir, check=False)
    assert {"NumNodes", "NumTasks", "Partition", "Account", "TimeLimit", "Comment"} <= set(original), original
    assert original["Comment"] == "imported-from-sbatch"  # the sbatch_extra entry reached Slurm
    if script is PER_GPU:  # compared below: not absent from both
        assert "256" in original.get("MemPerTres", "") and "gpu" in original.get("TresPerTask", ""), original
    differ = {key: (original.get(key), imported.get(key)) for key in COMPARED if original.get(key) != imported.get(key)}
    assert not differ, differ
