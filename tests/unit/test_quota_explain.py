"""``hpc-tf status`` sentences for jobs pending on a GPU limit, from the recorded situations.

The status query (sacct + squeue) and the quota snapshot (assoc_mgr + squeue) of each situation were
recorded together by tests/integration/test_quota_slurm.py while the job really pended; each test runs
on every Slurm version that recorded its scene (:func:`tests.unit._quota_fixtures.recorded_in`).
"""

from __future__ import annotations

import pytest

from hpc.quota import LimitKind, explain_waits, waits_on_gpu_quota
from hpc.quota.model import limit_for_reason
from hpc.scheduler import JobState, JobStatus, ReasonCategory, SlurmScheduler, parse_reason
from hpc.scheduler.replay import ReplayRunner
from hpc.scheduler.run import RetryPolicy, SlurmCli
from tests.unit._quota_fixtures import USER, recorded_in, replay, roles


def setup(scenario: str, version: str = "22.05") -> tuple[SlurmCli, ReplayRunner, dict[str, object]]:
    runner = replay(scenario, version)
    return SlurmCli(runner, retry=RetryPolicy(attempts=1)), runner, roles(scenario, version)


def held(roles: dict[str, object]) -> str:
    holders = roles["holders"]
    assert isinstance(holders, list)
    return ", ".join(f"{h} (1 GPU)" for h in sorted(holders, key=int))


WAITS = {
    "wait-qos":
        "waiting for GPU quota: QOS quota-test allows 2 GPUs per user, 2 in use by jobs {held}; this job needs 1 GPU",
    "wait-account":
        "waiting for GPU quota: account quota-test allows 4 GPUs, 4 in use by jobs {held}; this job needs 1 GPU",
}


@pytest.mark.parametrize(
    ("scenario", "version"), [(scenario, version) for scenario in WAITS for version in recorded_in(scenario)]
)
def test_a_quota_wait_is_explained_with_the_numbers(scenario: str, version: str) -> None:
    sentence = WAITS[scenario]
    cli, runner, roles = setup(scenario, version)
    job_id = str(roles["waiting"])
    statuses = SlurmScheduler(cli).query([job_id])
    reason = statuses[job_id].reason
    assert reason is not None and reason.code == roles["reason"]
    before = len(runner.calls)
    assert explain_waits(statuses, cli, user=USER) == {job_id: sentence.format(held=held(roles))}
    assert [argv[0] for argv in runner.calls[before:]] == ["scontrol", "squeue"]  # two controller calls


@pytest.mark.parametrize("version", recorded_in("budget-used-up"))
def test_a_used_up_budget_is_explained(version: str) -> None:
    cli, _, roles = setup("budget-used-up", version)
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


@pytest.mark.parametrize("version", recorded_in("controller-down"))
def test_when_slurm_does_not_answer_nothing_is_added(version: str) -> None:
    runner = replay("controller-down", version)
    status = JobStatus("5", JobState.PENDING, reason=parse_reason("AssocGrpGRES"), account="quota-test-a", gpus=1)
    assert explain_waits({"5": status}, SlurmCli(runner, retry=RetryPolicy(attempts=1)), user=USER) == {}


@pytest.mark.parametrize("version", recorded_in("wait-qos"))
def test_a_job_over_a_per_job_cap_is_told_it_never_starts(version: str) -> None:
    cli, _, _ = setup("wait-qos", version)
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
