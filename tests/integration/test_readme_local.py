"""README.md's blocks that need no cluster, run on the embedded default (the local launcher) as a new user
runs them, in a fresh HOME. Which test runs which README block: tests/unit/test_readme_coverage.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests._readme import README, assert_shows, block, readme_argv

REPO = Path(__file__).resolve().parents[2]
SPEC = "name: resnet"  # the first line of the README's job spec block


def hpc_tf(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """argv (``hpc-tf …``) run with this venv's hpc-tf, HOME in ``cwd``, no hpc-tf or Slurm settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_TF_", "SLURM_"))}
    env.update(HOME=str(cwd / "home"), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}")
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


def test_a_campaign_on_the_local_default_says_it_needs_slurm_as_the_readme_warns(tmp_path: Path) -> None:
    """The README's campaign command on the embedded default (local) is refused in one line, and the
    Campaigns section says so before the command (until campaigns run locally)."""
    (tmp_path / "examples").mkdir()
    shutil.copytree(REPO / "examples" / "quickstart", tmp_path / "examples" / "quickstart")
    refused = hpc_tf(readme_argv("hpc-tf campaign run examples/quickstart/campaign.yaml"), tmp_path)
    assert refused.returncode == 1 and "campaigns need Slurm" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "home" / "hpc-tf-runs").exists()
    readme = README.read_text(encoding="utf-8")
    section = " ".join(readme[readme.index("### Campaigns"):readme.index("hpc-tf campaign run ")].split())
    assert "they need a Slurm site" in section and "`campaigns need Slurm`" in section, section


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
