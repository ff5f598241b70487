"""``hpc-tf status`` sentences for jobs pending on a GPU limit, from the recorded situations.

The status query (sacct + squeue) and the quota snapshot (assoc_mgr + squeue) of each situation were
recorded together by tests/integration/test_quota_slurm.py while the job really pended.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpc.quota import LimitKind, explain_waits, waits_on_gpu_quota
from hpc.quota.model import limit_for_reason
from hpc.scheduler import JobState, JobStatus, ReasonCategory, SlurmScheduler, parse_reason
from hpc.scheduler.replay import ReplayRunner, load_recording
from hpc.scheduler.run import RetryPolicy, SlurmCli

QUOTA = Path(__file__).parents[1] / "fixtures" / "quota" / "slurm-22.05"
USER = "researcher"


def setup(scenario: str) -> tuple[SlurmCli, ReplayRunner, dict[str, object]]:
    runner = ReplayRunner(load_recording(path).result for path in sorted((QUOTA / scenario).glob("*.rec")))
    roles: dict[str, object] = json.loads((QUOTA / scenario / "scenario.json").read_text())
    return SlurmCli(runner, retry=RetryPolicy(attempts=1)), runner, roles


def held(roles: dict[str, object]) -> str:
    holders = roles["holders"]
    assert isinstance(holders, list)
    return ", ".join(f"{h} (1 GPU)" for h in sorted(holders, key=int))


@pytest.mark.parametrize(
    ("scenario", "sentence"),
    [
        ("wait-qos",
         "waiting for GPU quota: QOS quota-test allows 2 GPUs per user, 2 in use by jobs {held}; this job needs 1 GPU"),
        ("wait-account",
         "waiting for GPU quota: account quota-test allows 4 GPUs, 4 in use by jobs {held}; this job needs 1 GPU"),
    ],
)
def test_a_quota_wait_is_explained_with_the_numbers(scenario: str, sentence: str) -> None:
    cli, runner, roles = setup(scenario)
    job_id = str(roles["waiting"])
    statuses = SlurmScheduler(cli).query([job_id])
    reason = statuses[job_id].reason
    assert reason is not None and reason.code == roles["reason"]
    before = len(runner.calls)
    assert explain_waits(statuses, cli, user=USER) == {job_id: sentence.format(held=held(roles))}
    assert [argv[0] for argv in runner.calls[before:]] == ["scontrol", "squeue"]  # two controller calls


def test_a_used_up_budget_is_explained() -> None:
    cli, _, roles = setup("budget-used-up")
    job_id = str(roles["waiting"])
    explained = explain_waits(SlurmScheduler(cli).query([job_id]), cli, user=USER)
    assert explained == {
        job_id: "the GPU-time budget of account quota-test is used up: 0 of 0 GPU-minutes (GrpTRESMins=gres/gpu=0); "
        "it will not start until an administrator raises it"
    }


def test_no_quota_wait_no_calls() -> None:
    runner = ReplayRunner()
    statuses = [
        JobStatus("1", JobState.RUNNING),
        JobStatus("2", JobState.PENDING, reason=parse_reason("Resources")),
        JobStatus("3", JobState.PENDING, reason=parse_reason("QOSMaxJobsPerUserLimit")),  # a quota, not on GPUs
    ]
    assert explain_waits(statuses, SlurmCli(runner), user=USER) == {}
    assert runner.calls == []


def test_when_slurm_does_not_answer_nothing_is_added() -> None:
    runner = ReplayRunner(load_recording(p).result for p in sorted((QUOTA / "controller-down").glob("*.rec")))
    status = JobStatus("5", JobState.PENDING, reason=parse_reason("AssocGrpGRES"), account="quota-test-a", gpus=1)
    assert explain_waits({"5": status}, SlurmCli(runner, retry=RetryPolicy(attempts=1)), user=USER) == {}


def test_a_job_over_a_per_job_cap_is_told_it_never_starts() -> None:
    cli, _, _ = setup("wait-qos")
    status = JobStatus("77", JobState.PENDING, reason=parse_reason("AssocMaxGRESPerNode"), account="quota-test-a",
                       gpus=4, nodes=1, time_limit_s=300)  # fmt: skip
    assert waits_on_gpu_quota(status)
    assert explain_waits([status], cli, user=USER) == {
        "77": "it can never start: account quota-test allows at most 3 GPUs per node (MaxTRESPerNode=gres/gpu=3) "
        "and it asks for 4 GPUs: cancel it (hpc-tf cancel 77) and submit it again with a smaller request"
    }


QOS_ONLY = (LimitKind.MAX_TRES_PER_USER, LimitKind.MAX_TRES_PER_ACCOUNT, LimitKind.MIN_TRES_PER_JOB)
GRES_LIMITS = [("QOS", kind) for kind in LimitKind] + [("Assoc", kind) for kind in LimitKind if kind not in QOS_ONLY]


@pytest.mark.parametrize(("scope", "kind"), GRES_LIMITS)
def test_every_gres_reason_maps_back_to_its_limit_and_is_a_quota_reason(scope: str, kind: LimitKind) -> None:
    code = kind.reason("Assoc" if scope == "Assoc" else "QOS")
    assert limit_for_reason(code) == (scope, kind)
    reason = parse_reason(code)
    assert reason is not None and reason.category is ReasonCategory.QUOTA
    assert reason.stuck is (kind.per_job or kind is LimitKind.GRP_TRES_MINS)


def test_other_reasons_are_not_gpu_limits() -> None:
    for code in ("AssocGrpCpuLimit", "Resources", "QOSMaxJobsPerUserLimit", "AssocGrpGRESX", ""):
        assert limit_for_reason(code) is None
