"""``hpc-tf usage`` and the GPU-hours of ``campaign results``, on what sacct printed on the test cluster.

The recordings (tests/fixtures/scheduler/slurm-22.05/usage/, written by tests/integration/test_usage_slurm.py)
hold jobs with 0, 1 and 2 GPUs and a two-task array, ``expected.json`` their allocated GPUs × ElapsedRaw as
sacct's own ``-X -P -o JobID,AllocTRES,ElapsedRaw`` gave them, a running job and the same job requeued. The
budget comes from the quota's recorded overview scene (tests/fixtures/quota/slurm-22.05/overview/).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpc.campaign import api
from hpc.campaign.manifest import Attempt, SubmissionRecord, now_iso, read_manifest, write_manifest
from hpc.campaign.paths import CampaignPaths
from hpc.cli import app
from hpc.errors import HpcTfError
from hpc.local.jobs import LocalJob, LocalJobStore
from hpc.local.scheduler import LocalScheduler
from hpc.paths import RunPaths
from hpc.quota import quota_report
from hpc.rundir import record_submission
from hpc.scheduler import JobState, SlurmScheduler
from hpc.scheduler.libslurm import PyslurmScheduler
from hpc.scheduler.replay import ReplayRunner, load_recording
from hpc.usage import Budget, budgets_of, gpu_usage, group, owned, parse_since
from tests._readme import readme_argv
from tests.unit._quota_fixtures import USER, cli, replay
from tests.unit.test_campaign_results import QUICKSTART

USAGE = Path(__file__).parents[1] / "fixtures" / "scheduler" / "slurm-22.05" / "usage"
EXPECTED: dict[str, int] = json.loads((USAGE / "expected.json").read_text())
ROLES: dict[str, str] = json.loads((USAGE / "scenario.json").read_text())


def replayed(*names: str) -> tuple[SlurmScheduler, ReplayRunner]:
    runner = ReplayRunner(load_recording(USAGE / f"{name}.rec").result for name in names)
    return SlurmScheduler(cli(runner)), runner


def recorded_since() -> float:
    """The start time the recorded by-time call asked for, as unix time (the argv must match it)."""
    argv = load_recording(USAGE / "by-time.rec").result.argv
    start = next(a for a in argv if a.startswith("--starttime=")).partition("=")[2]
    return time.mktime(time.strptime(start, "%Y-%m-%dT%H:%M:%S"))


def test_one_sacct_call_gives_each_jobs_gpus_times_elapsed_as_sacct_itself_counts() -> None:
    scheduler, runner = replayed("by-id")
    found = scheduler.usage(list(ROLES.values()))
    assert {u.job_id: u.gpu_seconds for u in found} == EXPECTED
    array = ROLES["array"]
    assert {u.job_id: u.gpus for u in found} == {ROLES["cpu"]: 0, ROLES["one-gpu"]: 1, ROLES["two-gpus"]: 2,
                                                 f"{array}_0": 1, f"{array}_1": 1}
    assert runner.count("sacct") == 1 and runner.calls[0][-1] == f"--jobs={','.join(ROLES.values())}"


def test_a_running_job_counts_to_now_and_a_requeued_jobs_earlier_run_stays_counted() -> None:
    scheduler, _ = replayed("running")
    (running,) = scheduler.usage([json_job("running.rec")])
    assert (running.state, running.gpus) == (JobState.RUNNING, 1) and running.gpu_seconds == running.elapsed_s > 0
    scheduler, _ = replayed("requeued")
    runs = scheduler.usage([running.job_id])
    assert [(r.state, r.gpus) for r in runs] == [(JobState.REQUEUED, 1), (JobState.PENDING, 0)]
    (row,) = group(owned(runs, {}), "job")
    assert (row.allocations, row.gpu_seconds, row.state) == (2, runs[0].elapsed_s, "PENDING")
    assert row.gpu_seconds >= running.gpu_seconds  # the run before the requeue held its GPU until then


def json_job(recording: str) -> str:
    return load_recording(USAGE / recording).result.argv[-1].removeprefix("--jobs=")


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    """A runs directory as hpc-tf leaves it: the array was a campaign's stage ``main``, the 2-GPU job a run."""
    root = tmp_path / "runs"
    plan = api.plan_from_file(QUICKSTART, "sandbox", [f"runs_dir={root}"], gpu_limit=4)
    from hpc.campaign.submit import write_campaign_dir

    paths = write_campaign_dir(plan)
    manifest = read_manifest(paths)
    manifest.submissions.append(SubmissionRecord(job_id=ROLES["array"], stage="main", offset=0, task_ids=[0, 1],
                                                 throttle=None, after=[], script="submit-001.sbatch",
                                                 submitted_at=now_iso()))
    write_manifest(paths, manifest)
    run = RunPaths.at(root / "20261205-two-gpus")
    run.root.mkdir(parents=True)
    record_submission(run, ROLES["two-gpus"], None)
    return root


def test_by_job_campaign_and_account_from_one_listing(runs_root: Path) -> None:
    scheduler, runner = replayed("by-time")
    since = recorded_since()
    report = gpu_usage(scheduler, launcher="slurm", user=USER, since=since, by="job", runs_root=runs_root, budgets=[])
    assert runner.count("sacct") == 1 and f"--user={USER}" in runner.calls[0]
    rows = {row.key: row for row in report.rows}
    assert {key: rows[key].gpu_seconds for key in EXPECTED} == EXPECTED  # sacct's own numbers, job by job
    spent = [row.gpu_seconds for row in report.rows]
    assert report.gpu_seconds == sum(spent) == sum(job.gpu_seconds for job, _ in report.jobs)
    assert spent == sorted(spent, reverse=True)  # most GPU time first
    campaign = read_manifest(CampaignPaths.at(next(runs_root.glob("*/manifest.json")).parent)).id
    assert rows[f"{ROLES['array']}_0"].label == f"{campaign} main"
    assert rows[ROLES["two-gpus"]].label == "20261205-two-gpus"
    assert rows[ROLES["two-gpus"]].gpus == 2 and rows[ROLES["cpu"]].gpus == 0

    by_campaign = {row.key: row.gpu_seconds for row in group(report.jobs, "campaign")}
    array_cost = EXPECTED[f"{ROLES['array']}_0"] + EXPECTED[f"{ROLES['array']}_1"]
    assert by_campaign == {campaign: array_cost, "-": report.gpu_seconds - array_cost}
    assert {row.key: row.gpu_seconds for row in group(report.jobs, "account")} == {"lab": report.gpu_seconds}
    document = report.as_dict()
    assert document["gpu_seconds"] == report.gpu_seconds and len(document["jobs"]) == len(report.jobs)


def test_the_budget_is_the_quotas_gpu_minute_limit() -> None:
    report = quota_report("quota-test-a", cli(replay("overview")), user=USER)
    (budget,) = budgets_of(report)
    assert (budget.where, budget.minutes) == ("account quota-test", 1000)
    assert budget.words == "account quota-test has a budget of 1000 GPU-minutes" and budget.used_minutes is not None


@pytest.mark.parametrize("text,seconds", [("30d", 30 * 86400), ("12h", 12 * 3600), ("90m", 5400), ("2w", 14 * 86400)])
def test_since_as_a_span(text: str, seconds: int) -> None:
    assert parse_since(text, 1_000_000_000.0) == 1_000_000_000.0 - seconds


def test_since_as_a_date_and_refused_words() -> None:
    assert parse_since("2026-11-01", 0) == time.mktime((2026, 11, 1, 0, 0, 0, 0, 0, -1))
    assert parse_since("2026-11-01T09:30", 0) == time.mktime((2026, 11, 1, 9, 30, 0, 0, 0, -1))
    with pytest.raises(HpcTfError, match="is not a time"):
        parse_since("last week", 0)


@pytest.mark.parametrize("args,message", [
    (["--since", "3x"], "hpc-tf: error: --since '3x' is not a time"),
    (["--by", "user"], "hpc-tf: error: --by 'user': choose one of job, campaign, account"),
])
def test_bad_options_are_one_line_and_exit_code_2(args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "hpc.cli", "usage", *args], capture_output=True, text=True,
                            timeout=60, check=False)
    assert (result.returncode, result.stderr.splitlines()[0], result.stdout) == (2, message, "")


def test_the_command_prints_the_table_total_and_budget(monkeypatch: pytest.MonkeyPatch, runs_root: Path) -> None:
    scheduler, _ = replayed("by-id")
    budget = Budget("account lab", "account lab has a budget of 600 GPU-minutes", 600, 18)
    jobs = scheduler.usage(list(ROLES.values()))
    report = gpu_usage(_Listing(jobs), launcher="slurm", user=USER, since=0, by="job", runs_root=runs_root,
                       budgets=[budget], now=100)
    monkeypatch.setattr("hpc.cli.usage.site_usage", lambda config, since, by, environ: report)
    shown = CliRunner().invoke(app, ["usage", "--site", "sandbox"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[1].split() == ["job", "run", "/", "campaign", "account", "state", "GPUs", "elapsed", "GPU-hours"]
    assert lines[2].split()[:2] == [ROLES["two-gpus"], "20261205-two-gpus"] and lines[2].split()[-1] == "0.00"
    assert lines[-2] == f"total: 0.00 GPU-hours (0 GPU-minutes) in {len(jobs)} allocation(s)"
    assert lines[-1].startswith("budget: account lab has a budget of 600 GPU-minutes: 18 used, 582 left")
    as_json = CliRunner().invoke(app, ["usage", "--json"])
    assert json.loads(as_json.stdout) == report.as_dict()
    top = CliRunner().invoke(app, ["usage", "--site", "sandbox", "--top", "1"], env={"COLUMNS": "200"}).stdout
    rows = top.splitlines()[2:-3]  # a long listing shows the costliest rows; the total still counts every job
    assert [r.split()[0] for r in rows] == [ROLES["two-gpus"]]
    assert top.splitlines()[-3] == f"… {len(jobs) - 1} more job(s) with 0.00 GPU-hours in all (--top 0 shows every row)"
    assert top.splitlines()[-2] == lines[-2]


class _Listing:
    """A scheduler whose accounting holds these records (the CLI test's; the listing itself is tested above)."""

    def __init__(self, jobs: list[object]) -> None:
        self.jobs = jobs

    def usage(self, job_ids: object = (), *, since: float | None = None, user: str | None = None) -> list[object]:
        return self.jobs


def test_campaign_results_show_each_tasks_gpu_hours_from_one_call(tmp_path: Path) -> None:
    from tests.unit.test_campaign_results import quickstart_campaign

    paths = quickstart_campaign(tmp_path)
    manifest = read_manifest(paths)
    array = ROLES["array"]
    for task in manifest.tasks[:2]:  # tasks 0 and 1 ran as the recorded array's tasks, once retried
        attempts = task.stages["main"].attempts
        attempts[:] = [Attempt(job_id=f"499_{task.id}", submission="499", state="FAILED"),
                       Attempt(job_id=f"{array}_{task.id}", submission=array, state="COMPLETED")]
    write_manifest(paths, manifest)
    asked = [a.job_id for t in manifest.tasks for a in t.stages["main"].attempts]
    recorded = load_recording(USAGE / "by-id.rec").result
    # sacct's rows of the recorded array, answered for the tasks' own ids (-j 2164_0 prints the same row)
    rows = "".join(line + "\n" for line in recorded.stdout.splitlines() if line.startswith(f"{array}_"))
    runner = ReplayRunner()
    argv = ["sacct", "--allocations", "--parsable2", "--noheader", "--duplicates",
            "--format=JobID,JobIDRaw,State,Account,AllocTRES,ElapsedRaw,Start", f"--jobs={','.join(asked)}"]
    runner.answer(argv, rows)
    found = api.ranked(paths, SlurmScheduler(cli(runner)))
    assert runner.count("sacct") == 1 and runner.count("squeue") == 0  # states fresh: only the accounting call
    hours = {t.task_id: t.gpu_hours for t in found.tasks}
    assert hours[0] == round(EXPECTED[f"{array}_0"] / 3600, 4) and hours[1] == round(EXPECTED[f"{array}_1"] / 3600, 4)
    assert {hours[t] for t in range(2, 12)} == {0.0} and found.usage_note == ""
    assert found.as_dict()["tasks"][0]["gpu_hours"] is not None


def test_the_local_launcher_counts_its_own_records(tmp_path: Path) -> None:
    store = LocalJobStore(tmp_path / ".local-jobs")
    store.directory.mkdir()
    base = dict(name="j", script="s", output="o", submit_dir=str(tmp_path), nodes=2, tasks_per_node=1,
                gpu_ids=[], time_limit_s=600, warning_s=None, state="COMPLETED", submitted_at=1000.0)
    store.write(LocalJob(job_id="1", gpus_per_node=2, started_at=1000.0, ended_at=1100.0, **base))
    store.write(LocalJob(job_id="2", gpus_per_node=1, started_at=5000.0, ended_at=5010.0, **base))
    store.write(LocalJob(job_id="3", gpus_per_node=1, started_at=None, ended_at=5020.0,  # cancelled before it ran
                         **{**base, "state": "CANCELLED"}))
    scheduler = LocalScheduler(store.directory)
    assert {u.job_id: u.gpu_seconds for u in scheduler.usage(["1", "2", "3"])} == {"1": 400, "2": 20, "3": 0}
    assert [u.job_id for u in scheduler.usage(since=4000.0)] == ["2", "3"]  # job 1 ended before


def test_pyslurm_refuses_a_listing_by_time_in_one_line() -> None:
    scheduler = PyslurmScheduler(module=object())
    with pytest.raises(HpcTfError, match="the pyslurm scheduler cannot list jobs by time") as refused:
        scheduler.usage(since=0.0, user=USER)
    assert refused.value.hint == "ask Slurm's tools instead: hpc-tf usage --set scheduler=cli"


def test_the_readme_usage_commands_on_the_local_launcher(runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the default site is the local launcher: its job records under the runs directory are the accounting
    monkeypatch.setenv("HPC_TF_RUNS_DIR", str(runs_root))
    monkeypatch.setenv("HOME", str(runs_root.parent))
    store = LocalJobStore(runs_root / ".local-jobs")
    store.directory.mkdir()
    now = time.time()
    base = dict(name="j", script="s", output="o", submit_dir=str(runs_root), nodes=1, tasks_per_node=1, gpu_ids=[],
                time_limit_s=600, warning_s=None, state="COMPLETED", submitted_at=now - 900)
    store.write(LocalJob(job_id=ROLES["array"], gpus_per_node=2, started_at=now - 900, ended_at=now - 540, **base))
    store.write(LocalJob(job_id=ROLES["two-gpus"], gpus_per_node=1, started_at=now - 500, ended_at=now - 320, **base))
    store.write(LocalJob(job_id="1", gpus_per_node=1, started_at=now - 40 * 86400, ended_at=now - 40 * 86400 + 60,
                         **base))  # before the last 30 days
    by_job = CliRunner().invoke(app, readme_argv("hpc-tf usage")[1:], env={"COLUMNS": "200"})
    assert by_job.exit_code == 0, by_job.output
    lines = [line.split() for line in by_job.stdout.splitlines()]
    campaign = read_manifest(CampaignPaths.at(next(runs_root.glob("*/manifest.json")).parent)).id
    assert lines[0][-4:] == ["(local", "launcher),", "by", "job"]
    assert lines[2] == [ROLES["array"], campaign, "main", "-", "COMPLETED", "2", "00:06:00", "0.20"]
    assert lines[3] == [ROLES["two-gpus"], "20261205-two-gpus", "-", "COMPLETED", "1", "00:03:00", "0.05"]
    assert by_job.stdout.splitlines()[-2:] == ["total: 0.25 GPU-hours (15 GPU-minutes) in 2 allocation(s)",
                                               "the local launcher has no GPU quota: no budget to compare with"]
    by_campaign = CliRunner().invoke(app, readme_argv("hpc-tf usage --since 7d --by campaign")[1:])
    assert by_campaign.exit_code == 0, by_campaign.output
    rows = [line.split() for line in by_campaign.stdout.splitlines()[2:4]]
    assert rows == [[campaign, "1", "00:06:00", "0.20"], ["(not", "in", "a", "campaign)", "1", "00:03:00", "0.05"]]


def test_pyslurm_reads_what_jobs_held_from_slurmdbds_records(monkeypatch: pytest.MonkeyPatch) -> None:
    # fields of db.Jobs recorded on the 25.11 cluster (tests/unit/test_scheduler_pyslurm_rows.py)
    recorded = json.loads((Path(__file__).parents[1] / "fixtures" / "slurm-25.11" / "pyslurm" / "scenario.json")
                          .read_text())["accounting"]
    scheduler = PyslurmScheduler(module=object())
    monkeypatch.setattr(scheduler, "accounting_records", lambda ids: recorded)
    found = {u.job_id: u for u in scheduler.usage(["463", "469"])}  # one read; other jobs' records left out
    assert sorted(found) == ["463", "469"]
    assert (found["469"].gpus, found["463"].gpus, found["463"].elapsed_s) == (1, 0, 1)
