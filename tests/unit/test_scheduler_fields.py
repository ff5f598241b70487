"""Single Slurm values (job ids, exit codes, durations, TRES) and the argv builders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpc.errors import HpcTfError, SchedulerOutputError
from hpc.scheduler import commands
from hpc.scheduler.fields import (
    ExitCode,
    JobId,
    gpu_count,
    is_job_id,
    parse_array_tasks,
    parse_duration_s,
    parse_exit_code,
    parse_job_id,
    parse_state,
    parse_tres,
)


@pytest.mark.parametrize(
    ("text", "expected", "job"),
    [
        ("35", JobId("35"), "35"),
        ("12_3", JobId("12", array_task="3"), "12_3"),
        ("77_[2-5%2]", JobId("77", array_task="[2-5%2]"), "77_[2-5%2]"),
        ("30+1", JobId("30", het_offset=1), "30+1"),
        ("71.batch", JobId("71", step="batch"), "71"),
        ("12_3.0", JobId("12", array_task="3", step="0"), "12_3"),
        ("30+1.extern", JobId("30", het_offset=1, step="extern"), "30+1"),
        (" 35 ", JobId("35"), "35"),
    ],
)
def test_job_ids_as_sacct_and_squeue_print_them(text: str, expected: JobId, job: str) -> None:
    parsed = parse_job_id(text)
    assert parsed == expected
    assert parsed.job == job
    assert str(parsed) == text.strip()


@pytest.mark.parametrize("text", ["", "abc", "12_", "12+x", "12;rm -rf /", "-j", "12 13", "1_2_3"])
def test_garbage_is_not_a_job_id(text: str) -> None:
    with pytest.raises(SchedulerOutputError):
        parse_job_id(text)
    assert not is_job_id(text)


def test_user_may_ask_about_jobs_tasks_and_het_components_only() -> None:
    assert is_job_id("35") and is_job_id("12_3") and is_job_id("30+1")
    assert not is_job_id("12_[1-3]") and not is_job_id("35.batch")
    assert not is_job_id("12\n")  # the whole text, not a prefix: `$` alone would accept a final line break


@pytest.mark.parametrize(
    ("spec", "ids", "throttle"),
    [
        ("3", (3,), None),
        ("[2-5%2]", (2, 3, 4, 5), 2),
        ("[1,3,5-7]", (1, 3, 5, 6, 7), None),
        ("[0-10:5]", (0, 5, 10), None),
        ("[1-3%1]", (1, 2, 3), 1),
    ],
)
def test_array_task_specs(spec: str, ids: tuple[int, ...], throttle: int | None) -> None:
    tasks = parse_array_tasks(spec)
    assert tasks.ids == ids
    assert tasks.throttle == throttle


def test_bad_array_spec() -> None:
    with pytest.raises(SchedulerOutputError):
        parse_array_tasks("[a-b]")


@pytest.mark.parametrize(
    ("text", "expected", "shell"),
    [
        ("0:0", ExitCode(0, 0), 0),
        ("3:0", ExitCode(3, 0), 3),
        ("0:15", ExitCode(0, 15), 143),
        ("1", ExitCode(1), 1),
    ],
)
def test_exit_codes(text: str, expected: ExitCode, shell: int) -> None:
    code = parse_exit_code(text)
    assert code == expected
    assert code.shell_code == shell
    assert str(code) == f"{expected.status}:{expected.signal}"


def test_empty_exit_code_is_none_and_garbage_is_an_error() -> None:
    assert parse_exit_code("") is None
    with pytest.raises(SchedulerOutputError):
        parse_exit_code("x:y")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00:00", 0),
        ("00:01:27", 87),
        ("01:00:00", 3600),
        ("1-02:03:04", 93784),
        ("5:00", 300),  # squeue prints M:SS under an hour
        ("1:00", 60),
        ("0:04", 4),
        ("00:01.234", 1),  # TotalCPU style, fractions dropped
        ("UNLIMITED", None),
        ("Partition_Limit", None),
        ("INVALID", None),
        ("", None),
    ],
)
def test_durations_as_the_tools_print_them(text: str, seconds: int | None) -> None:
    assert parse_duration_s(text) == seconds


def test_bad_duration() -> None:
    with pytest.raises(SchedulerOutputError):
        parse_duration_s("soon")


@given(st.integers(min_value=0, max_value=400 * 86400))
def test_duration_round_trip(total: int) -> None:
    days, rest = divmod(total, 86400)
    text = f"{days}-{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    assert parse_duration_s(text) == total


def test_tres_and_gpu_counts() -> None:
    tres = parse_tres("billing=1,cpu=1,gres/gpu=4,mem=1000M,node=1")
    assert tres == {"billing": "1", "cpu": "1", "gres/gpu": "4", "mem": "1000M", "node": "1"}
    assert gpu_count(tres) == 4
    assert gpu_count(parse_tres("cpu=1,gres/gpu:a100=2,gres/gpu:v100=1")) == 3
    assert gpu_count(parse_tres("cpu=1,gres/gpu=3,gres/gpu:a100=3")) == 3  # the total wins, no double count
    assert parse_tres("") == {}
    assert gpu_count({}) == 0
    with pytest.raises(SchedulerOutputError):
        parse_tres("cpu")


def test_state_with_cancelling_uid() -> None:
    assert parse_state("CANCELLED by 1001") == ("CANCELLED", "1001")
    assert parse_state("RUNNING") == ("RUNNING", None)
    assert parse_state("CANCELLED+") == ("CANCELLED", None)  # sacct's truncation mark


# --- argv builders -----------------------------------------------------------------------------


def test_sbatch_argv_puts_options_before_the_script() -> None:
    argv = commands.sbatch("/runs/a b/job.sbatch", ["--array=0-9%2", "--dependency=afterok:35"])
    assert argv == [
        "sbatch",
        "--parsable",
        "--array=0-9%2",
        "--dependency=afterok:35",
        "/runs/a b/job.sbatch",
    ]


def test_sbatch_refuses_newlines_in_arguments() -> None:
    with pytest.raises(HpcTfError):
        commands.sbatch("job.sbatch", ["--comment=a\n#SBATCH --x"])


def test_sacct_is_one_batched_call_with_explicit_fields() -> None:
    ids = [str(i) for i in range(1000, 2000)]
    argv = commands.sacct(ids)
    assert argv[:5] == ["sacct", "--allocations", "--parsable2", "--noheader", "--duplicates"]
    assert argv[5] == "--format=" + ",".join(commands.SACCT_FIELDS)
    assert argv[6] == "--jobs=" + ",".join(ids)
    assert "JobName" not in commands.SACCT_FIELDS  # free text could contain the | separator
    assert "--allocations" not in commands.sacct(["1"], steps=True)


def test_squeue_format_has_the_reason_last_and_no_padding() -> None:
    argv = commands.squeue(["12", "13_1", "14+0"])
    assert argv[-1] == "--jobs=12,13_1,14+0"
    fmt = argv[2].removeprefix("--Format=").split(",")
    assert [f.split(":")[0] for f in fmt] == list(commands.SQUEUE_FIELDS)
    assert fmt[-1] == "Reason:0"
    assert all(f.endswith(":0|") for f in fmt[:-1])


def test_job_ids_are_checked_and_deduplicated() -> None:
    assert commands.checked_job_ids([" 35", "35", "12_3", "30+1"]) == ["35", "12_3", "30+1"]
    for bad in ("35;touch x", "--all", "12_[1-3]", "35.batch", ""):
        with pytest.raises(HpcTfError, match="not a Slurm job id"):
            commands.scancel([bad])


def test_other_builders() -> None:
    assert commands.scancel(["1", "2_3"]) == ["scancel", "1", "2_3"]
    assert commands.scontrol_show_job("77") == ["scontrol", "--oneliner", "show", "job", "77"]
    assert commands.scontrol_show_job() == ["scontrol", "--oneliner", "show", "job"]
    assert commands.scontrol_show_config() == ["scontrol", "show", "config"]
    assert commands.sdiag() == ["sdiag"]
