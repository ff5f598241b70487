"""The launch preflight on the recorded situations of tests/fixtures/quota/slurm-<version>/ (see the 22.05
README), each test on every Slurm version that recorded its scene.

Each verdict here was also checked on the live cluster (tests/integration/test_quota_slurm.py),
where a must-wait job really pends with the reason predicted and a never-fit one, forced, pends
forever with the reason named. Issue 19's three 25.11 failures are among them: a launch that must
wait on a QOS MaxTRESPerUser limit is predicted to wait, with the warning
(``test_must_wait_names…``, ``test_hpc_tf_launch_checks…``), and with slurmdbd down a launch over
that limit is refused (``test_slurmdbd_down_a_launch_over_a_qos_per_user_limit_is_refused``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from hpc.errors import QuotaRefused
from hpc.quota import (
    GpuRequest,
    LimitKind,
    QuotaFacts,
    QuotaVerdict,
    StoredAnswers,
    VerdictKind,
    check_launch,
    current_user,
    job_limits,
    judge,
    preflight,
)
from hpc.quota.facts import Calls, gather
from hpc.resolve import ResolvedJob
from hpc.scheduler.replay import ReplayRunner, load_recording
from hpc.scheduler.run import CommandResult
from tests.unit._quota_fixtures import USER, VERSIONS, MakeJob, cli, make_job, replay, roles, scene, tools

__all__ = ["make_job"]  # the fixture, used by name


def holder_ids(verdict: QuotaVerdict) -> list[str]:
    return [str(j.job_id) for j in verdict.holders]


@pytest.mark.parametrize("version", VERSIONS)
def test_must_wait_names_the_limit_the_jobs_holding_it_and_the_pending_reason(make_job: MakeJob, version: str) -> None:
    scene = roles("overview", version)
    verdict = preflight(make_job(1, qos="quota-test"), cli(replay("overview", version)), user=USER)
    assert (verdict.kind, verdict.reason) == (VerdictKind.MUST_WAIT, "QOSMaxGRESPerUser")
    assert verdict.limit is not None and verdict.limit.setting == "MaxTRESPerUser=gres/gpu=2"
    holders = scene["holders"]
    assert isinstance(holders, list) and holder_ids(verdict) == holders
    first, second = holders
    assert verdict.message == (
        "must wait: QOS quota-test allows one user 2 GPUs at once (MaxTRESPerUser=gres/gpu=2); 2 in use by jobs "
        f"{first} (1 GPU), {second} (1 GPU), and this job asks for 1 GPU. It will pend (QOSMaxGRESPerUser) "
        "until 1 GPU is free"
    )
    # the job names its QOS: no association query; squeue only because it must wait
    assert tools(verdict) == ["scontrol", "sacctmgr", "squeue"]
    assert verdict.blocks and verdict.to_dict()["reason"] == "QOSMaxGRESPerUser"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_job_that_fits_costs_three_calls_and_no_squeue(make_job: MakeJob, version: str) -> None:
    verdict = preflight(make_job(1), cli(replay("overview", version)), user=USER)
    assert verdict.kind is VerdictKind.OK and verdict.qos == "normal" and not verdict.blocks
    assert verdict.message == "GPU quota: 1 GPU for 5 min fits (account quota-test: 2 of 4 GPUs free)"
    assert tools(verdict) == ["scontrol", "sacctmgr", "sacctmgr"]


def test_no_gpus_no_calls(make_job: MakeJob) -> None:
    runner = ReplayRunner()
    verdict = preflight(make_job(0), cli(runner), user=USER)
    assert verdict.kind is VerdictKind.OK and runner.calls == []


@pytest.mark.parametrize(
    ("gpus_per_node", "nodes", "qos", "time_limit", "reason", "message"),
    [
        (3, 2, None, "5:00", "AssocGrpGRES",
         "can never run: account quota-test allows 4 GPUs at once (GrpTRES=gres/gpu=4) and this job asks for "
         "6 GPUs. Slurm would keep it pending forever (AssocGrpGRES)"),
        (3, 1, "quota-test", "5:00", "QOSMaxGRESPerUser",
         "can never run: QOS quota-test allows one user 2 GPUs at once (MaxTRESPerUser=gres/gpu=2) and this job "
         "asks for 3 GPUs. Slurm would keep it pending forever (QOSMaxGRESPerUser)"),
        (4, 1, None, "5:00", "AssocMaxGRESPerNode",
         "can never run: account quota-test allows at most 3 GPUs per node (MaxTRESPerNode=gres/gpu=3) and this "
         "job asks for 4 GPUs per node. Slurm would keep it pending forever (AssocMaxGRESPerNode)"),
        (2, 2, None, "5:00:00", "AssocGrpGRESMinutes",
         "can never run to its time limit: it may use 1200 GPU-minutes (4 GPUs × 300 min), but account quota-test "
         "has 1000 GPU-minutes left of its budget (GrpTRESMins=gres/gpu=1000), 0 used. Slurm would stop it when "
         "the budget runs out"),
    ],
)
@pytest.mark.parametrize("version", VERSIONS)
def test_never_fits_names_the_limit_its_value_and_the_request(
    make_job: MakeJob, gpus_per_node: int, nodes: int, qos: str | None, time_limit: str, reason: str, message: str,
    version: str,
) -> None:
    verdict = preflight(make_job(gpus_per_node, nodes, qos, time_limit), cli(replay("overview", version)), user=USER)
    assert (verdict.kind, verdict.reason, verdict.message) == (VerdictKind.NEVER_FITS, reason, message)
    assert "squeue" not in tools(verdict)
    refusal = verdict.refusal()
    assert isinstance(refusal, QuotaRefused) and refusal.exit_code == 3 and refusal.hint


@pytest.mark.parametrize("version", VERSIONS)
def test_a_never_fit_wins_over_a_wait_and_all_findings_are_kept(make_job: MakeJob, version: str) -> None:
    # 4 GPUs on one node: over the per-node cap (never) and over what the account has free now (wait)
    verdict = preflight(make_job(4), cli(replay("overview", version)), user=USER)
    assert verdict.reason == "AssocMaxGRESPerNode"
    assert [(f.limit.reason, f.kind) for f in verdict.findings] == [
        ("AssocMaxGRESPerNode", VerdictKind.NEVER_FITS),
        ("AssocGrpGRES", VerdictKind.MUST_WAIT),
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_used_up_budget_never_fits(make_job: MakeJob, version: str) -> None:
    verdict = preflight(make_job(1), cli(replay("budget-used-up", version)), user=USER)
    assert (verdict.kind, verdict.reason) == (VerdictKind.NEVER_FITS, "AssocGrpGRESMinutes")
    assert verdict.message.startswith(
        "can never run: the GPU-time budget of account quota-test is used up: 0 of 0 GPU-minutes "
        "(GrpTRESMins=gres/gpu=0)"
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_a_qos_limit_replaces_the_association_limit_of_the_same_kind(make_job: MakeJob, version: str) -> None:
    scene = roles("qos-overrides", version)
    # the account allows 2 and 3 are in use, but QOS quota-test-wide sets its own GrpTRES (6): fits
    wide = preflight(make_job(1, qos="quota-test-wide"), cli(replay("qos-overrides", version)), user=USER)
    assert wide.kind is VerdictKind.OK, wide.message
    assert wide.message.endswith("(QOS quota-test-wide: 3 of 6 GPUs free)")
    plain = preflight(make_job(1), cli(replay("qos-overrides", version)), user=USER)
    assert (plain.kind, plain.reason) == (VerdictKind.MUST_WAIT, "AssocGrpGRES")
    assert holder_ids(plain) == scene["holders"]
    assert "account quota-test allows 2 GPUs at once (GrpTRES=gres/gpu=2); 3 in use by jobs" in plain.message
    assert plain.message.endswith("until 2 GPUs are free")


@pytest.mark.parametrize("version", VERSIONS)
def test_job_limits_follow_slurms_order_and_precedence(version: str) -> None:
    runner = replay("qos-overrides", version)
    facts = gather(Calls(cli(runner)), USER, qos="quota-test-wide")
    assoc = facts.association("quota-test-a")
    assert assoc is not None
    limits = job_limits(facts, assoc, "quota-test-wide")
    assert [(lim.kind, str(lim.owner)) for lim in limits] == [
        (LimitKind.MAX_TRES_PER_NODE, "account quota-test"),  # per-job caps first
        (LimitKind.GRP_TRES, "QOS quota-test-wide"),  # then the QOS
        (LimitKind.GRP_TRES_MINS, "account quota-test"),  # then the associations (GrpTRES replaced)
    ]
    plain = job_limits(facts, assoc, "normal")
    assert (LimitKind.GRP_TRES, "account quota-test") in [(lim.kind, str(lim.owner)) for lim in plain]


@pytest.mark.parametrize("version", VERSIONS)
def test_slurmdbd_down_association_limits_still_checked(make_job: MakeJob, version: str) -> None:
    unknown = preflight(make_job(1, qos="quota-test"), cli(replay("slurmdbd-down", version)), user=USER)
    assert unknown.kind is VerdictKind.UNKNOWN
    assert unknown.message == (
        "GPU quota only partly checked: Slurm's accounting daemon (slurmdbd) is not answering; QOS quota-test: "
        "per-user and per-account limits not checked (slurmdbd did not answer)"
    )
    never = preflight(make_job(3, nodes=2), cli(replay("slurmdbd-down", version)), user=USER)
    assert (never.kind, never.reason) == (VerdictKind.NEVER_FITS, "AssocGrpGRES")
    assert "the job's QOS is not known (slurmdbd did not answer): QOS limits not checked" in never.warnings


@pytest.mark.parametrize("version", VERSIONS)
def test_slurmdbd_down_a_launch_over_a_qos_per_user_limit_is_refused(make_job: MakeJob, version: str) -> None:
    # slurmdbd stopped after the user ran jobs in QOS quota-test: the controller still shows that QOS's
    # per-user limit (22.05 under "1001", 25.11 under "researcher(1001)") and enforces it
    job = make_job(3, qos="quota-test")
    verdict = preflight(job, cli(replay("slurmdbd-down", version)), user=USER)
    assert (verdict.kind, verdict.reason) == (VerdictKind.NEVER_FITS, "QOSMaxGRESPerUser")
    assert verdict.message.startswith(
        "can never run: QOS quota-test allows one user 2 GPUs at once (MaxTRESPerUser=gres/gpu=2) and this job "
        "asks for 3 GPUs"
    )
    with pytest.raises(QuotaRefused, match="MaxTRESPerUser=gres/gpu=2"):
        check_launch(job, cli=cli(replay("slurmdbd-down", version)), user=USER)


@pytest.mark.parametrize("version", VERSIONS)
def test_hanging_accounting_is_cut_off_at_the_timeout(make_job: MakeJob, version: str) -> None:
    verdict = preflight(make_job(1), cli(replay("accounting-hangs", version)), user=USER)
    assert verdict.kind is VerdictKind.UNKNOWN
    assert verdict.message.startswith(
        "GPU quota only partly checked: Slurm's accounting daemon (slurmdbd) did not answer: "
        "sacctmgr did not answer within 5 s"
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_controller_down_is_unknown_not_an_error(make_job: MakeJob, version: str) -> None:
    verdict = preflight(make_job(1), cli(replay("controller-down", version)), user=USER)
    assert verdict.kind is VerdictKind.UNKNOWN and not verdict.blocks
    assert verdict.message == "GPU quota not checked: the Slurm controller (slurmctld) is not answering"


class SlowRunner(ReplayRunner):
    """Answers from recordings, each after ``delay_s``."""

    def __init__(self, results: Sequence[CommandResult], delay_s: float) -> None:
        super().__init__(results)
        self.delay_s = delay_s

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        time.sleep(self.delay_s)
        return super().__call__(argv, timeout)


def test_the_whole_check_stays_within_its_budget(make_job: MakeJob) -> None:
    recorded = [load_recording(p).result for p in sorted(scene("overview").glob("*.rec"))]
    runner = SlowRunner(recorded, delay_s=0.2)
    started = time.monotonic()
    verdict = preflight(make_job(1), cli(runner), user=USER, budget_s=0.1)
    assert time.monotonic() - started < 1.0
    assert [argv[0] for argv in runner.calls] == ["scontrol"]  # the budget was spent after the first call
    assert verdict.kind is VerdictKind.UNKNOWN and "the quota check used up its 0.1 s" in verdict.message


@pytest.mark.parametrize("version", VERSIONS)
def test_an_unknown_account_never_fits(make_job: MakeJob, version: str) -> None:
    verdict = preflight(make_job(1, account="physics"), cli(replay("overview", version)), user=USER)
    assert verdict.kind is VerdictKind.NEVER_FITS
    assert verdict.message == (
        "user researcher may not use account physics on cluster lab: sbatch would refuse the job "
        "(accounts: lab, quota-test-a)"
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_without_an_account_the_default_association_is_used(make_job: MakeJob, version: str) -> None:
    verdict = preflight(make_job(1, account=None), cli(replay("overview", version)), user=USER)
    assert verdict.account == "lab"  # researcher's default association (DefAssoc=Yes)


@pytest.mark.parametrize("version", VERSIONS)
def test_judge_is_pure(version: str) -> None:
    facts = gather(Calls(cli(replay("overview", version))), USER)
    request = GpuRequest(gpus=2, gpus_per_node=2, nodes=1, minutes=10)
    assert judge(facts, request, account="quota-test-a", qos="quota-test", partition="gpu").reason == (
        "QOSMaxGRESPerUser"
    )
    assert judge(facts, request, account="quota-test-a", qos=None, partition="gpu").kind is VerdictKind.OK
    typed = GpuRequest(gpus=1, gpus_per_node=1, nodes=1, minutes=10, gpu_type="a100")
    assert typed.tres_names == ("gres/gpu", "gres/gpu:a100")
    assert judge(facts, typed, account="quota-test-a", qos=None, partition=None).kind is VerdictKind.OK
    assert isinstance(facts, QuotaFacts) and facts.cluster == "lab" and facts.uid == 1001


@pytest.mark.parametrize("version", VERSIONS)
def test_check_launch_refuses_or_lets_through(make_job: MakeJob, version: str) -> None:
    never = make_job(3, nodes=2)
    with pytest.raises(QuotaRefused, match="GrpTRES=gres/gpu=4") as refused:
        check_launch(never, cli=cli(replay("overview", version)), user=USER)
    assert refused.value.exit_code == 3
    forced = check_launch(never, force=True, cli=cli(replay("overview", version)), user=USER)
    assert forced.kind is VerdictKind.NEVER_FITS
    wait = make_job(1, qos="quota-test")
    assert check_launch(wait, cli=cli(replay("overview", version)), user=USER).kind is VerdictKind.MUST_WAIT
    with pytest.raises(QuotaRefused, match="must wait") as no_queue:
        check_launch(wait, no_queue=True, cli=cli(replay("overview", version)), user=USER)
    assert "without --no-queue" in str(no_queue.value)
    unknown = check_launch(make_job(1), no_queue=True, cli=cli(replay("controller-down", version)), user=USER)
    assert unknown.kind is VerdictKind.UNKNOWN  # never blocks a launch


class Submitted:
    """Stands in for the scheduler's submit: the launch path up to sbatch is what is tested here."""

    name = "recording"

    def __init__(self) -> None:
        self.scripts: list[str] = []

    def submit(self, script_path: object, extra_args: object = ()) -> str:
        self.scripts.append(str(script_path))
        return "4242"


@pytest.mark.parametrize(
    ("resources", "flags", "refused", "says"),
    [
        ("{nodes: 2, gpus_per_node: 3}", [], True, "can never run: account quota-test allows 4 GPUs at once"),
        ("{nodes: 2, gpus_per_node: 3}", ["--force"], False, "submitting anyway (--force)"),
        ("{nodes: 1, gpus_per_node: 1, qos: quota-test}", [], False, "warning: must wait: QOS quota-test"),
        ("{nodes: 1, gpus_per_node: 1, qos: quota-test}", ["--no-queue"], True, "hint: submit without --no-queue"),
        ("{nodes: 1, gpus_per_node: 1}", [], False, "GPU quota: 1 GPU for 30 min fits"),
    ],
)
@pytest.mark.parametrize("version", VERSIONS)
def test_hpc_tf_launch_checks_the_quota_before_sbatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resources: str, flags: list[str], refused: bool, says: str,
    version: str,
) -> None:
    from typer.testing import CliRunner

    from hpc.cli import app

    scheduler = Submitted()
    monkeypatch.setattr("hpc.backends.scheduler_for", lambda *_: scheduler)

    def check(job: ResolvedJob, force: bool, no_queue: bool, stored: StoredAnswers) -> QuotaVerdict:
        assert stored.path == tmp_path / ".cache" / "hpc-tf" / f"slurmdbd-{current_user()}.json" and stored.reuse
        return check_launch(
            job, force=force, no_queue=no_queue, cli=cli(replay("overview", version)), user=USER, stored=stored
        )

    monkeypatch.setattr("hpc.quota.check_launch", check)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    spec = tmp_path / "job.yaml"
    spec.write_text(f"name: q\ncommand: [sleep, '1']\nresources: {resources}\n")
    argv = ["launch", str(spec), "--site", "sandbox", "--set", "account=quota-test-a",
            "--set", f"runs_dir={tmp_path / 'runs'}", *flags]  # fmt: skip
    result = CliRunner(env={"COLUMNS": "300"}).invoke(app, argv)
    if refused:  # the CLI's main turns it into exit code 3
        assert isinstance(result.exception, QuotaRefused) and result.exception.exit_code == 3
        assert says in " ".join(str(result.exception).split())
        assert scheduler.scripts == [] and result.stdout == ""
        assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    else:
        assert result.exit_code == 0, result.output
        assert says in " ".join(result.stderr.split())
        assert len(scheduler.scripts) == 1 and result.stdout == "4242\n"
