"""The messages researchers met translating their batch scripts (issue 20): each names the field or the
escape hatch that does the job."""

from __future__ import annotations

from pathlib import Path

import pytest
from _runtime_fixtures import recorded_tasks

from hpc.errors import SpecError
from hpc.runtime.node._errors import RuntimeSetupError
from hpc.runtime.node.gpus import assign_gpus
from hpc.runtime.node.settings import RuntimeSettings
from hpc.runtime.node.slurm_env import read_slurm_step
from hpc.scheduler.managed import check_extra_flag
from hpc.site.load import load_site
from hpc.spec import load_spec_text


def spec_problem(text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec_text(f"name: a\ncommand: x\n{text}\n", "job.yaml", Path("/p"))
    (problem,) = info.value.problems
    return str(problem)


@pytest.mark.parametrize(("text", "message"), [
    ("resources: {reservation: maint}",
     "resources.reservation: unknown key: sbatch's --reservation is not a field: add '--reservation=VALUE' to "
     "sbatch_extra"),
    ("reservation: maint",
     "reservation: unknown key: sbatch's --reservation is not a field: add '--reservation=VALUE' to sbatch_extra"),
    ("resources: {ntasks: 8}",
     "resources.ntasks: unknown key: sbatch's --ntasks is managed by hpc-tf: set resources.nodes and "
     "resources.tasks_per_node"),
    ("resources: {gpus: 4}",
     "resources.gpus: unknown key: sbatch's --gpus is managed by hpc-tf: set resources.gpus_per_node / gpus_per_task"),
    ("mem_per_gpu: 8G",
     "mem_per_gpu: unknown key: sbatch's --mem-per-gpu is managed by hpc-tf: set resources.mem_per_gpu"),
    ("hold: true", "hold: unknown key: sbatch's --hold is not a field: add '--hold' to sbatch_extra"),
    ("resources: {mail_type: END}",
     "resources.mail_type: unknown key: sbatch's --mail-type is not a field: add '--mail-type=VALUE' to sbatch_extra"),
])
def test_an_sbatch_option_written_as_a_key_points_to_its_field_or_sbatch_extra(text: str, message: str) -> None:
    assert spec_problem(text) == f"job.yaml:3: {message}"


def test_a_key_that_is_no_sbatch_option_still_gets_the_keys_allowed() -> None:
    assert spec_problem("resources: {mem_per_gpux: 8G}").startswith(
        "job.yaml:3: resources.mem_per_gpux: unknown key (did you mean 'mem_per_gpu'?); allowed here: account, ")


def test_in_a_site_config_the_escape_hatch_is_sbatch_defaults(tmp_path: Path) -> None:
    site = tmp_path / "s.yaml"
    site.write_text("name: s\nreservation: maint\n")
    with pytest.raises(SpecError) as info:
        load_site(str(site), environ={"HOME": str(tmp_path)})
    assert str(info.value) == (f"{site}:2: reservation: unknown key: sbatch's --reservation is not a field: add "
                               "'--reservation=VALUE' to sbatch_defaults")
    site.write_text("name: s\npartition: gpu\n")  # managed: the site's own keys, not the job spec's fields
    with pytest.raises(SpecError, match="partition: unknown key \\(did you mean 'partitions'\\?\\); allowed"):
        load_site(str(site), environ={"HOME": str(tmp_path)})


@pytest.mark.parametrize(("flag", "read_as"), [
    ("--reservation maint", "--reservation=maint"),  # the space is sbatch's too
    ("-L SCRATCH", "--licenses=SCRATCH"),
    ("-Lscratch:2", "--licenses=scratch:2"),
])
def test_options_written_with_a_space_or_a_letter_are_read_as_sbatch_reads_them(flag: str, read_as: str) -> None:
    assert check_extra_flag(flag) == read_as


@pytest.mark.parametrize(("flag", "message"), [
    ("-L", "'-L' is --licenses, which needs a value: write --licenses=VALUE"),
    ("--reservation", "'--reservation' is --reservation, which needs a value: write --reservation=VALUE"),
    ("--mem-per-gpu=8G", "'--mem-per-gpu=8G' is --mem-per-gpu, which hpc-tf manages: set resources.mem_per_gpu"),
    ("--dependency=singleton",
     "'--dependency=singleton' is --dependency, which hpc-tf manages: sbatch_extra cannot pass it, not even "
     "singleton; campaign pipelines chain stages (afterok), and 'hpc-tf launch --wait' runs jobs one after another"),
])
def test_a_refused_option_is_named_in_full_with_what_to_write(flag: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_extra_flag(flag)
    assert str(info.value) == message


def test_the_runtime_hint_names_fields_that_exist() -> None:
    with pytest.raises(RuntimeSetupError) as info:  # a task of a CPU job (recorded) whose spec asked for a GPU
        assign_gpus(read_slurm_step(recorded_tasks("cpu-2tasks")[0]), RuntimeSettings(gpus_per_task=1))
    assert info.value.hint is not None
    assert "resources.gpus_per_node and gpus_per_task" in info.value.hint
    assert "set gpus to 0" not in info.value.hint
