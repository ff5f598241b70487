"""The serving-node job is resolved like every other job: the site's partitions and their limits apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc.errors import SpecError
from hpc.serving.slurm_node import plan_slurm_node

SITE = """\
launcher: slurm
partitions:
  gpu: {gpus_per_node: 4, cpus_per_node: 8, max_time: "1-00:00:00"}
  cpu: {gpus_per_node: 0, cpus_per_node: 8, max_time: "2:00:00"}
default_partition: gpu
cpu_partition: cpu
runs_dir: runs
python: /usr/bin/python3
serving: {partition: %s}
"""


def site_file(tmp_path: Path, partition: str) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(SITE % partition)
    return str(path)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


def test_a_serving_partition_the_site_does_not_have_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="has no partition 'serving'; choose one of: gpu, cpu"):
        plan_slurm_node(site_file(tmp_path, "serving"), [], repository=tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_the_serving_partitions_time_limit_applies(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"exceeds the time limit of partition 'cpu' \(2:00:00\)"):
        plan_slurm_node(site_file(tmp_path, "cpu"), [], repository=tmp_path / "repo", time_limit="3:00:00")
    plan = plan_slurm_node(site_file(tmp_path, "cpu"), [], repository=tmp_path / "repo", time_limit="1:00:00")
    assert "#SBATCH --partition=cpu" in plan.script and "#SBATCH --time=01:00:00" in plan.script
