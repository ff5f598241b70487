"""The rendered batch script's requeue logic, run by bash with stand-ins for srun, scontrol, sbatch, squeue.

The stand-ins record how they were called; srun ends with the exit status a test asks for (or
when USR1 reaches it). The same logic runs against the real cluster in
tests/integration/test_preemption_slurm.py; here every branch is exercised in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _batch_fixtures import install_run_dir

from hpc.render.script import render_script
from hpc.resolve import resolve
from hpc.runtime.node.preemption import REQUEUE_EXIT_CODE
from hpc.site.load import load_site
from hpc.spec import load_spec_text

STUBS = {
    # STUB_SRUN: "exit:N" ends with N; "usr1:N" waits for USR1, then ends with N
    "srun": """#!/bin/bash
echo "srun $*" >> "$STUB_LOG"
case $STUB_SRUN in
  exit:*) exit "${STUB_SRUN#exit:}" ;;
  usr1:*) code=${STUB_SRUN#usr1:}; trap 'echo "srun got USR1" >> "$STUB_LOG"; exit $code' USR1
          touch "$STUB_LOG.srun-ready"; while :; do sleep 0.05; done ;;
esac
""",
    "scontrol": """#!/bin/bash
echo "scontrol $*" >> "$STUB_LOG"
if [ "$1" = show ]; then echo "   Requeue=1 Restarts=${STUB_RESTARTS:-0} BatchFlag=1 Reboot=0 ExitCode=0:0"; fi
exit "${STUB_SCONTROL_RC:-0}"
""",
    "sbatch": """#!/bin/bash
printf 'sbatch' >> "$STUB_LOG"; printf ' [%s]' "$@" >> "$STUB_LOG"; echo >> "$STUB_LOG"
echo 4242
""",
    "squeue": """#!/bin/bash
echo "squeue $*" >> "$STUB_LOG"
echo "${STUB_SQUEUE_STATE:-PENDING}"
""",
}


def render(tmp_path: Path, preemption: str) -> Path:
    text = (
        f"name: p\ncommand: [python, train.py]\nworkdir: {tmp_path}\n"
        "resources: {nodes: 2, time: '1:00:00'}\n"
        f"{preemption}"
    )
    environ = {"HOME": str(tmp_path), "USER": "alice"}
    site = load_site("sandbox", (f"runs_dir={tmp_path / 'runs'}",), environ)
    job = resolve(load_spec_text(text, "job.yaml", tmp_path), site, "p-run", environ)
    script = tmp_path / "job.sbatch"
    script.write_text(render_script(job), encoding="utf-8")
    install_run_dir(job)  # the batch driver the script execs, and the resolved job it reads
    return script


@pytest.fixture
def stubs(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    for name, body in STUBS.items():
        (directory / name).write_text(body, encoding="utf-8")
        (directory / name).chmod(0o755)
    return directory


PREEMPTIBLE = "preemption: {enabled: true, warning_seconds: 120, max_restarts: 2}\n"


def start(script: Path, stubs: Path, srun: str, restarts: int | None = None,
          **extra: str) -> tuple[subprocess.Popen[str], Path]:
    log = script.parent / "stub.log"
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "SLURM_JOB_ID": "77",
        "STUB_LOG": str(log),
        "STUB_SRUN": srun,
        **({} if restarts is None else {"SLURM_RESTART_COUNT": str(restarts)}),
        **extra,
    }
    # its own process group, so a test can stop the srun stand-in the way Slurm would
    process = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    return process, log


def stop_group(process: subprocess.Popen[str]) -> None:
    """Whatever of the script's process group is left (an srun stand-in), as Slurm would at job end."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def run(script: Path, stubs: Path, srun: str, restarts: int | None = None, **extra: str) -> tuple[int, str, str]:
    process, log = start(script, stubs, srun, restarts, **extra)
    try:
        output, _ = process.communicate(timeout=30)
    finally:
        stop_group(process)
    return process.returncode, output, log.read_text(encoding="utf-8") if log.exists() else ""


def test_the_requeue_code_requeues_and_submits_the_restart_helper(tmp_path: Path, stubs: Path) -> None:
    code, output, calls = run(render(tmp_path, PREEMPTIBLE), stubs, f"exit:{REQUEUE_EXIT_CODE}")
    assert code == 0, output
    assert "hpc-tf: the workers saved a checkpoint and asked to be requeued: requeueing the job " \
           "(restart 1 of at most 2)" in output
    lines = calls.splitlines()
    assert lines[0].startswith("srun --kill-on-bad-exit=1 ")
    assert lines[1] == "scontrol requeue 77"
    helper = lines[2]
    assert helper.startswith("sbatch [--parsable] [--job-name=p-restart] [--output=")
    assert "[--no-requeue] [--partition=gpu] [--account=lab]" in helper
    assert f"[--output={tmp_path}/runs/p-run/logs/restart-%j.out]" in helper


def test_a_task_killed_by_a_signal_requeues(tmp_path: Path, stubs: Path) -> None:
    code, output, calls = run(render(tmp_path, PREEMPTIBLE), stubs, "exit:137", restarts=1)
    assert code == 0, output
    assert "a task was killed by signal 9 (a lost worker or node): requeueing the job (restart 2 of at most 2)" \
        in output
    assert "scontrol requeue 77" in calls
    assert "hpc-tf: restart 1 of at most 2: training resumes from the newest checkpoint in " in output


@pytest.mark.parametrize("status", [0, 1, 2, 253])
def test_success_errors_and_out_of_memory_are_not_requeued(tmp_path: Path, stubs: Path, status: int) -> None:
    code, output, calls = run(render(tmp_path, PREEMPTIBLE), stubs, f"exit:{status}")
    assert code == status
    assert "scontrol" not in calls and "sbatch" not in calls
    assert f"hpc-tf: job step finished with exit code {status}" in output


def test_at_max_restarts_the_job_fails_and_says_so(tmp_path: Path, stubs: Path) -> None:
    code, output, calls = run(render(tmp_path, PREEMPTIBLE), stubs, f"exit:{REQUEUE_EXIT_CODE}", restarts=2)
    assert code == REQUEUE_EXIT_CODE
    assert ("hpc-tf: the workers saved a checkpoint and asked to be requeued, but the job has been restarted "
            "2 time(s), the most preemption.max_restarts (2) allows: not requeueing; the newest checkpoint is in "
            f"{tmp_path}/runs/p-run/output/checkpoints") in output
    assert "scontrol" not in calls


def test_a_run_beyond_max_restarts_does_not_start(tmp_path: Path, stubs: Path) -> None:
    # e.g. Slurm requeued it itself after a node failure
    code, output, calls = run(render(tmp_path, PREEMPTIBLE), stubs, "exit:0", restarts=3)
    assert code == 1
    assert "hpc-tf: this is restart 3 of the job, more than preemption.max_restarts (2) allows" in output
    assert calls == ""  # srun never ran


def test_a_failed_requeue_ends_the_job_with_the_steps_status(tmp_path: Path, stubs: Path) -> None:
    code, output, calls = run(render(tmp_path, PREEMPTIBLE), stubs, f"exit:{REQUEUE_EXIT_CODE}",
                              STUB_SCONTROL_RC="1")
    assert code == REQUEUE_EXIT_CODE
    assert "hpc-tf: scontrol requeue 77 failed; the job ends here" in output
    assert "sbatch" not in calls


def test_the_warning_reaches_srun(tmp_path: Path, stubs: Path) -> None:
    process, log = start(render(tmp_path, PREEMPTIBLE), stubs, f"usr1:{REQUEUE_EXIT_CODE}")
    try:
        wait_for_srun(log)
        os.kill(process.pid, signal.SIGUSR1)  # Slurm's --signal=B:USR1 goes to the batch shell only
        output, _ = process.communicate(timeout=30)
    finally:
        stop_group(process)
    assert process.returncode == 0, output
    assert "hpc-tf: preemption warning, forwarding USR1 to the tasks" in output
    assert "srun got USR1" in log.read_text(encoding="utf-8")
    assert "scontrol requeue 77" in log.read_text(encoding="utf-8")


def wait_for_srun(log: Path) -> None:
    ready = Path(f"{log}.srun-ready")
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert time.monotonic() < deadline, "srun stand-in never started"
        time.sleep(0.05)


@pytest.mark.parametrize(("controller_restarts", "requeued"), [(1, True), (0, False)])
def test_term_from_a_requeue_submits_the_restart_helper_and_from_a_cancel_does_not(
    tmp_path: Path, stubs: Path, controller_restarts: int, requeued: bool
) -> None:
    # scontrol requeue or a preemption: Slurm has counted the restart before it sends TERM
    process, log = start(render(tmp_path, PREEMPTIBLE), stubs, "usr1:0", STUB_RESTARTS=str(controller_restarts))
    try:
        wait_for_srun(log)
        process.terminate()  # Slurm's TERM to the batch shell
        assert process.wait(timeout=30) == 143
    finally:
        stop_group(process)  # and the rest of the job
    assert process.stdout is not None
    output = process.stdout.read()
    calls = log.read_text(encoding="utf-8")
    assert "scontrol show job 77" in calls
    assert ("sbatch [--parsable] [--job-name=p-restart]" in calls) is requeued
    assert ("hpc-tf: Slurm is requeueing the job (restart 1 of at most 2)" in output) is requeued
    assert "scontrol requeue" not in calls  # Slurm does that itself


def test_without_preemption_nothing_is_requeued(tmp_path: Path, stubs: Path) -> None:
    script = render(tmp_path, "")
    assert "scontrol" not in script.read_text(encoding="utf-8")
    code, _, calls = run(script, stubs, f"exit:{REQUEUE_EXIT_CODE}")
    assert code == REQUEUE_EXIT_CODE and "scontrol" not in calls


@pytest.mark.parametrize(("state", "updates"), [("PENDING", True), ("RUNNING", False)])
def test_the_restart_helper_resets_the_begin_time_of_the_pending_job(
    tmp_path: Path, stubs: Path, state: str, updates: bool
) -> None:
    _, _, calls = run(render(tmp_path, PREEMPTIBLE), stubs, f"exit:{REQUEUE_EXIT_CODE}")
    (helper,) = [line for line in calls.splitlines() if line.startswith("sbatch")]
    wrap = helper.split("[--wrap=", 1)[1].removesuffix("]")
    (stubs / "sleep").write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")  # no 10 s wait here
    (stubs / "sleep").chmod(0o755)
    log = tmp_path / "helper.log"
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log), "STUB_SQUEUE_STATE": state,
           "HPC_TF_REQUEUED_JOB": "77"}
    subprocess.run(["bash", "-c", wrap], env=env, check=True, timeout=30)
    helper_calls = log.read_text(encoding="utf-8").splitlines()
    assert helper_calls[0] == "squeue --noheader --jobs=77 --format=%T"
    assert ("scontrol update jobid=77 starttime=now" in helper_calls) is updates
