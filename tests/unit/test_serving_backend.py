"""The serving-node job is submitted through its launcher's backend, as every job is: the backend's
quota preflight (a no-op: the node asks for no GPUs) and the backend's submit (sbatch answered as
Slurm 22.05 answers it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc.backends import CHECK_QUOTA, QuotaPolicy, SlurmBackend
from hpc.quota import QuotaVerdict
from hpc.resolve import ResolvedJob
from hpc.scheduler import NO_OPTIONS, SlurmCli, SlurmScheduler, SubmitOptions, commands
from hpc.scheduler.replay import ReplayRunner
from hpc.scheduler.run import RetryPolicy
from hpc.serving import secret as node_secret
from hpc.serving.slurm_node import plan_slurm_node, submit_slurm_node
from tests.unit._quota_fixtures import USER, cli


class Watched(SlurmBackend):
    """The Slurm backend, noting what it was asked."""

    def __init__(self, sbatch: ReplayRunner, quota: ReplayRunner) -> None:
        super().__init__(SlurmScheduler(SlurmCli(sbatch, retry=RetryPolicy(attempts=1), sleep=lambda _: None)),
                         quota_cli=cli(quota), user=USER)
        self.checked: list[QuotaVerdict | None] = []
        self.submitted: list[Path] = []

    def check_quota(self, job: ResolvedJob, policy: QuotaPolicy = CHECK_QUOTA) -> QuotaVerdict | None:
        verdict = super().check_quota(job, policy)
        self.checked.append(verdict)
        return verdict

    def submit(self, script_path: Path | str, options: SubmitOptions = NO_OPTIONS) -> str:
        self.submitted.append(Path(script_path))
        return super().submit(script_path, options)


def test_the_serving_node_is_submitted_through_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    plan = plan_slurm_node("sandbox", [], repository=tmp_path / "repo")
    sbatch, quota = ReplayRunner(), ReplayRunner()  # quota answers nothing: a Slurm call would fail the test
    sbatch.answer(commands.sbatch(plan.script_path, []), stdout="4242\n")
    backend = Watched(sbatch, quota)
    assert submit_slurm_node(plan, backend) == "4242"
    assert backend.submitted == [plan.script_path] and plan.script_path.is_file()
    [verdict] = backend.checked  # preflight ran, on the resolved job, and asked Slurm nothing
    assert verdict is not None and verdict.message == "no GPUs requested: the GPU quota does not apply"
    assert quota.calls == [] and plan.resolved.total_gpus == 0
    assert node_secret.key_file(plan.repository.root).exists()
