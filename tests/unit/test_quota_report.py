"""``hpc-tf quota`` and the GPU ceiling, on the recorded situations of tests/fixtures/quota/slurm-<version>/,
each test on every Slurm version that recorded its scene (issue 19: 25.11 showed a QOS MaxTRESPerUser
limit's use as 0 while the user held 2 GPUs)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from hpc.cli import app
from hpc.errors import HpcTfError, SchedulerUnavailable
from hpc.quota import (
    GpuLimit,
    LimitKind,
    Owner,
    QuotaReport,
    StoredAnswers,
    concurrent_gpus,
    gpu_ceiling,
    quota_report,
)
from hpc.scheduler.replay import ReplayRunner
from hpc.scheduler.run import RetryPolicy, SlurmCli
from tests.unit._quota_fixtures import USER, VERSIONS, replay, roles


def setup(scenario: str, version: str = "22.05") -> tuple[SlurmCli, ReplayRunner]:
    runner = replay(scenario, version)
    return SlurmCli(runner, retry=RetryPolicy(attempts=1)), runner


def report_of(scenario: str, version: str = "22.05", account: str | None = "quota-test-a") -> QuotaReport:
    cli, _ = setup(scenario, version)
    return quota_report(account, cli, user=USER)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_limit_on_the_path_with_its_live_use(version: str) -> None:
    scene: Any = roles("overview", version)
    holders, waiting = scene["holders"], scene["waiting"]
    cli, runner = setup("overview", version)
    data: Any = quota_report("quota-test-a", cli, user=USER).to_dict()
    assert [argv[0] for argv in runner.calls] == ["scontrol", "sacctmgr", "sacctmgr", "squeue"]
    assert (data["cluster"], data["user"], data["accounting_available"], data["warnings"]) == ("lab", USER, True, [])
    (assoc,) = data["associations"]
    assert (assoc["account"], assoc["default"], assoc["default_qos"]) == ("quota-test-a", False, "normal")
    assert assoc["qos"] == ["normal", "quota-test", "quota-test-wide"]
    assert [(p["set_on"], p["gpus_in_use"]) for p in assoc["path"][:3]] == [
        ("user researcher in account quota-test-a", 2), ("account quota-test-a", 2), ("account quota-test", 2),
    ]  # fmt: skip
    assert assoc["path"][3]["set_on"] == "account root" and assoc["path"][3]["gpus_in_use"] >= 2  # + account lab
    limits = {(lim["limit"], lim["set_on"]): lim for lim in assoc["limits"]}
    assert set(limits) == {
        ("MaxTRESPerNode", "account quota-test"), ("GrpTRESMins", "account quota-test"),
        ("GrpTRES", "account quota-test"),
    }  # fmt: skip
    grp = limits["GrpTRES", "account quota-test"]
    assert (grp["value"], grp["used"], grp["remaining"], grp["reason"]) == (4, 2, 2, "AssocGrpGRES")
    assert (grp["running_jobs"], grp["pending_jobs"], grp["pending_gpus"]) == (holders, [waiting], 1)
    budget = limits["GrpTRESMins", "account quota-test"]
    assert (budget["value"], budget["unit"], budget["reason"]) == (1000, "GPU-minutes", "AssocGrpGRESMinutes")
    assert budget["remaining"] == 1000 - budget["used"] and budget["pending_jobs"] == []
    per_node = limits["MaxTRESPerNode", "account quota-test"]
    assert (per_node["value"], per_node["used"], per_node["pending_gpus"]) == (3, None, None)

    qos = {q["name"]: q for q in data["qos"]}
    assert set(qos) == {"normal", "quota-test", "quota-test-wide"} and qos["normal"]["limits"] == []
    (per_user,) = qos["quota-test"]["limits"]
    assert (per_user["limit"], per_user["value"], per_user["used"]) == ("MaxTRESPerUser", 2, 2)
    assert (per_user["running_jobs"], per_user["pending_jobs"]) == (holders, [waiting])
    (wide,) = qos["quota-test-wide"]["limits"]
    assert (wide["limit"], wide["value"], wide["used"], wide["reason"]) == ("GrpTRES", 6, 0, "QOSGrpGRES")
    jobs = [(j["job_id"], j["state"], j["reason"]) for j in data["jobs"]]
    assert jobs == [*((h, "RUNNING", None) for h in holders), (waiting, "PENDING", "QOSMaxGRESPerUser")]
    json.dumps(data)


@pytest.mark.parametrize("version", VERSIONS)
def test_with_slurmdbd_down_the_controllers_view_is_shown_and_marked(version: str) -> None:
    data: Any = report_of("slurmdbd-down", version).to_dict()
    assert data["accounting_available"] is False and data["complete"] is False
    assert data["warnings"] == ["Slurm's accounting daemon (slurmdbd) is not answering"]
    (assoc,) = data["associations"]
    assert assoc["qos"] is None and assoc["default_qos"] is None
    assert {(lim["limit"], lim["value"]) for lim in assoc["limits"]} == {
        ("MaxTRESPerNode", 3), ("GrpTRESMins", 1000), ("GrpTRES", 4)
    }
    # QOS limits the controller shows: GrpTRES of quota-test-wide, and MaxTRESPerUser once the user has used it
    limits = {(q["name"], lim["limit"], lim["value"]) for q in data["qos"] for lim in q["limits"]}
    assert limits == {("quota-test", "MaxTRESPerUser", 2), ("quota-test-wide", "GrpTRES", 6)}


@pytest.mark.parametrize("version", VERSIONS)
def test_a_qos_that_replaces_the_account_limit_shows_the_account_over_its_own(version: str) -> None:
    data: Any = report_of("qos-overrides", version).to_dict()
    (assoc,) = data["associations"]
    grp = next(lim for lim in assoc["limits"] if lim["limit"] == "GrpTRES")
    assert (grp["value"], grp["used"], grp["remaining"]) == (2, 3, 0)


@pytest.mark.parametrize("version", VERSIONS)
def test_an_account_the_user_does_not_have_is_an_error_naming_the_ones_it_has(version: str) -> None:
    cli, _ = setup("overview", version)
    with pytest.raises(HpcTfError, match="has no association with account physics") as err:
        quota_report("physics", cli, user=USER)
    assert err.value.hint == "accounts of researcher: lab, quota-test-a"


@pytest.mark.parametrize("version", VERSIONS)
def test_controller_down_is_an_error(version: str) -> None:
    cli, _ = setup("controller-down", version)
    with pytest.raises(SchedulerUnavailable, match="controller"):
        quota_report(None, cli, user=USER)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_command_is_one_call_and_prints_json_or_a_table(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    calls: list[str | None] = []

    def fake(account: str | None = None, *, stored: StoredAnswers) -> QuotaReport:
        assert not stored.reuse  # the overview always asks slurmdbd, and remembers its answers
        calls.append(account)
        return report_of("overview" if account else "slurmdbd-down", version)

    monkeypatch.setattr("hpc.cli.quota.quota_report", fake)
    result = CliRunner().invoke(app, ["quota", "--site", "sandbox", "--account", "quota-test-a", "--json"])
    assert result.exit_code == 0, result.output
    assert calls == ["quota-test-a"]
    assert json.loads(result.stdout) == report_of("overview", version).to_dict()

    table = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["quota", "--site", "sandbox", "-A", "quota-test-a"])
    assert table.exit_code == 0, table.output
    for text in ("GPU quota of researcher on cluster lab", "account quota-test-a", "GrpTRES gres/gpu",
                 "MaxTRESPerUser gres/gpu", "GrpTRESMins gres/gpu", "AssocGrpGRES", "QOSMaxGRESPerUser",
                 "QOS quota-test-wide"):  # fmt: skip
        assert text in table.stdout, text
    holders = roles("overview", version)["holders"]
    assert isinstance(holders, list)
    # the QOS's per-user use, with the jobs holding it: what 25.11 showed as 0
    row = f"MaxTRESPerUser gres/gpu QOS quota-test 2 GPUs 2 ({', '.join(holders)})"
    assert row in " ".join(table.stdout.split())
    degraded = CliRunner().invoke(app, ["quota", "--site", "sandbox"])
    assert degraded.exit_code == 0 and calls[-1] is None
    assert "warning: Slurm's accounting daemon (slurmdbd) is not answering" in " ".join(degraded.stderr.split())


# --- how many GPUs at once (campaign throttles) --------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_the_gpu_ceiling_of_a_qos_and_of_the_account(version: str) -> None:
    cli, _ = setup("overview", version)
    per_user = concurrent_gpus("quota-test-a", "quota-test", user=USER, cli=cli)
    assert (per_user.gpus, per_user.free_now) == (2, 0)
    assert per_user.limit is not None and per_user.limit.reason == "QOSMaxGRESPerUser"
    assert per_user.max_tasks(1) == 2 and per_user.max_tasks(2) == 1 and per_user.max_tasks(3) == 0
    cli, _ = setup("overview", version)
    account = concurrent_gpus("quota-test-a", user=USER, cli=cli)  # QOS normal: the account's GrpTRES
    assert (account.gpus, account.free_now, account.warnings) == (4, 2, ())
    assert account.limit is not None and str(account.limit.owner) == "account quota-test"


def test_the_gpu_ceiling_without_limits_and_with_run_minutes() -> None:
    assert gpu_ceiling([]).gpus is None and gpu_ceiling([]).max_tasks(1) is None
    account = Owner("account", "lab")
    limits = [
        GpuLimit(account, LimitKind.GRP_TRES, "gres/gpu", 8, 3),
        GpuLimit(Owner("qos", "normal"), LimitKind.MAX_TRES_PER_USER, "gres/gpu", 6, 1),
        GpuLimit(account, LimitKind.GRP_TRES_RUN_MINS, "gres/gpu", 1200, 0),
        GpuLimit(account, LimitKind.MAX_TRES_PER_JOB, "gres/gpu", 2),  # per job: no bound on concurrency
        GpuLimit(account, LimitKind.GRP_TRES, "gres/gpu:a100", 1, 0),  # another TRES
    ]
    ceiling = gpu_ceiling(limits)
    assert (ceiling.gpus, ceiling.free_now) == (6, 5)
    assert ceiling.max_tasks(2) == 3  # 6 GPUs / 2
    assert ceiling.max_tasks(2, minutes_per_task=300) == 2  # 1200 GPU-minutes / (2 × 300)
    assert gpu_ceiling(limits, "gres/gpu:a100").gpus == 1
