"""README.md's blocks that need no cluster, run on the embedded default (the local launcher) as a new user
runs them, in a fresh HOME. Which test runs which README block: tests/unit/test_readme_coverage.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from hpc.metrics import read_metrics
from tests._readme import assert_shows, block, readme_argv

REPO = Path(__file__).resolve().parents[2]
SPEC = "name: resnet"  # the first line of the README's job spec block


def hpc_tf(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """argv (``hpc-tf …``) run with this venv's hpc-tf, HOME in ``cwd``, no hpc-tf or Slurm settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_TF_", "SLURM_", "CUDA_"))}
    env.update(HOME=str(cwd / "home"), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)


def test_a_misspelt_key_is_refused_as_the_readme_shows(tmp_path: Path) -> None:
    """The README's spec with one typo (gpus_per_node → gpu_per_node): refused with the file, line, field
    and the right key, nothing written."""
    (tmp_path / "job.yaml").write_text(block(SPEC).text.replace("gpus_per_node:", "gpu_per_node:"))
    refused = hpc_tf(readme_argv("hpc-tf launch job.yaml"), tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert_shows("hpc-tf: error: job.yaml:6: resources.gpu_per_node: unknown key (did you mean 'gpus_per_node'?); "
                 "allowed here: …", refused.stderr)
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "home" / ".local").exists() and not any(tmp_path.glob("**/job.sbatch"))


def test_the_preemption_block_renders_the_warning_and_the_requeue(tmp_path: Path) -> None:
    """The README's preemption snippet added to the quickstart's job.yaml: Slurm is asked for USR1 300 s before
    the end and to requeue. (The warning, the checkpoint and the exact resume themselves:
    tests/integration/test_preemption_*.py.)"""
    snippet = yaml.safe_load(block("preemption: {enabled: true, warning_seconds: 300, max_restarts: 3}").text)
    spec = {**yaml.safe_load((REPO / "examples" / "quickstart" / "job.yaml").read_text()), **snippet}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    dry = hpc_tf(readme_argv("hpc-tf launch job.yaml --dry-run"), tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "#SBATCH --signal=B:USR1@300" in dry.stdout and "#SBATCH --requeue" in dry.stdout
    assert "nothing submitted" in dry.stderr


@pytest.mark.tf
def test_the_readme_campaign_runs_on_the_local_default_and_names_the_best(tmp_path: Path) -> None:
    """The first-command section's sweep, as shipped, on the embedded default: the 12 TensorFlow trainings of
    examples/quickstart/campaign.yaml run as an emulated array, taking turns on this machine (it lends them
    no GPUs); every task's recorded loss is exactly its Keras History (train.py's own history.json), and
    results names the task with the lowest loss."""
    (tmp_path / "examples").mkdir()
    shutil.copytree(REPO / "examples" / "quickstart", tmp_path / "examples" / "quickstart")

    def readme(text: str, **placeholders: str) -> subprocess.CompletedProcess[str]:
        done = hpc_tf(readme_argv(text, **placeholders), tmp_path)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return done

    launched = readme("hpc-tf campaign run examples/quickstart/campaign.yaml")
    campaign = launched.stdout.strip()
    assert Path(campaign).parent == tmp_path / "home" / "hpc-tf-runs", launched.stdout
    assert "this machine lends no GPUs: GPU tasks take turns" in " ".join(launched.stderr.split())
    deadline = time.monotonic() + 600
    while "COMPLETED" not in (shown := readme("hpc-tf campaign status DIR", DIR=campaign)).stdout or any(
            state in shown.stdout for state in ("PENDING", "RUNNING")):
        assert time.monotonic() < deadline, shown.stdout
        time.sleep(3)
    manifest = json.loads((Path(campaign) / "manifest.json").read_text())
    assert [t["stages"]["main"]["attempts"][-1]["state"] for t in manifest["tasks"]] == ["COMPLETED"] * 12, shown
    spans = []
    for task in manifest["tasks"]:
        out = Path(task["stages"]["main"]["output_dir"])
        history = json.loads((out / "history.json").read_text())
        assert len(history["loss"]) == task["params"]["epochs"]  # its own --epochs reached train.py
        # recorded with no code in train.py, into the task's own file: exactly what Keras' History holds
        assert [p.value for p in read_metrics(out / "metrics.jsonl").series("loss")] == history["loss"]
        job = json.loads((tmp_path / "home" / "hpc-tf-runs" / ".local-jobs" /
                          f"{task['stages']['main']['attempts'][-1]['raw_id']}.json").read_text())
        spans.append((job["started_at"], job["ended_at"]))
    assert all(end <= start for (_, end), (start, _) in pairwise(sorted(spans)))  # one task at a time
    results = readme("hpc-tf campaign results DIR", DIR=campaign)
    assert results.stdout.count("COMPLETED") == 12, results.stdout
    best = re.search(r"best: task (\d+) \(", results.stderr)
    assert best, results.stderr
    losses = {t["id"]: min(json.loads((Path(t["stages"]["main"]["output_dir"]) / "history.json").read_text())["loss"])
              for t in manifest["tasks"]}
    assert losses[int(best.group(1))] == min(losses.values())


BEFORE_THE_TASKS = "environment: {module_purge: true, module_use: [~/modulefiles], modules: [gcc/12, cuda/12.2]}"


def test_the_before_the_tasks_block_renders_modules_setup_steps_and_srun_options(tmp_path: Path) -> None:
    """The README's modules, setup and srun_extra snippet on its job spec, rendered for the sandbox cluster:
    purge, use, then loads; the job line by eval, the node line once per node; srun_extra in full on the
    tasks' srun; a managed srun option refused as the README shows. (Where and how often steps run, and a
    failing step: tests/integration/test_setup_steps_slurm.py.)"""
    spec = {**yaml.safe_load(block(SPEC).text), **yaml.safe_load(block(BEFORE_THE_TASKS).text)}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    done = hpc_tf(["hpc-tf", "render", "job.yaml", "--site", "sandbox"], tmp_path)
    assert done.returncode == 0, done.stderr
    script = done.stdout
    in_order = ("module purge ||", "module use ", "module load gcc/12 ", "module load cuda/12.2",
                "eval 'source ~/env.sh' ||", "bash -c 'cp -r data $SLURM_TMPDIR/' ||")
    at = [script.index(text) for text in in_order]
    assert at == sorted(at), script
    assert "srun --nodes=2 --ntasks=2 --ntasks-per-node=1 bash -c 'cp -r data $SLURM_TMPDIR/'" in script
    assert "--mpi=pmi2 --cpu-bind=cores --label --unbuffered" in script
    spec["srun_extra"] = ["-n 4"]
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    refused = hpc_tf(["hpc-tf", "render", "job.yaml", "--site", "sandbox"], tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "'-n 4' is --ntasks, which hpc-tf manages: the tasks' layout comes from resources (" in refused.stderr
