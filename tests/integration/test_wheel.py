"""The built wheel is complete: templates, launchers and site configs ship inside it.

Builds the wheel, installs it into a fresh venv and renders a job from a directory outside the
repository, so nothing can be found by accident in the checkout.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_installs_and_renders_outside_the_repo(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(REPO)],
        check=True, timeout=300,
    )
    (wheel,) = dist.glob("hpc_tf-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=600)

    elsewhere = tmp_path / "project"
    elsewhere.mkdir()
    (elsewhere / "job.yaml").write_text(
        "name: wheel-check\ncommand: python train.py\nresources: {nodes: 2, gpus_per_node: 2}\n"
    )
    render = subprocess.run(
        [str(env_dir / "bin" / "hpc-tf"), "render", "job.yaml", "--site", "sandbox"],
        cwd=elsewhere, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "USER": "alice"},
    )
    assert render.returncode == 0, render.stderr
    assert "#SBATCH --gres=gpu:2" in render.stdout
    assert f"cd {elsewhere}" in render.stdout

    where = subprocess.run(
        [str(python), "-c", "import hpc.resources as r; print(r.data_dir('launchers')); "
         "print(r.data_dir('site_configs')); print(r.data_dir('templates'))"],
        cwd=elsewhere, capture_output=True, text=True, check=True,
    )
    for line in where.stdout.split():
        assert line.startswith(str(env_dir)), f"data dir outside the installed wheel: {line}"
        assert any(Path(line).iterdir())
