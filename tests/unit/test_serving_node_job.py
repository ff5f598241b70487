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


def test_a_replica_job_serves_as_the_named_replica_with_its_own_script_and_log(tmp_path: Path) -> None:
    plan = plan_slurm_node(site_file(tmp_path, "cpu"), [], repository=tmp_path / "repo", replica="r-0a1b2c")
    assert plan.script_path == tmp_path / "repo" / ".hpc-tf" / "replicas" / "r-0a1b2c.sbatch"
    assert "--replica r-0a1b2c" in plan.script and "#SBATCH --job-name=hpc-tf-replica" in plan.script
    assert f"{tmp_path}/repo/.hpc-tf/replicas/r-0a1b2c/slurm-%j.out" in plan.script
    node = plan_slurm_node(site_file(tmp_path, "cpu"), [], repository=tmp_path / "repo")
    assert "--replica" not in node.script and node.script_path.name == "serve.sbatch"


def test_a_replica_name_that_is_not_the_routers_is_refused_in_one_line(tmp_path: Path) -> None:
    from tests.unit.test_loading import hpc_tf, one_error_line

    result = hpc_tf("serve", "node", "--repository", str(tmp_path / "repo"), "--replica", "../x")
    assert one_error_line(result) and "a replica's name is r- and 6 hex digits" in result.stderr
    assert not (tmp_path / "repo").exists()


def test_replica_jobs_ask_for_serving_replica_gpus_which_the_quota_preflight_counts(tmp_path: Path) -> None:
    """``serving.replica_gpus``: each replica job asks for that many GPUs (the node job none), so that the
    quota preflight and Slurm count them against the account's GPU limits."""
    plan = plan_slurm_node(site_file(tmp_path, "gpu"), ["serving.replica_gpus=1"], repository=tmp_path / "repo",
                           replica="r-0a1b2c")
    assert "#SBATCH --gres=gpu:1" in plan.script and plan.resolved.total_gpus == 1
    node = plan_slurm_node(site_file(tmp_path, "gpu"), ["serving.replica_gpus=1"], repository=tmp_path / "repo")
    assert "--gres" not in node.script and node.resolved.total_gpus == 0
    with pytest.raises(SpecError, match="GPU"):  # a CPU serving partition cannot hold a GPU replica
        plan_slurm_node(site_file(tmp_path, "cpu"), ["serving.replica_gpus=1"], repository=tmp_path / "repo",
                        replica="r-0a1b2c")
