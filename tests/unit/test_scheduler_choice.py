"""The site's ``scheduler: cli | pyslurm | auto``: which Slurm backend a machine gets, and why.

The pyslurm backend itself runs against the 25.11 cluster (tests/integration/test_scheduler_conformance_slurm.py);
here: the decision from the two versions, its one-line refusal, that the CLI never imports pyslurm
unless asked, and that every option hpc-tf renders has a JobSubmitDescription attribute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpc.errors import HpcTfError
from hpc.render.directives import read_directives
from hpc.scheduler.choice import choose, release
from hpc.scheduler.commands import submit_options
from hpc.scheduler.libslurm_submit import submit_attributes
from hpc.scheduler.submission import ArrayRequest, SubmitOptions

GOLDEN = Path(__file__).parent.parent / "golden"


def test_release_of_the_version_words_slurm_prints() -> None:
    assert release("slurm 25.11.7") == "25.11"
    assert release("slurm-wlm 22.05.8") == "22.05"
    assert release("25.11.2") == "25.11"
    assert release("") is None


def test_cli_is_chosen_without_looking_at_versions() -> None:
    choice = choose("cli", pyslurm=None, slurm=None)
    assert (choice.chosen, choice.why) == ("cli", "the site's scheduler: cli")


@pytest.mark.parametrize("asked", ["pyslurm", "auto"])
def test_pyslurm_made_for_this_slurm_is_chosen(asked: str) -> None:
    choice = choose(asked, pyslurm="25.11.2", slurm="25.11.7")  # type: ignore[arg-type]
    assert choice.chosen == "pyslurm"
    assert choice.why == "pyslurm 25.11.2 for Slurm 25.11.7"


@pytest.mark.parametrize(
    ("pyslurm", "slurm", "why"),
    [
        ("25.11.2", "22.05.8", "pyslurm 25.11.2 is made for Slurm 25.11 and Slurm here is 22.05.8"),
        (None, "25.11.7", "pyslurm is not installed (Slurm here is 25.11.7)"),
        ("25.11.2", None, "Slurm's tools (scontrol) are not on this machine (pyslurm 25.11.2)"),
    ],
)
def test_auto_falls_back_to_the_cli_and_says_why(pyslurm: str | None, slurm: str | None, why: str) -> None:
    choice = choose("auto", pyslurm=pyslurm, slurm=slurm)
    assert (choice.chosen, choice.why) == ("cli", f"auto: {why}")


def test_pyslurm_for_another_slurm_is_one_line_naming_both_versions_and_the_fix() -> None:
    with pytest.raises(HpcTfError) as caught:
        choose("pyslurm", pyslurm="25.11.2", slurm="22.05.8")
    message = str(caught.value)
    assert "\n" not in message
    assert "pyslurm 25.11.2" in message and "22.05.8" in message
    assert "pip install 'pyslurm==22.05.*'" in message and message.endswith("or set scheduler: cli")


def test_missing_pyslurm_names_the_slurm_to_build_against() -> None:
    with pytest.raises(HpcTfError) as caught:
        choose("pyslurm", pyslurm=None, slurm="25.11.7")
    message = str(caught.value)
    assert "\n" not in message
    assert "pyslurm is not installed (Slurm here is 25.11.7)" in message
    assert "SLURM_INCLUDE_DIR=" in message and "pip install 'pyslurm==25.11.*'" in message


def _imports(argv: list[str], tmp_path: Path) -> tuple[object, list[str]]:
    probe = (
        "import sys, json\n"
        "from hpc.cli import app\n"
        "try:\n"
        f"    app({argv!r}, prog_name='hpc-tf')\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}), file=sys.stderr)\n"
    )
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HPC_TF_RUNS_DIR": str(tmp_path / "runs")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            check=False, env=env)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], report["modules"]


@pytest.mark.parametrize("argv", [["config", "show", "--site", "sandbox"], ["status", "--all", "--site", "sandbox"]])
def test_the_cli_scheduler_never_imports_pyslurm(argv: list[str], tmp_path: Path) -> None:
    code, modules = _imports(argv, tmp_path)
    assert code == 0
    assert [m for m in modules if m.startswith(("pyslurm", "hpc.scheduler.libslurm"))] == []


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.sbatch")), ids=lambda p: p.name)
def test_every_option_hpc_tf_renders_reaches_pyslurm(golden: Path) -> None:
    options = {**read_directives(golden.read_text()),
               **dict(submit_options(SubmitOptions(array=ArrayRequest((0, 1, 2, 5), throttle=2),
                                                   after=(("afterok", ("12",)),), cancel_if_never_satisfied=True,
                                                   hold=True)))}
    attributes = submit_attributes(options, golden)
    assert attributes["name"] == options["job-name"]
    assert attributes["array"] == "0-2,5%2"
    assert attributes["dependencies"] == "afterok:12"
    assert attributes["kill_on_invalid_dependency"] is True
    assert attributes["priority"] == 0  # held
    assert attributes["ntasks"] == int(options.get("ntasks") or 0) or (
        int(options["nodes"] or 1) * int(options["ntasks-per-node"] or 1))  # as sbatch derives it


def test_an_option_pyslurm_cannot_pass_is_refused_by_name() -> None:
    with pytest.raises(HpcTfError, match=r"cannot pass --gpu-freq \(in job.sbatch\)") as caught:
        submit_attributes({"job-name": "x", "gpu-freq": "high"}, "job.sbatch")
    assert caught.value.hint is not None and "scheduler: cli" in caught.value.hint


def test_all_of_a_nodes_memory_is_refused_not_dropped() -> None:
    # pyslurm reads a memory of 0 as "not set": the job would get the partition's default instead
    with pytest.raises(HpcTfError, match=r"cannot ask for all of a node's memory \(--mem=0\)"):
        submit_attributes({"mem": "0"}, "job.sbatch")
    assert submit_attributes({"mem": "7G", "time": "5"}, "job.sbatch") == {"memory_per_node": "7G", "time_limit": 5}
