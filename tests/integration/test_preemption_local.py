"""Checkpoint on a warning and exact resume in the user's process, as two local workers (no Slurm).

Each worker starts as the batch script starts it — the installed ``runtime/bootstrap.py --resolved
resolved.json -- python SCRIPT`` — with the environment Slurm gave the two tasks of a CPU step
(recorded on the test cluster), ``cpu1`` pointed at 127.0.0.1. A "preempted" run gets USR1 (what
the batch shell's trap forwards) or SIGKILL mid-training, is started again the way a requeue
starts it, and must end with the weights of an uninterrupted run, bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hpc.runtime import install_into
from hpc.runtime.node.preemption import REQUEUE_EXIT_CODE
from tests.integration._local_step import LocalRun

pytestmark = pytest.mark.tf

@pytest.fixture(scope="module")
def fit_reference(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    run = LocalRun(tmp_path_factory.mktemp("fit-reference"), "preempt_fit.py", checkpoint_every_steps=10)
    assert run.run() == {0: 0, 1: 0}, run.log(0)
    assert run.weights(0) == run.weights(1)
    return run.weights(0)


def test_usr1_checkpoints_at_an_agreed_step_and_the_rerun_ends_identically(
    tmp_path: Path, fit_reference: list[bytes]
) -> None:
    run = LocalRun(tmp_path, "preempt_fit.py", "--sleep", "0.2", "--first-run-only", checkpoint_every_steps=10)
    codes = run.run(interrupt_at=15)
    assert codes == {0: REQUEUE_EXIT_CODE, 1: REQUEUE_EXIT_CODE}, run.log(0) + run.log(1)
    saved = sorted(int(p.stem.removeprefix("ckpt-")) for p in run.checkpoints.glob("ckpt-*.index"))
    agreed = saved[-1]
    assert agreed > 15, saved  # the step the workers agreed on after the signal
    assert not list(run.checkpoints.glob(".worker*"))  # only the chief writes
    for rank in (0, 1):
        assert "hpc-tf: SIGUSR1 received" in run.log(rank)
        assert "hpc-tf: stopping for a requeue" in run.log(rank)

    assert run.run() == {0: 0, 1: 0}, run.log(0)
    for rank in (0, 1):
        assert f"hpc-tf: resuming fit from checkpoint ckpt-{agreed}: epoch 0, step {agreed}" in run.log(rank)
        assert run.weights(rank) == fit_reference


def test_after_a_kill_the_rerun_resumes_from_the_periodic_checkpoint_in_a_later_epoch(
    tmp_path: Path, fit_reference: list[bytes]
) -> None:
    run = LocalRun(tmp_path, "preempt_fit.py", "--sleep", "0.2", "--first-run-only", checkpoint_every_steps=10)
    codes = run.run(interrupt_at=45, signum=signal.SIGKILL)
    assert codes == {0: -signal.SIGKILL, 1: -signal.SIGKILL}
    assert run.run() == {0: 0, 1: 0}, run.log(0)
    # 32 steps per epoch: the newest periodic checkpoint is step 40 = epoch 1, step 8
    assert "hpc-tf: resuming fit from checkpoint ckpt-40: epoch 1, step 8 (40 steps done)" in run.log(0)
    assert run.weights(0) == fit_reference and run.weights(1) == fit_reference


def test_workers_that_see_different_checkpoints_refuse_to_start(tmp_path: Path) -> None:
    run = LocalRun(tmp_path, "preempt_fit.py", "--sleep", "0.2", checkpoint_every_steps=10)
    assert run.run(interrupt_at=25, signum=signal.SIGKILL) == {0: -signal.SIGKILL, 1: -signal.SIGKILL}
    assert (run.checkpoints / "ckpt-20.index").is_file()
    # worker 1's view of the "shared" directory lags behind: its newest checkpoint is step 10
    lagging = tmp_path / "lagging"
    shutil.copytree(run.checkpoints, lagging)
    (lagging / "checkpoint").write_text(f'model_checkpoint_path: "{lagging}/ckpt-10"\n'
                                        f'all_model_checkpoint_paths: "{lagging}/ckpt-10"\n', encoding="utf-8")
    resolved = json.loads((tmp_path / "resolved.json").read_text(encoding="utf-8"))
    resolved["runtime"]["checkpoint_dir"] = str(lagging)
    run.resolved[1] = tmp_path / "resolved-1.json"
    run.resolved[1].write_text(json.dumps(resolved), encoding="utf-8")

    codes = run.run()
    assert codes[0] != 0 and codes[1] != 0
    for rank in (0, 1):
        assert "the workers do not see the same newest checkpoint" in run.log(rank)
        assert "(worker 0: ckpt-20; worker 1: ckpt-10)" in run.log(rank)


def test_a_custom_loop_resumes_exactly_with_the_helper(tmp_path_factory: pytest.TempPathFactory) -> None:
    reference = LocalRun(tmp_path_factory.mktemp("loop-reference"), "preempt_loop.py", checkpoint_every_steps=25)
    assert reference.run() == {0: 0, 1: 0}, reference.log(0)

    run = LocalRun(tmp_path_factory.mktemp("loop"), "preempt_loop.py", checkpoint_every_steps=25)
    assert run.run("--sleep", "0.1", interrupt_at=30) == {0: REQUEUE_EXIT_CODE, 1: REQUEUE_EXIT_CODE}, run.log(0)
    assert run.run() == {0: 0, 1: 0}, run.log(0)
    assert "hpc-tf: resuming the training loop from checkpoint ckpt-" in run.log(0)
    assert run.weights(0) == reference.weights(0) == run.weights(1)


def test_without_hpc_tf_configuration_the_helper_does_nothing(tmp_path: Path) -> None:
    check = (
        "import sys; sys.path.insert(0, sys.argv[1]); import hpc_tf_runtime.preemption as p\n"
        "r = p.Resumable(object()); r.before_step(0); print(r.step)"
    )
    install_into(tmp_path / "runtime")
    result = subprocess.run([sys.executable, "-c", check, str(tmp_path / "runtime")], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
