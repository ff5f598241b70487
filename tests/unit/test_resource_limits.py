"""Resource counts, time limits and memory: what Slurm would take literally is refused or made explicit.

Slurm reads ``--time=0`` as "no limit" and ``--mem=0`` as "all of the node's memory"; an absurd count
is rendered and submitted as written. Each case is one line naming the field, the limit and the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpc.cli import app
from hpc.errors import SpecError
from hpc.render.directives import read_directives
from hpc.render.script import render_script
from hpc.resolve import ResolvedJob, resolve
from hpc.site.load import load_site
from hpc.spec import load_spec_text

BASE = Path("/home/alice/project")
ALICE = {"HOME": "/home/alice", "USER": "alice"}


def spec_problems(resources: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(f"name: a\ncommand: x\nresources: {resources}\n", "job.yaml", BASE)
    return [str(p) for p in info.value.problems]


def resolved(resources: str, site: str = "sandbox") -> ResolvedJob:
    loaded = load_spec_text(f"name: a\ncommand: x\nresources: {resources}\n", "job.yaml", BASE)
    return resolve(loaded, load_site(site, environ=ALICE), "r", ALICE)


def resolve_problems(resources: str, site: str = "sandbox") -> list[str]:
    with pytest.raises(SpecError) as info:
        resolved(resources, site)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("resources", "field", "limit"),
    [
        ("{tasks_per_node: 1000000000}", "tasks_per_node", "1024"),
        ("{nodes: 1000000000}", "nodes", "100000"),
        ("{gpus_per_node: 1000000000}", "gpus_per_node", "64"),
        ("{gpus_per_task: 1000000000}", "gpus_per_task", "64"),
        ("{cpus_per_task: 1000000000}", "cpus_per_task", "1024"),
    ],
)
def test_absurd_counts_are_refused_naming_the_limit(resources: str, field: str, limit: str) -> None:
    (message,) = spec_problems(resources)
    assert message.startswith(f"job.yaml:3: resources.{field}:")
    assert f"at most {limit}" in message


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ("{tasks_per_node: 64, gpus_per_task: 2}", "128 GPUs on each node"),
        ("{tasks_per_node: 512, cpus_per_task: 512}", "262144 CPUs on each node"),
    ],
)
def test_per_node_totals_are_bounded_too(resources: str, expected: str) -> None:
    (message,) = spec_problems(resources)
    assert expected in message and "at most" in message


def test_tasks_beyond_the_partitions_cpus_are_refused_by_the_site() -> None:
    (message,) = resolve_problems("{tasks_per_node: 100}")
    assert message.startswith("job.yaml:3: resources.tasks_per_node:")
    assert "100 tasks" in message and "8 CPUs of a 'gpu' node" in message


def test_largest_real_requests_still_pass() -> None:
    spec = load_spec_text("name: a\ncommand: x\nresources: {nodes: 4096, tasks_per_node: 8, gpus_per_node: 8, "
                          "cpus_per_task: 24}\n", "job.yaml", BASE).spec
    assert spec.resources.total_gpus == 4096 * 8


@pytest.mark.parametrize("zero", ["0", "00:00:00", "0-00:00", "UNLIMITED"])
def test_time_zero_is_refused_not_replaced_by_the_site_default(zero: str) -> None:
    (message,) = spec_problems(f"{{time: '{zero}'}}")
    assert message.startswith("job.yaml:3: resources.time:")
    assert "no time limit to Slurm" in message and "e.g. '2-00:00:00'" in message


def test_a_site_default_time_of_zero_is_refused_too() -> None:
    with pytest.raises(SpecError, match=r"default_time: .*no time limit to Slurm"):
        load_site("sandbox", ["default_time='0'"], environ=ALICE)


@pytest.mark.parametrize("zero", ["0", "0G", "0M"])
def test_mem_zero_is_refused_pointing_to_mem_all(zero: str) -> None:
    (message,) = spec_problems(f"{{mem: '{zero}'}}")
    assert message.startswith("job.yaml:3: resources.mem:")
    assert "all of each node's memory" in message and "mem: all" in message


def test_mem_all_renders_slurms_mem_zero_and_fits_any_partition() -> None:
    job = resolved("{mem: all}")  # the sandbox partitions name their memory: 'all' always fits
    assert read_directives(render_script(job))["mem"] == "0"


def test_dry_run_says_the_job_takes_all_of_each_nodes_memory(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("name: a\ncommand: x\nresources: {mem: all}\n")
    result = CliRunner().invoke(app, ["launch", str(spec), "--site", "sandbox", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "#SBATCH --mem=0" in result.stdout
    assert "memory: all of each node's (--mem=0)" in result.stderr
