"""hpc-tf against the CLI changes of Slurm 23.02 to 26.05 that its parsers and scripts meet.

One test (or the test named) per change listed in the NOTES of the 25.11 build (each release's
changelog), on recorded output where a version ran here and on SYNTHESIZED output (so marked, with the
release note it follows) where none could. Changes hpc-tf does not meet, and why, are in the module
docstrings of what would read them: sacct's exit codes over 128 (25.11) are restored in
:func:`hpc.scheduler.parse.restore_exit_codes` (tests/unit/test_scheduler_status.py); shared host list
suffixes (23.11) are read by hpc/runtime/node/hostlist.py (tests/unit/test_runtime_hostlist.py, against
the real scontrol of each version); the QOS use per user of 23.02+'s assoc_mgr (tests/unit/test_quota_*.py
on both versions' scenes).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc.launch import plan_launch
from hpc.scheduler.parse import parse_scontrol_show_job
from tests.unit.test_render import directives

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.parametrize(
    "resources",
    [
        "{nodes: 2, gpus_per_node: 4}",
        "{nodes: 1, gpus_per_node: 2, gpu_type: a100}",
        "{nodes: 2, tasks_per_node: 4, gpus_per_task: 1}",
    ],
)
def test_a_job_asks_for_its_gpus_one_way(tmp_path: Path, resources: str) -> None:
    # 26.05: --gres=gpu:N and --gpus-per-node are mutually exclusive (sbatch refuses the job). hpc-tf
    # writes one GPU option, and sbatch_extra / the site's sbatch_defaults refuse the others
    # (hpc/scheduler/managed.py)
    spec = tmp_path / "job.yaml"
    spec.write_text(f"name: g\ncommand: [python3, t.py]\nresources: {resources}\n")
    plan = plan_launch(spec, "sandbox", [f"runs_dir={tmp_path / 'runs'}"], environ={"HOME": str(tmp_path)})
    gpu_options = [name for name in directives(plan.script) if name.startswith(("--gres", "--gpus"))]
    assert gpu_options in (["--gres"], ["--gpus-per-task"]), gpu_options


@pytest.mark.parametrize("version", ["22.05", "25.11"])
def test_scontrol_show_job_submit_line_and_tres(version: str) -> None:
    # 23.02: ReqTRES= and AllocTRES= instead of TRES=; 25.11: SubmitLine= (spaces in it) before WorkDir=
    (job,) = parse_scontrol_show_job((FIXTURES / f"slurm-{version}/scontrol/show-job-running.txt").read_text())
    assert job["WorkDir"].startswith("/srv/hpc-tf/scratch/record-fixtures.") and job["StdOut"] == "/dev/null"
    if version == "22.05":
        assert "gres/gpu=4" in job["TRES"] and "SubmitLine" not in job
    else:
        assert job["SubmitLine"] == "sbatch --parsable -o /dev/null -p gpu -N1 --gres=gpu:4 -J running --wrap sleep 600"
        assert "gres/gpu=4" in job["ReqTRES"] and "gres/gpu=4" in job["AllocTRES"] and "TRES" not in job


def test_scontrol_not_found_on_stderr_is_no_record() -> None:
    # 22.05 and 25.11 (recorded) print "slurm_load_jobs error: Invalid job id specified" to stderr;
    # SYNTHESIZED after 26.05's note ("scontrol prints 'not found' to stderr"): stdout stays empty,
    # and a job scontrol cannot find is no record either way
    for version in ("22.05", "25.11"):
        assert parse_scontrol_show_job((FIXTURES / f"slurm-{version}/scontrol/show-job-unknown.txt").read_text()) == []
    assert parse_scontrol_show_job("") == []
    assert parse_scontrol_show_job("Job 999999 not found\n") == []  # 25.11 prints it to stdout after a load
