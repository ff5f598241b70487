"""GPU quota on the real test cluster, with real limits set by sacctmgr (issue 5, "Done when").

The module creates its own accounting objects beside account ``lab`` (not under it, so the jobs of
other tests never count against them, nor ours against theirs) and removes them whatever happens:

    account quota-test    parent root        GrpTRES=gres/gpu=4 GrpTRESMins=gres/gpu=1000 MaxTRESPerNode=gres/gpu=3
    account quota-test-a  parent quota-test  researcher's association: QOS normal,quota-test,quota-test-wide
    QOS quota-test        MaxTRESPerUser=gres/gpu=2
    QOS quota-test-wide   GrpTRES=gres/gpu=6 (a QOS limit replaces the association's of the same kind)

Limits changed for one test (the budget used up, a lower GrpTRES) are restored in a ``finally``.
Jobs that hold GPUs take one GPU each, so they start wherever other tests leave GPUs free (account
lab may hold 4 of the 8). slurmdbd is stopped for one test only, for a few seconds, by the pid file
tests/cluster/up wrote, and restarted the way up starts it.

Everything a user would type goes through ``hpc-tf`` as the cluster user; Slurm's own tools
(squeue, sshare, scontrol show assoc_mgr) are the independent witnesses. With
HPC_TF_RECORD_QUOTA_FIXTURES=DIR the output of every call the library made is also written to
DIR/<scenario>/ as ``.rec`` files (first answer per command), which tests/unit/test_quota_*.py replay.
Regenerate (as root, cluster up): ``HPC_TF_RECORD_QUOTA_FIXTURES=tests/fixtures/quota/slurm-22.05
pytest -m slurm tests/integration/test_quota_slurm.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hpc.errors import SchedulerUnavailable
from hpc.launch import plan_launch
from hpc.quota import (
    PREFLIGHT_BUDGET_S,
    PREFLIGHT_TIMEOUT_S,
    QuotaVerdict,
    VerdictKind,
    concurrent_gpus,
    explain_waits,
    preflight,
    quota_report,
)
from hpc.resolve import ResolvedJob
from hpc.scheduler import SlurmCli, SlurmScheduler
from hpc.scheduler.replay import format_recording
from hpc.scheduler.run import CommandResult, RetryPolicy, subprocess_runner
from tests.integration._outage import SilentListener, conf_copy, free_port
from tests.integration._waiting import wait_until

if TYPE_CHECKING:
    from tests.conftest import JobStatus, SlurmCluster

pytestmark = pytest.mark.slurm

PARENT, ACCOUNT = "quota-test", "quota-test-a"
QOS_PU, QOS_WIDE = "quota-test", "quota-test-wide"
GRP_GPUS, BUDGET, PER_NODE, PER_USER, WIDE = 4, 1000, 3, 2, 6
RECORD_DIR = os.environ.get("HPC_TF_RECORD_QUOTA_FIXTURES")
STARTED_LIST = Path("/run/hpc-tf-cluster/started.list")
SLURMDBD_PID = Path("/run/slurm/slurmdbd.pid")
SLURM_CONF = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
Run = Callable[..., subprocess.CompletedProcess[str]]


# ------------------------------------------------------------------ helpers


def run_root(argv: Sequence[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}", pytrace=False)
    return result


def sacctmgr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_root(["sacctmgr", "-i", *args], check=check)


def assoc_mgr_text(user: str) -> str:
    return run_root(["scontrol", "show", "assoc_mgr", f"users={user}", "flags=assoc,qos"]).stdout


def account_record(text: str, account: str) -> str:
    """The controller's record of an account association (its lines up to the next record)."""
    match = re.search(rf"^ClusterName=\S+ Account={re.escape(account)} UserName= .*?(?=^ClusterName=|^\s*$)",
                      text, re.M | re.S)
    assert match is not None, f"no association of account {account} in:\n{text}"
    return match.group(0)


def jobs_in_account() -> list[str]:
    out = run_root(["squeue", "--noheader", f"--accounts={ACCOUNT}", "--format=%i"]).stdout
    return out.split()


def cancel_jobs() -> None:
    """Cancel every job of the test account and wait until the controller no longer counts them."""
    run_root(["scancel", f"--account={ACCOUNT}"], check=False)
    with contextlib.suppress(pytest.fail.Exception):
        wait_until(lambda: not jobs_in_account(), "the test account's jobs to end", timeout=60)


def remove_objects(user: str) -> None:
    """Remove the test's accounts and QOS, and wait until the controller no longer has them: a later test
    reads the user's associations (test_usage_slurm: no GPU-minute budget), and sacctmgr refuses to delete an
    account while a job of it is still ending, so one attempt is not enough on a busy machine."""
    def removed() -> bool:
        if ACCOUNT in sacctmgr("--noheader", "--parsable2", "show", "account", ACCOUNT, "format=account").stdout:
            cancel_jobs()
        sacctmgr("delete", "user", user, f"account={ACCOUNT}", check=False)
        sacctmgr("delete", "account", ACCOUNT, check=False)
        sacctmgr("delete", "account", PARENT, check=False)
        sacctmgr("delete", "qos", QOS_PU, check=False)
        sacctmgr("delete", "qos", QOS_WIDE, check=False)
        listed = sacctmgr("--noheader", "--parsable2", "show", "account", "format=account").stdout.split()
        return PARENT not in listed and ACCOUNT not in listed and f"Account={PARENT} " not in assoc_mgr_text(user)

    wait_until(removed, f"accounts {ACCOUNT} and {PARENT} to be gone from slurmdbd and the controller",
               timeout=120, interval=2)


def set_parent(setting: str, controller_shows: str, user: str) -> None:
    """Change a limit of the parent account and wait until the controller enforces it."""
    sacctmgr("modify", "account", PARENT, "set", setting)
    wait_until(lambda: controller_shows in account_record(assoc_mgr_text(user), PARENT),
               f"slurmctld to apply {setting}", timeout=30)


@pytest.fixture(scope="module")
def quota_objects(slurm_cluster: SlurmCluster) -> Iterator[None]:
    user = slurm_cluster.user
    remove_objects(user)  # leftovers of an interrupted run
    try:
        sacctmgr("add", "qos", QOS_PU, f"MaxTRESPerUser=gres/gpu={PER_USER}")
        sacctmgr("add", "qos", QOS_WIDE, f"GrpTRES=gres/gpu={WIDE}")
        limits = [f"GrpTRES=gres/gpu={GRP_GPUS}", f"GrpTRESMins=gres/gpu={BUDGET}",
                  f"MaxTRESPerNode=gres/gpu={PER_NODE}"]
        sacctmgr("add", "account", PARENT, "Parent=root", "Description=hpc-tf quota tests", "Organization=hpc-tf",
                 *limits)
        sacctmgr("add", "account", ACCOUNT, f"Parent={PARENT}", "Description=hpc-tf quota tests",
                 "Organization=hpc-tf")
        sacctmgr("add", "user", user, f"Account={ACCOUNT}", f"QOS=normal,{QOS_PU},{QOS_WIDE}", "DefaultQOS=normal")
        wait_until(lambda: f"Account={ACCOUNT} UserName={user}(" in assoc_mgr_text(user),
                   f"slurmctld to know {user} in {ACCOUNT}", timeout=30)
        yield
    finally:
        remove_objects(user)


@pytest.fixture
def quota(quota_objects: None) -> Iterator[None]:
    """The test objects with an empty queue before and after the test."""
    cancel_jobs()
    try:
        yield
    finally:
        cancel_jobs()


class UserRunner:
    """Runs Slurm tools as the cluster's user with a clean environment; keeps what the tools printed
    (argv without the runuser prefix), to check the calls and to write recordings."""

    def __init__(self, user: str, workdir: Path, slurm_conf: Path | None = None) -> None:
        self.user, self.workdir, self.slurm_conf = user, workdir, slurm_conf
        self.results: list[CommandResult] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        env = ["env", "-i", f"--chdir={self.workdir}", "PATH=/usr/local/bin:/usr/bin:/bin",
               f"HOME={pwd.getpwnam(self.user).pw_dir}", f"USER={self.user}", f"LOGNAME={self.user}", "LANG=C.UTF-8"]
        env += [f"SLURM_CONF={self.slurm_conf}"] if self.slurm_conf else []
        done = subprocess_runner(["runuser", "-u", self.user, "--", *env, *argv], timeout)
        result = CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)
        self.results.append(result)
        return result

    def cli(self, timeout_s: float = PREFLIGHT_TIMEOUT_S) -> SlurmCli:
        return SlurmCli(self, timeout_s=timeout_s, retry=RetryPolicy(attempts=1))

    def record(self, scenario: str, note: str, roles: dict[str, object] | None = None) -> None:
        """With HPC_TF_RECORD_QUOTA_FIXTURES: the first answer to each command so far, as .rec files."""
        if not RECORD_DIR:
            return
        target = Path(RECORD_DIR) / scenario
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        first: dict[tuple[str, ...], CommandResult] = {}
        for result in self.results:
            first.setdefault(result.argv, result)
        for number, result in enumerate(first.values(), 1):
            (target / f"{number:02d}-{result.argv[0]}.rec").write_text(format_recording(result, note))
        if roles is not None:
            (target / "scenario.json").write_text(json.dumps(roles, indent=2) + "\n")


@pytest.fixture
def runner(slurm_cluster: SlurmCluster, scratch_dir: Path) -> UserRunner:
    return UserRunner(slurm_cluster.user, scratch_dir)


def hold(researcher_run: Run, cwd: Path, count: int, qos: str | None = None) -> list[str]:
    """``count`` running one-GPU jobs in the test account (one GPU each: they start wherever GPUs are free)."""
    ids = [submit(researcher_run, cwd, 1, qos) for _ in range(count)]
    wait_running(ids)
    return ids


def submit(researcher_run: Run, cwd: Path, gpus: int, qos: str | None = None, nodes: int = 1) -> str:
    argv = ["sbatch", "--parsable", f"--account={ACCOUNT}", "--partition=gpu", f"--nodes={nodes}",
            f"--gres=gpu:{gpus}", "--time=5", "--output=/dev/null", "--wrap=sleep 600"]
    argv += [f"--qos={qos}"] if qos else []
    return str(researcher_run(argv, cwd=cwd).stdout.strip())


def wait_running(ids: Sequence[str]) -> None:
    from tests.conftest import wait_for_jobs

    wait_for_jobs(ids, timeout=180, until=lambda s: s.state == "RUNNING")


def wait_pending_reason(job_id: str) -> str:
    from tests.conftest import wait_for_job

    status: JobStatus = wait_for_job(job_id, timeout=60,
                                     until=lambda s: s.state == "PENDING" and s.reason not in ("None", ""))
    return status.reason


def write_spec(workdir: Path, name: str, *, gpus_per_node: int, nodes: int = 1, qos: str | None = None,
               time_limit: str = "5:00") -> Path:
    qos_item = f", qos: {qos}" if qos else ""
    path = workdir / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ncommand: [sleep, '600']\n"
        f"resources: {{nodes: {nodes}, gpus_per_node: {gpus_per_node}, partition: gpu, account: {ACCOUNT}"
        f"{qos_item}, time: '{time_limit}'}}\n"
    )
    return path


def resolved(spec: Path) -> ResolvedJob:
    return plan_launch(spec, "sandbox", [f"runs_dir={spec.parent / 'runs'}"]).job


def hpc_tf(
    researcher_run: Run, cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return researcher_run(["hpc-tf", *args], cwd=cwd, check=check, env={"COLUMNS": "200", **(env or {})}, timeout=120)


def launch(researcher_run: Run, spec: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    runs = spec.parent / "runs"
    return hpc_tf(researcher_run, spec.parent, "launch", str(spec), "--site", "sandbox", "--set",
                  f"runs_dir={runs}", *extra, check=check)


def flat(text: str) -> str:
    """Output with every run of whitespace as one space (a terminal may wrap long lines)."""
    return " ".join(text.split())


def sshare_gpu_minutes(account: str) -> int:
    """Independent witness of the GPU-minutes an account used: sshare's GrpTRESRaw."""
    out = run_root(["sshare", "--noheader", "--parsable2", f"--accounts={account}", "--format=Account,User,GrpTRESRaw"])
    for line in out.stdout.splitlines():
        name, user, raw = line.strip().split("|")
        if name == account and not user:
            return int(dict(item.split("=", 1) for item in raw.split(","))["gres/gpu"])
    raise AssertionError(f"sshare does not show account {account}:\n{out.stdout}")


# ------------------------------------------------------------------ hpc-tf quota
QUOTA = ("quota", "--site", "sandbox")  # a Slurm site: on the local one, quota asks Slurm nothing


def test_quota_shows_every_limit_and_the_live_use(
    quota: None, researcher_run: Run, scratch_dir: Path, runner: UserRunner, slurm_cluster: SlurmCluster
) -> None:
    user = slurm_cluster.user
    holders = hold(researcher_run, scratch_dir, PER_USER, QOS_PU)
    waiting = submit(researcher_run, scratch_dir, 1, QOS_PU)
    assert wait_pending_reason(waiting) == "QOSMaxGRESPerUser"

    report = json.loads(hpc_tf(researcher_run, scratch_dir, *QUOTA, "--account", ACCOUNT, "--json").stdout)
    assert report["user"] == user and report["accounting_available"] and report["warnings"] == []
    (assoc,) = report["associations"]
    assert assoc["account"] == ACCOUNT and assoc["qos"] == ["normal", QOS_PU, QOS_WIDE]
    assert assoc["default_qos"] == "normal"
    assert [p["set_on"] for p in assoc["path"]] == [
        f"user {user} in account {ACCOUNT}", f"account {ACCOUNT}", f"account {PARENT}", "account root"
    ]
    limits = {(lim["limit"], lim["set_on"]): lim for lim in assoc["limits"]}
    grp = limits["GrpTRES", f"account {PARENT}"]
    assert (grp["value"], grp["used"], grp["remaining"]) == (GRP_GPUS, 2, 2)
    assert sorted(grp["running_jobs"]) == sorted(holders)
    assert (grp["pending_jobs"], grp["pending_gpus"]) == ([waiting], 1)
    assert grp["reason"] == "AssocGrpGRES"
    # set on the parent account, inherited by the user's association (the controller fills it in)
    assert limits["MaxTRESPerNode", f"account {PARENT}"]["value"] == PER_NODE
    budget = limits["GrpTRESMins", f"account {PARENT}"]
    assert budget["value"] == BUDGET and budget["reason"] == "AssocGrpGRESMinutes"
    assert abs(budget["used"] - sshare_gpu_minutes(PARENT)) <= 1
    assert budget["remaining"] == BUDGET - budget["used"]

    qos = {q["name"]: q for q in report["qos"]}
    (per_user,) = [lim for lim in qos[QOS_PU]["limits"] if lim["limit"] == "MaxTRESPerUser"]
    assert (per_user["value"], per_user["used"], per_user["reason"]) == (PER_USER, 2, "QOSMaxGRESPerUser")
    assert sorted(per_user["running_jobs"]) == sorted(holders) and per_user["pending_jobs"] == [waiting]
    (wide,) = qos[QOS_WIDE]["limits"]
    assert (wide["limit"], wide["value"], wide["used"]) == ("GrpTRES", WIDE, 0)
    states = {j["job_id"]: (j["state"], j["gpus"], j["reason"]) for j in report["jobs"]}
    assert states == {**{h: ("RUNNING", 1, None) for h in holders}, waiting: ("PENDING", 1, "QOSMaxGRESPerUser")}

    # the controller's own counters say the same
    witness = assoc_mgr_text(user)
    assert f"gres/gpu={GRP_GPUS}(2)" in account_record(witness, PARENT)
    assert f"gres/gpu={PER_USER}(2)" in witness  # MaxTRESPU of the user in QOS quota-test

    table = hpc_tf(researcher_run, scratch_dir, *QUOTA).stdout
    for text in ("GrpTRES gres/gpu", "GrpTRESMins gres/gpu", "MaxTRESPerUser gres/gpu", "MaxTRESPerNode gres/gpu",
                 f"account {PARENT}", "AssocGrpGRES", "QOSMaxGRESPerUser", *holders, waiting):
        assert text in table, f"{text!r} missing from:\n{table}"

    # the same numbers drive the preflight, in process (what hpc-tf launch calls)
    cli = runner.cli()

    def verdict(
        name: str, gpus_per_node: int, nodes: int = 1, qos: str | None = None, time_limit: str = "5:00"
    ) -> QuotaVerdict:
        spec = write_spec(scratch_dir, name, gpus_per_node=gpus_per_node, nodes=nodes, qos=qos, time_limit=time_limit)
        return preflight(resolved(spec), cli, user=user)

    wait = verdict("one-more", 1, qos=QOS_PU)
    assert (wait.kind, wait.reason) == (VerdictKind.MUST_WAIT, "QOSMaxGRESPerUser")
    assert {str(j.job_id) for j in wait.holders} == set(holders)
    assert len(wait.calls) == 3  # assoc_mgr, sacctmgr qos (the job names its QOS), squeue for the holders
    fits = verdict("fits", 1)
    assert fits.kind is VerdictKind.OK and fits.qos == "normal", fits.message
    assert not any(argv[0] == "squeue" for argv in fits.calls)
    never = {
        "six": (verdict("six", 3, nodes=2), "AssocGrpGRES"),
        "per-user": (verdict("per-user", 3, qos=QOS_PU), "QOSMaxGRESPerUser"),
        "per-node": (verdict("per-node", 4), "AssocMaxGRESPerNode"),
        "budget": (verdict("budget", 2, nodes=2, time_limit="5:00:00"), "AssocGrpGRESMinutes"),
    }
    for name, (v, reason) in never.items():
        assert (v.kind, v.reason) == (VerdictKind.NEVER_FITS, reason), (name, v.message)
    ceiling = concurrent_gpus(ACCOUNT, QOS_PU, user=user, cli=cli)
    assert (ceiling.gpus, ceiling.free_now, ceiling.max_tasks(1)) == (PER_USER, 0, PER_USER)
    assert concurrent_gpus(ACCOUNT, user=user, cli=cli).gpus == GRP_GPUS
    quota_report(ACCOUNT, cli, user=user)
    runner.record("overview", "two 1-GPU jobs fill QOS quota-test's MaxTRESPerUser=2; a third pends",
                  {"holders": holders, "waiting": waiting, "budget": BUDGET})


# ------------------------------------------------------------------ hpc-tf launch


@pytest.mark.parametrize(
    ("name", "nodes", "gpus_per_node", "qos", "time_limit", "named", "reason"),
    [
        ("six-gpus", 2, 3, None, "5:00", ["GrpTRES=gres/gpu=4", "6 GPUs", f"account {PARENT}"], "AssocGrpGRES"),
        ("over-per-user", 1, 3, QOS_PU, "5:00", ["MaxTRESPerUser=gres/gpu=2", "3 GPUs", f"QOS {QOS_PU}"],
         "QOSMaxGRESPerUser"),
        ("over-per-node", 1, 4, None, "5:00", ["MaxTRESPerNode=gres/gpu=3", "4 GPUs per node"], "AssocMaxGRESPerNode"),
        ("over-budget", 2, 2, None, "5:00:00", ["GrpTRESMins=gres/gpu=1000", "1200 GPU-minutes"], None),
    ],
)
def test_a_launch_that_can_never_fit_is_refused_before_sbatch(
    quota: None, researcher_run: Run, scratch_dir: Path, name: str, nodes: int, gpus_per_node: int,
    qos: str | None, time_limit: str, named: list[str], reason: str | None,
) -> None:
    spec = write_spec(scratch_dir, name, gpus_per_node=gpus_per_node, nodes=nodes, qos=qos, time_limit=time_limit)
    refused = launch(researcher_run, spec, check=False)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert refused.stdout == ""
    assert "can never run" in flat(refused.stderr)
    for text in named:
        assert text in flat(refused.stderr), refused.stderr
    assert not (scratch_dir / "runs").exists() or not list((scratch_dir / "runs").iterdir())
    assert jobs_in_account() == []  # sbatch was never called

    if reason is None:  # without AccountingStorageEnforce=safe Slurm starts it and kills it when the budget is spent
        return
    forced = launch(researcher_run, spec, "--force")
    job_id = forced.stdout.strip()
    assert "submitting anyway (--force)" in flat(forced.stderr) and f"({reason})" in flat(forced.stderr)
    assert wait_pending_reason(job_id) == reason  # the pending reason hpc-tf named


@pytest.mark.parametrize(
    ("case", "held", "qos", "reason", "sentence"),
    [
        ("qos", PER_USER, QOS_PU, "QOSMaxGRESPerUser",
         f"waiting for GPU quota: QOS {QOS_PU} allows 2 GPUs per user, 2 in use by jobs {{holders}}; "
         "this job needs 1 GPU"),
        ("account", GRP_GPUS, None, "AssocGrpGRES",
         f"waiting for GPU quota: account {PARENT} allows 4 GPUs, 4 in use by jobs {{holders}}; this job needs 1 GPU"),
    ],
)
def test_a_launch_that_must_wait_is_submitted_and_pends_as_predicted(
    quota: None, researcher_run: Run, scratch_dir: Path, runner: UserRunner, slurm_cluster: SlurmCluster,
    case: str, held: int, qos: str | None, reason: str, sentence: str,
) -> None:
    holders = hold(researcher_run, scratch_dir, held, qos)
    spec = write_spec(scratch_dir, f"wait-{case}", gpus_per_node=1, qos=qos)
    launched = launch(researcher_run, spec)
    job_id = launched.stdout.strip()
    assert "must wait" in flat(launched.stderr) and f"({reason})" in flat(launched.stderr), launched.stderr
    for holder in holders:
        assert f"{holder} (1 GPU)" in flat(launched.stderr)
    assert wait_pending_reason(job_id) == reason  # what hpc-tf predicted is what Slurm says

    # hpc-tf status explains the wait with the limit, its value and who holds the GPUs
    (row,) = json.loads(hpc_tf(researcher_run, scratch_dir, "status", job_id, "--json", "--site", "sandbox",
                               "--set", f"runs_dir={scratch_dir / 'runs'}").stdout)
    held_list = ", ".join(f"{h} (1 GPU)" for h in sorted(holders, key=int))
    assert (row["state"], row["reason"]) == ("PENDING", reason)
    assert row["info"] == sentence.format(holders=held_list)
    # the same in process, so that the recording holds what the unit tests replay (status query, quota)
    cli = runner.cli()
    assert explain_waits(SlurmScheduler(cli).query([job_id]), cli, user=slurm_cluster.user) == {
        job_id: sentence.format(holders=held_list)
    }
    runner.record(f"wait-{case}", f"{held} one-GPU jobs hold the quota; job {job_id} (1 GPU) pends {reason}",
                  {"holders": holders, "waiting": job_id, "reason": reason})


# ------------------------------------------------------------------ submit_function: the same check

SUBMIT_FUNCTION = """\
import json, os, sys, warnings
from hpc.errors import HpcTfError
from hpc.functions import submit_function
from hpc.quota import QuotaWarning

spec, runs_dir = json.loads(sys.argv[1]), sys.argv[2]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        job = submit_function(os.getpid, spec=spec, site="sandbox", overrides=[f"runs_dir={runs_dir}"])
        report = {"job_id": job.job_id}
    except HpcTfError as err:
        report = {"refused": err.message, "exit_code": err.exit_code}
report["warnings"] = [str(w.message) for w in caught if issubclass(w.category, QuotaWarning)]
print(json.dumps(report))
"""


def submit_function_as_user(researcher_run: Run, workdir: Path, name: str, gpus_per_node: int, nodes: int = 1,
                            qos: str | None = None) -> dict[str, object]:
    script = workdir / "quota_function.py"
    script.write_text(SUBMIT_FUNCTION)
    resources: dict[str, object] = {"nodes": nodes, "gpus_per_node": gpus_per_node, "partition": "gpu",
                                    "account": ACCOUNT, "time": "5:00", **({"qos": qos} if qos else {})}
    argv = [sys.executable, str(script), json.dumps({"name": name, "resources": resources}),
            str(workdir / "fn-runs")]
    done = researcher_run(argv, cwd=workdir, timeout=120)
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_submit_function_refuses_a_job_the_quota_can_never_fit_as_launch_does(
    quota: None, researcher_run: Run, scratch_dir: Path
) -> None:
    refused = submit_function_as_user(researcher_run, scratch_dir, "fn-six", gpus_per_node=3, nodes=2)
    launched = launch(researcher_run, write_spec(scratch_dir, "six", gpus_per_node=3, nodes=2), check=False)
    assert refused["exit_code"] == launched.returncode == 3
    message = str(refused["refused"])
    assert "can never run" in message and "GrpTRES=gres/gpu=4" in message
    assert flat(message) in flat(launched.stderr)  # the same sentence, word for word
    assert not (scratch_dir / "fn-runs").exists() or not list((scratch_dir / "fn-runs").iterdir())
    assert jobs_in_account() == []  # sbatch was never called


def test_submit_function_warns_for_a_job_that_must_wait_as_launch_does(
    quota: None, researcher_run: Run, scratch_dir: Path
) -> None:
    holders = hold(researcher_run, scratch_dir, PER_USER, QOS_PU)
    report = submit_function_as_user(researcher_run, scratch_dir, "fn-wait", gpus_per_node=1, qos=QOS_PU)
    job_id = str(report["job_id"])
    (warning,) = report["warnings"]  # type: ignore[misc]
    assert "must wait" in flat(warning) and "(QOSMaxGRESPerUser)" in flat(warning)
    for holder in holders:
        assert f"{holder} (1 GPU)" in flat(warning)
    launched = launch(researcher_run, write_spec(scratch_dir, "wait", gpus_per_node=1, qos=QOS_PU))
    assert flat(warning) in flat(launched.stderr)  # the warning launch prints, word for word
    assert wait_pending_reason(job_id) == "QOSMaxGRESPerUser"  # submitted, and pends as predicted


def test_a_used_up_gpu_time_budget(
    quota: None, researcher_run: Run, scratch_dir: Path, runner: UserRunner, slurm_cluster: SlurmCluster
) -> None:
    user = slurm_cluster.user
    set_parent("GrpTRESMins=gres/gpu=0", "gres/gpu=0(", user)
    try:
        report = json.loads(hpc_tf(researcher_run, scratch_dir, *QUOTA, "--account", ACCOUNT, "--json").stdout)
        (budget,) = [lim for lim in report["associations"][0]["limits"] if lim["limit"] == "GrpTRESMins"]
        assert (budget["value"], budget["remaining"]) == (0, 0)

        spec = write_spec(scratch_dir, "no-budget", gpus_per_node=1)
        refused = launch(researcher_run, spec, check=False)
        assert refused.returncode == 3
        assert f"the GPU-time budget of account {PARENT} is used up" in flat(refused.stderr)
        job_id = launch(researcher_run, spec, "--force").stdout.strip()
        assert wait_pending_reason(job_id) == "AssocGrpGRESMinutes"
        cli = runner.cli()
        explained = explain_waits(SlurmScheduler(cli).query([job_id]), cli, user=user)
        assert explained[job_id].startswith(f"the GPU-time budget of account {PARENT} is used up")
        quota_report(ACCOUNT, cli, user=user)
        preflight(resolved(spec), cli, user=user)
        runner.record("budget-used-up", f"GrpTRESMins=gres/gpu=0 on account {PARENT}; job {job_id} forced",
                      {"waiting": job_id})
    finally:
        cancel_jobs()
        set_parent(f"GrpTRESMins=gres/gpu={BUDGET}", f"gres/gpu={BUDGET}(", user)


def test_a_qos_limit_replaces_the_association_limit(
    quota: None, researcher_run: Run, scratch_dir: Path, runner: UserRunner, slurm_cluster: SlurmCluster
) -> None:
    user = slurm_cluster.user
    set_parent("GrpTRES=gres/gpu=2", "gres/gpu=2(", user)
    try:
        holders = hold(researcher_run, scratch_dir, 3, QOS_WIDE)  # 3 GPUs run although the account allows 2
        assert "gres/gpu=2(3)" in account_record(assoc_mgr_text(user), PARENT)
        cli = runner.cli()
        wide = preflight(resolved(write_spec(scratch_dir, "wide", gpus_per_node=1, qos=QOS_WIDE)), cli, user=user)
        assert wide.kind is VerdictKind.OK, wide.message
        spec = write_spec(scratch_dir, "plain", gpus_per_node=1)
        plain = preflight(resolved(spec), cli, user=user)
        assert (plain.kind, plain.reason) == (VerdictKind.MUST_WAIT, "AssocGrpGRES")
        job_id = launch(researcher_run, spec).stdout.strip()
        assert wait_pending_reason(job_id) == "AssocGrpGRES"
        quota_report(ACCOUNT, cli, user=user)
        runner.record("qos-overrides", f"account {PARENT} GrpTRES=gres/gpu=2; 3 one-GPU jobs run in QOS {QOS_WIDE}",
                      {"holders": holders, "waiting": job_id})
    finally:
        cancel_jobs()
        set_parent(f"GrpTRES=gres/gpu={GRP_GPUS}", f"gres/gpu={GRP_GPUS}(", user)


# ------------------------------------------------------------------ outages


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a stopped daemon stays a zombie until PID 1 reaps it


@pytest.fixture
def slurmdbd_stopped(quota: None) -> Iterator[None]:
    """slurmdbd stopped for the test's few seconds, then started again as tests/cluster/up starts it."""
    if not STARTED_LIST.is_file() or "slurmdbd" not in STARTED_LIST.read_text().split():
        pytest.skip("slurmdbd was not started by tests/cluster/up: not ours to stop")
    pid = int(SLURMDBD_PID.read_text().strip())
    if Path(f"/proc/{pid}/comm").read_text().strip() != "slurmdbd":
        pytest.skip(f"{SLURMDBD_PID} does not name a running slurmdbd")
    os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: not _alive(pid), "slurmdbd to stop", timeout=20)
        yield
    finally:
        log_dir = Path("/var/log/slurm")
        with (log_dir / "slurmdbd.console").open("a") as console:
            subprocess.run(["slurmdbd"], stdin=subprocess.DEVNULL, stdout=console, stderr=console, timeout=60,
                           check=False)
        wait_until(lambda: run_root(["sacctmgr", "-n", "show", "cluster"], check=False).returncode == 0,
                   "slurmdbd to answer again", timeout=60)


def test_with_slurmdbd_stopped_quota_reports_accounting_unavailable(
    slurmdbd_stopped: None, researcher_run: Run, scratch_dir: Path, runner: UserRunner, slurm_cluster: SlurmCluster
) -> None:
    user = slurm_cluster.user
    started = time.monotonic()
    done = hpc_tf(researcher_run, scratch_dir, *QUOTA, "--account", ACCOUNT, "--json")
    assert time.monotonic() - started < 20
    report = json.loads(done.stdout)
    assert report["accounting_available"] is False and not report["complete"]
    assert any("slurmdbd" in w for w in report["warnings"]), report["warnings"]
    assert "warning: Slurm's accounting daemon (slurmdbd) is not answering" in flat(done.stderr)
    # the controller still enforces, and shows, the association limits
    (assoc,) = report["associations"]
    assert assoc["qos"] is None
    grp = next(lim for lim in assoc["limits"] if lim["limit"] == "GrpTRES")
    assert (grp["value"], grp["used"]) == (GRP_GPUS, 0)
    assert "accounting daemon (slurmdbd) is not answering" in flat(hpc_tf(researcher_run, scratch_dir, *QUOTA).stderr)

    cli = runner.cli()
    started = time.monotonic()
    unknown = preflight(resolved(write_spec(scratch_dir, "dbd-down", gpus_per_node=1, qos=QOS_PU)), cli, user=user)
    never = preflight(resolved(write_spec(scratch_dir, "dbd-down-six", gpus_per_node=3, nodes=2)), cli, user=user)
    assert time.monotonic() - started < 2 * PREFLIGHT_BUDGET_S
    assert unknown.kind is VerdictKind.UNKNOWN and "slurmdbd" in unknown.message
    assert (never.kind, never.reason) == (VerdictKind.NEVER_FITS, "AssocGrpGRES")  # association limits still checked
    in_process = quota_report(ACCOUNT, runner.cli(), user=user)
    assert in_process.accounting_error is not None and in_process.associations[0].limits
    runner.record("slurmdbd-down", "slurmdbd stopped (SIGTERM by its pid file)")


def test_launches_reuse_slurmdbds_answers_and_get_by_while_it_is_down(
    quota: None, researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster, request: pytest.FixtureRequest
) -> None:
    user = pwd.getpwnam(slurm_cluster.user)
    cache = Path(user.pw_dir) / ".cache" / "hpc-tf" / f"slurmdbd-{user.pw_name}.json"
    cache.unlink(missing_ok=True)
    hpc_tf(researcher_run, scratch_dir, *QUOTA, "--account", ACCOUNT)  # asks slurmdbd and remembers
    assert (cache.stat().st_uid, cache.stat().st_mode & 0o777) == (user.pw_uid, 0o600)

    request.getfixturevalue("slurmdbd_stopped")
    # the default QOS and QOS_PU's per-user limit are slurmdbd's; the controller adds the use
    fits = launch(researcher_run, write_spec(scratch_dir, "dbd-away-fits", gpus_per_node=1))
    assert "GPU quota: 1 GPU for 5 min fits" in flat(fits.stderr) and "warning" not in fits.stderr, fits.stderr
    refused = launch(researcher_run, write_spec(scratch_dir, "dbd-away-pu", gpus_per_node=3, qos=QOS_PU), check=False)
    assert refused.returncode == 3 and "MaxTRESPerUser=gres/gpu=2" in flat(refused.stderr), refused.stderr


def test_hanging_accounting_does_not_hold_a_launch(
    quota: None, scratch_dir: Path, slurm_cluster: SlurmCluster
) -> None:
    user = slurm_cluster.user
    spec = write_spec(scratch_dir, "dbd-hangs", gpus_per_node=1)
    with SilentListener() as silent:
        conf = conf_copy(SLURM_CONF, scratch_dir / "conf-hang", AccountingStorageHost="127.0.0.1",
                         AccountingStoragePort=str(silent.port))
        runner = UserRunner(user, scratch_dir, conf)
        started = time.monotonic()
        verdict = preflight(resolved(spec), runner.cli(), user=user)
        elapsed = time.monotonic() - started
    assert elapsed < PREFLIGHT_BUDGET_S + 3, elapsed
    assert verdict.kind is VerdictKind.UNKNOWN
    assert f"did not answer within {PREFLIGHT_TIMEOUT_S:g} s" in verdict.message, verdict.message
    assert [r.returncode for r in runner.results] == [0, None]  # the controller answered; sacctmgr was cut off
    runner.record("accounting-hangs", "slurmdbd accepts connections and never answers (a listener that reads nothing)")


def test_controller_down_quota_fails_fast_and_preflight_goes_on(
    quota: None, researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster
) -> None:
    user = slurm_cluster.user
    conf = conf_copy(SLURM_CONF, scratch_dir / "conf-down", SlurmctldPort=str(free_port()))
    runner = UserRunner(user, scratch_dir, conf)
    spec = write_spec(scratch_dir, "ctl-down", gpus_per_node=1)
    started = time.monotonic()
    verdict = preflight(resolved(spec), runner.cli(), user=user)
    assert time.monotonic() - started < PREFLIGHT_BUDGET_S + 3
    assert verdict.kind is VerdictKind.UNKNOWN and "GPU quota not checked" in verdict.message, verdict.message
    assert "slurmctld" in verdict.message or "did not answer" in verdict.message, verdict.message
    with pytest.raises(SchedulerUnavailable, match="controller"):
        quota_report(ACCOUNT, runner.cli(), user=user)
    failed = hpc_tf(researcher_run, scratch_dir, *QUOTA, check=False, env={"SLURM_CONF": str(conf)})
    assert failed.returncode == 1 and "controller (slurmctld) is not answering" in flat(failed.stderr), failed.stderr
    runner.record("controller-down", "slurmctld not reachable: a copy of slurm.conf whose SlurmctldPort nobody uses")
