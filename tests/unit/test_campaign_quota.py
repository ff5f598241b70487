"""A campaign passes the same GPU quota preflight as launch, through its launcher's backend, on the
recorded situations of tests/fixtures/quota/slurm-22.05 (see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc.backends import SlurmBackend
from hpc.campaign.load import load_campaign_text
from hpc.campaign.plan import CampaignPlan, plan_campaign
from hpc.campaign.submit import submit_campaign
from hpc.errors import QuotaRefused
from hpc.quota import VerdictKind, notices
from hpc.scheduler import SlurmScheduler, commands
from hpc.scheduler.replay import ReplayRunner, load_recording
from hpc.scheduler.run import RetryPolicy, SlurmCli
from hpc.site.load import load_site
from tests.unit._quota_fixtures import QUOTA, USER, cli, replay

SWEEP = "parameters: {list: [{x: 1}, {x: 2}, {x: 3}, {x: 4}]}\n"


def make_plan(tmp_path: Path, resources: str, throttle: int | None = None) -> CampaignPlan:
    text = f"name: sweep\njob: {{command: [python3, t.py], resources: {{{resources}}}}}\n{SWEEP}"
    env = {"HOME": str(tmp_path), "USER": USER}
    site = load_site("sandbox", [f"runs_dir={tmp_path / 'runs'}"], environ=env)
    return plan_campaign(load_campaign_text(text, tmp_path / "campaign.yaml"), site, "sweep-1", environ=env,
                         gpu_limit=None, max_array_size=1001, throttle=throttle)


def backend(quota: ReplayRunner, sbatch: ReplayRunner) -> SlurmBackend:
    scheduler = SlurmScheduler(SlurmCli(sbatch, retry=RetryPolicy(attempts=1), sleep=lambda _: None))
    return SlurmBackend(scheduler, quota_cli=cli(quota), user=USER)


def test_a_campaign_whose_gpu_stage_can_never_fit_is_refused_and_leaves_no_directory(tmp_path: Path) -> None:
    # 4 GPUs on one node: over the account's per-node cap (MaxTRESPerNode=gres/gpu=3)
    plan = make_plan(tmp_path, "nodes: 1, gpus_per_node: 4, partition: gpu, account: quota-test-a, time: '5:00'")
    sbatch = ReplayRunner()  # answers nothing: a call to sbatch would fail the test
    with pytest.raises(QuotaRefused, match="can never run") as refused:
        submit_campaign(plan, backend(replay("overview"), sbatch))
    assert refused.value.exit_code == 3
    assert sbatch.calls == []
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_a_throttled_array_that_must_wait_is_submitted_with_the_warning(tmp_path: Path) -> None:
    # QOS quota-test-wide: 3 of 6 GPUs free. One task (1 GPU) fits; 4 at once (the throttle) must wait
    plan = make_plan(tmp_path, "nodes: 1, gpus_per_node: 1, partition: gpu, account: quota-test-a, "
                               "qos: quota-test-wide, time: '5:00'", throttle=4)
    quota = replay("qos-overrides")
    # the scene's three running jobs are all of QOS quota-test-wide (see the recording's note): squeue
    # asked for that QOS's jobs answers with the same lines
    recorded = load_recording(QUOTA / "qos-overrides" / "05-squeue.rec").result
    quota.answer([*recorded.argv[:-1], "--qos=quota-test-wide"], stdout=recorded.stdout)
    sbatch = ReplayRunner()
    sbatch.answer(commands.sbatch(plan.paths.submission_script("main", 1), ["--array=0-3%4"]), stdout="300\n")
    submitted = submit_campaign(plan, backend(quota, sbatch))
    assert submitted.job_ids == ("300",)
    [verdict] = submitted.quota
    assert verdict.kind is VerdictKind.MUST_WAIT
    assert verdict.message.startswith("must wait:") and "asks for 4 GPUs" in verdict.message
    assert any(is_warning for _, is_warning in notices(verdict))  # hpc-tf campaign run prints it as a warning
