"""Memory per GPU or per CPU instead of per node, extra gres beside the GPUs, and the site's constraint."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc.errors import SpecError
from hpc.local.scheduler import _job_from_script
from hpc.render.directives import read_directives
from hpc.render.script import render_script
from hpc.resolve import resolve
from hpc.site.load import load_site
from hpc.spec import load_spec_text

ALICE = {"HOME": "/home/alice", "USER": "alice"}


def directives(resources: str, overrides: tuple[str, ...] = ()) -> dict[str, str | None]:
    loaded = load_spec_text(f"name: r\ncommand: python3 train.py\nresources: {resources}\n", "job.yaml", Path("/p"))
    job = resolve(loaded, load_site("sandbox", overrides, environ=ALICE), "r-run", environ=ALICE)
    return read_directives(render_script(job))


def refusal(resources: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec_text(f"name: r\ncommand: x\nresources: {resources}\n", "job.yaml", Path("/p"))
    (problem,) = info.value.problems
    return str(problem)


@pytest.mark.parametrize(("field", "option"), [("mem_per_gpu", "mem-per-gpu"), ("mem_per_cpu", "mem-per-cpu")])
def test_memory_per_gpu_or_cpu_is_asked_for_without_mem(field: str, option: str) -> None:
    found = directives(f"{{gpus_per_node: 2, {field}: 1G}}")
    assert found[option] == "1G"
    assert "mem" not in found  # sbatch refuses --mem beside --mem-per-gpu / --mem-per-cpu


def test_at_most_one_memory_field() -> None:
    assert refusal("{gpus_per_node: 2, mem: 16G, mem_per_gpu: 8G}") == (
        "job.yaml:3: resources: set one of mem, mem_per_cpu, mem_per_gpu, not mem and mem_per_gpu")
    assert refusal("{mem_per_gpu: 8G}") == (
        "job.yaml:3: resources: mem_per_gpu needs gpus_per_node or gpus_per_task: use mem or mem_per_cpu for a CPU job")
    assert refusal("{mem_per_cpu: lots}") == (
        "job.yaml:3: resources.mem_per_cpu: 'lots' is not a memory size; use e.g. '16G', '500M' or '16000' (megabytes)")


def test_extra_gres_share_the_gpus_line() -> None:
    assert directives("{gpus_per_node: 4, gpu_type: a100, gres: ['nvme:200', 'shard:ssd:1']}")["gres"] == (
        "gpu:a100:4,nvme:200,shard:ssd:1")
    # GPUs bound per task have their own option; the other gres still reach the job
    per_task = directives("{tasks_per_node: 2, gpus_per_task: 1, gres: ['nvme:200']}")
    assert (per_task["gpus-per-task"], per_task["gres"]) == ("1", "nvme:200")
    assert directives("{partition: cpu, gres: ['nvme:200']}")["gres"] == "nvme:200"


def test_a_gres_is_name_and_count_and_gpus_have_their_fields() -> None:
    assert refusal("{gres: [nvme]}") == (
        "job.yaml:3: resources.gres[0]: 'nvme' is not valid: a gres is NAME:COUNT or NAME:TYPE:COUNT (e.g. nvme:200)")
    assert refusal("{gres: ['gpu:a100:2']}") == (
        "job.yaml:3: resources.gres[0]: 'gpu:a100:2' asks for GPUs: set resources.gpus_per_node or gpus_per_task "
        "(and gpu_type)")


def test_the_local_launcher_counts_only_the_gpus_of_the_gres_line(tmp_path: Path) -> None:
    script = tmp_path / "job.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --nodes=1\n#SBATCH --gres=gpu:2,nvme:200\ntrue\n")
    assert _job_from_script(script, {}).gpus_per_node == 2
    script.write_text("#!/bin/bash\n#SBATCH --nodes=1\n#SBATCH --gres=nvme:200\ntrue\n")
    assert _job_from_script(script, {}).gpus_per_node == 0


def test_the_site_constraint_is_the_default_a_job_may_replace() -> None:
    assert directives("{gpus_per_node: 1}", ("constraint=gpu",))["constraint"] == "gpu"
    assert directives("{gpus_per_node: 1, constraint: 'gpu&hbm80g'}", ("constraint=gpu",))["constraint"] == "gpu&hbm80g"
    assert "constraint" not in directives("{gpus_per_node: 1}")


def test_memory_per_gpu_or_cpu_must_fit_a_node_of_the_partition() -> None:
    assert directives("{gpus_per_node: 2, mem_per_gpu: 3G}")["mem-per-gpu"] == "3G"  # 6G of the 8000M nodes
    with pytest.raises(SpecError) as info:
        directives("{gpus_per_node: 4, mem_per_gpu: 3G}")
    assert str(info.value) == "job.yaml:3: resources.mem_per_gpu: '3G' x 4 exceeds the memory of a 'gpu' node (8000M)"
    with pytest.raises(SpecError) as info:
        directives("{tasks_per_node: 2, cpus_per_task: 4, mem_per_cpu: 1500M}")
    assert str(info.value) == ("job.yaml:3: resources.mem_per_cpu: '1500M' x 8 exceeds the memory of a 'gpu' node "
                               "(8000M)")
