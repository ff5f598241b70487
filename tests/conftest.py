"""Fixtures for tests that use the test Slurm cluster (``sudo tests/cluster/up``).

Tests that need the cluster carry ``@pytest.mark.slurm``. When the cluster is not usable they fail
under CI (env ``CI`` or ``HPC_TF_REQUIRE_CLUSTER=1``, which ``tests/run`` sets) and skip elsewhere,
saying how to start it. Jobs are submitted as the cluster's non-root user, like a researcher would:

    def test_x(researcher_run, scratch_dir, wait_for_job):
        job_id = researcher_run(["sbatch", "--parsable", "--wrap", "true"], cwd=scratch_dir).stdout.strip()
        assert wait_for_job(job_id).state == "COMPLETED"

A second ordinary user (``intruder_run``, same signature) plays another user of the shared cluster.

When a ``slurm`` test fails, its report gets sinfo/squeue/sacct and the daemon log tails.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
import time
import types
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

CLUSTER_SCRIPTS = Path(__file__).parent / "cluster"
# `from tests.x import y` must work although tests/run keeps the checkout off the front of sys.path
# (python -P), so that `hpc` is the installed copy: the checkout goes to the END, after site-packages.
_CHECKOUT = str(Path(__file__).resolve().parent.parent)
if _CHECKOUT not in sys.path:
    sys.path.append(_CHECKOUT)
# ...and "tests" must be this directory even though some packages (tf2onnx) install a top-level
# "tests" package into site-packages, which would otherwise win.
if getattr(sys.modules.get("tests"), "__path__", None) != [str(Path(__file__).resolve().parent)]:
    _tests = types.ModuleType("tests")
    _tests.__path__ = [str(Path(__file__).resolve().parent)]
    sys.modules["tests"] = _tests
STATE_ENV = Path("/run/hpc-tf-cluster/state.env")  # written by tests/cluster/up, removed by down
START_HINT = "start it with: sudo tests/cluster/up"
# the venv pytest runs from is the Python environment of every job (it lives on the "shared" filesystem)
VENV_BIN = Path(sys.prefix) / "bin"
TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL"}
    | {"DEADLINE", "REVOKED"}
)


@dataclass(frozen=True)
class SlurmCluster:
    """The test cluster as described by tests/cluster/up in state.env."""

    name: str
    slurm_version: str
    cgroup: bool  # task/cgroup + ConstrainDevices (CUDA_VISIBLE_DEVICES renumbered) or physical indices
    nodes: tuple[str, ...]
    gpu_nodes: tuple[str, ...]
    cpu_nodes: tuple[str, ...]
    gpus_per_node: int
    gpu_partition: str
    cpu_partition: str
    user: str
    account: str
    gpu_quota: int
    scratch_dir: Path
    log_dir: Path
    other_user: str | None = None  # another ordinary user in its own account (None: cluster from an older up)
    cgroup_modes: tuple[str, ...] = ("1", "0")  # the modes this version can run in on this machine
    cpus: str = "fake"  # "fake": 8 CPUs per node, tasks not pinned; "real": this machine's CPUs + task/affinity
    amd_nodes: tuple[str, ...] = ()  # nodes with fake AMD GPUs (Slurm sets ROCR_VISIBLE_DEVICES)
    amd_partition: str | None = None

    @classmethod
    def load(cls, path: Path = STATE_ENV) -> SlurmCluster:
        lines = [line for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")]
        values = dict(line.split("=", 1) for line in lines)
        return cls(
            name=values["CLUSTER"],
            slurm_version=values["SLURM_VERSION"],
            cgroup=values["CGROUP"] == "1",
            cgroup_modes=tuple(values.get("CGROUP_MODES", "1,0").split(",")),
            nodes=tuple(values["NODES"].split(",")),
            gpu_nodes=tuple(values["GPU_NODES"].split(",")),
            cpu_nodes=tuple(values["CPU_NODES"].split(",")),
            gpus_per_node=int(values["GPUS_PER_NODE"]),
            gpu_partition=values["GPU_PARTITION"],
            cpu_partition=values["CPU_PARTITION"],
            user=values["USER"],
            account=values["ACCOUNT"],
            gpu_quota=int(values["GPU_QUOTA"]),
            scratch_dir=Path(values["SCRATCH_DIR"]),
            log_dir=Path(values["LOG_DIR"]),
            other_user=values.get("OTHER_USER"),
            cpus=values.get("CPUS", "fake"),
            amd_nodes=tuple(filter(None, values.get("AMD_NODES", "").split(","))),
            amd_partition=values.get("AMD_PARTITION"),
        )


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: str  # Slurm's state word: PENDING, RUNNING, COMPLETED, CANCELLED ("by UID" dropped), ...
    reason: str  # pending reason (from squeue while the job is alive), "None" otherwise
    exit_code: str  # "rc:signal" once finished, "" while alive

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


def _run(argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _strict() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("HPC_TF_REQUIRE_CLUSTER") == "1"


def cluster_problem() -> str | None:
    """Why the cluster cannot be used by these tests right now, or None."""
    if os.geteuid() != 0:
        return "cluster tests submit as the cluster user via runuser, which needs root: run pytest as root"
    if not STATE_ENV.is_file():
        return f"the test Slurm cluster is not up ({STATE_ENV} missing); {START_HINT}"
    try:
        ping = _run(["scontrol", "ping"], timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scontrol ping failed: {exc}; {START_HINT}"
    if "is UP" not in ping.stdout:
        return f"slurmctld is not UP: {(ping.stdout + ping.stderr).strip()}; {START_HINT}"
    return None


def _require_cluster() -> None:
    problem = cluster_problem()
    if problem is None:
        return
    if _strict():
        pytest.fail(f"{problem} (CI: cluster tests must not be skipped)", pytrace=False)
    pytest.skip(problem)


def as_user_argv(user: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """argv run as ``user`` with a clean environment (root's PATH and HOME must not leak into jobs:
    sbatch exports the submitter's environment). PATH starts with the test venv's bin."""
    clean = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": pwd.getpwnam(user).pw_dir,
        "USER": user,
        "LOGNAME": user,
        "LANG": "C.UTF-8",
        **(env or {}),
    }
    return ["runuser", "-u", user, "--", "env", "-i", *(f"{key}={value}" for key, value in clean.items()), *argv]


def run_as_user(
    user: str,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run argv as ``user`` with a clean environment (see :func:`as_user_argv`)."""
    result = subprocess.run(as_user_argv(user, argv, env), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            check=False)
    if check and result.returncode != 0:
        pytest.fail(
            f"as {user}: {' '.join(argv)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}",
            pytrace=False,
        )
    return result


def run_as_researcher(
    cluster: SlurmCluster,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run argv as the cluster user (see :func:`run_as_user`)."""
    return run_as_user(cluster.user, argv, cwd=cwd, env=env, timeout=timeout, check=check)


def query_jobs(job_ids: Sequence[str]) -> dict[str, JobStatus]:
    """One sacct call for all jobs (finished states), one squeue call for those still alive (live state
    and pending reason: sacct's Reason lags). Jobs neither knows yet are missing from the result."""
    found: dict[str, JobStatus] = {}
    fields = "JobID,State,Reason,ExitCode"
    sacct = _run(["sacct", "--parsable2", "--noheader", "-X", "-o", fields, "-j", ",".join(job_ids)])
    for line in sacct.stdout.splitlines():
        job_id, state, reason, exit_code = line.split("|")
        found[job_id] = JobStatus(job_id, state.split(" ")[0], reason, exit_code)
    alive = [job_id for job_id in job_ids if job_id not in found or not found[job_id].finished]
    if alive:
        squeue = _run(["squeue", "--noheader", "-o", "%i|%T|%r", "-j", ",".join(alive)])
        for line in squeue.stdout.splitlines():
            job_id, state, reason = line.split("|")
            if job_id in alive and state not in TERMINAL_STATES:  # finished: wait for sacct to say so
                found[job_id] = JobStatus(job_id, state, reason, "")
    return found


def wait_for_jobs(
    job_ids: Sequence[str],
    timeout: float = 120,
    until: Callable[[JobStatus], bool] = lambda status: status.finished,
) -> dict[str, JobStatus]:
    """Poll (batched, with backoff) until `until` holds for every job; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        statuses = query_jobs(job_ids)
        if all(job_id in statuses and until(statuses[job_id]) for job_id in job_ids):
            return statuses
        if time.monotonic() > deadline:
            pytest.fail(f"jobs {', '.join(job_ids)} not there after {timeout} s: {statuses}", pytrace=False)
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def wait_for_job(
    job_id: str, timeout: float = 120, until: Callable[[JobStatus], bool] = lambda status: status.finished
) -> JobStatus:
    return wait_for_jobs([job_id], timeout, until)[job_id]


def cluster_diagnostics(log_dir: Path = Path("/var/log/slurm"), log_lines: int = 40) -> str:
    """What an admin would look at first: nodes, queue, recent accounting, daemon log tails."""
    parts = []
    sacct_fields = "JobID,User,JobName,State,ExitCode,NodeList,AllocTRES%50"
    for argv in (
        ["sinfo", "-N", "-o", "%N %P %T %G %E"],
        ["squeue", "-o", "%i %u %T %r %D %N %M %l %b"],
        ["sacct", "-a", "-X", "-S", "now-30minutes", "-o", sacct_fields],
    ):
        try:
            result = _run(argv, timeout=15)
            parts.append(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            parts.append(f"$ {' '.join(argv)}\n{exc}\n")
    for log in sorted(log_dir.glob("slurm*.log")):
        try:
            tail = log.read_text(errors="replace").splitlines()[-log_lines:]
        except OSError as exc:
            tail = [str(exc)]
        parts.append(f"--- tail of {log}\n" + "\n".join(tail) + "\n")
    return "\n".join(parts)


# ------------------------------------------------------------------ hooks


def pytest_sessionstart(session: pytest.Session) -> None:
    # tests/run installs the package into the venv (non-editable): make sure that copy is what is tested,
    # not the checkout's hpc/ directory put on sys.path by accident
    if os.environ.get("HPC_TF_REQUIRE_INSTALLED") == "1":
        import hpc

        if not Path(hpc.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()):
            raise pytest.UsageError(f"hpc imported from {hpc.__file__}, not from the venv {sys.prefix}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    import hpc

    state = f"test cluster: {'up' if STATE_ENV.is_file() else 'down'} ({STATE_ENV})"
    return [f"hpc imported from: {Path(hpc.__file__).parent}", state]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("slurm") is not None:
        _require_cluster()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and item.get_closest_marker("slurm") is not None:
        report.sections.append(("slurm diagnostics", cluster_diagnostics()))
    return report


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The running test cluster (as it was when first requested; see SlurmCluster.load for now)."""
    _require_cluster()
    return SlurmCluster.load()


@pytest.fixture(scope="session")
def restart_cluster() -> Callable[..., SlurmCluster]:
    """``restart_cluster("1" | "0" | "auto", cpus="fake" | "real") -> SlurmCluster``: bring the cluster
    into that cgroup and CPU mode (tests/cluster/up restarts slurmctld/slurmd only when a mode
    changes). Restore what you change."""

    def restart(cgroup: str, cpus: str = "fake") -> SlurmCluster:
        now = SlurmCluster.load()
        if cgroup != "auto" and cgroup not in now.cgroup_modes:
            pytest.skip(f"Slurm {now.slurm_version} runs in cgroup mode {','.join(now.cgroup_modes)} only on "
                        "this machine kind (see README: Tests)")
        up = _run([str(CLUSTER_SCRIPTS / "up"), f"--cgroup={cgroup}", f"--cpus={cpus}"], timeout=180)
        if up.returncode != 0:
            pytest.fail(f"tests/cluster/up --cgroup={cgroup} --cpus={cpus} failed:\n{up.stdout}{up.stderr}",
                        pytrace=False)
        return SlurmCluster.load()

    return restart


def _runner(user: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return run_as_user(user, argv, cwd=cwd, env=env, timeout=timeout, check=check)

    return run


@pytest.fixture
def researcher_run(slurm_cluster: SlurmCluster) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``researcher_run(argv, cwd=..., env=None, timeout=60, check=True)``: run argv as the cluster user."""
    return _runner(slurm_cluster.user)


@pytest.fixture
def intruder_run(slurm_cluster: SlurmCluster) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``intruder_run(argv, cwd=..., ...)``: run argv as another ordinary user of the cluster (own account,
    no share in the researcher's files), as a hostile neighbour would."""
    if slurm_cluster.other_user is None:
        pytest.fail(f"the test cluster has no second user (OTHER_USER missing from {STATE_ENV}); "
                    f"re-run: sudo tests/cluster/up", pytrace=False)
    return _runner(slurm_cluster.other_user)


@pytest.fixture(name="wait_for_job")
def wait_for_job_fixture() -> Callable[..., JobStatus]:
    """``wait_for_job(job_id, timeout=120, until=finished) -> JobStatus``; ``wait_for_jobs`` for many."""
    return wait_for_job


@pytest.fixture(name="wait_for_jobs")
def wait_for_jobs_fixture() -> Callable[..., dict[str, JobStatus]]:
    return wait_for_jobs


@pytest.fixture
def scratch_dir(slurm_cluster: SlurmCluster, request: pytest.FixtureRequest) -> Path:
    """A fresh directory on the shared scratch filesystem, owned by the cluster user. Kept after the
    test for post-mortems (``tests/cluster/down --purge`` wipes scratch)."""
    base = slurm_cluster.scratch_dir / "tests"
    base.mkdir(mode=0o755, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    user = pwd.getpwnam(slurm_cluster.user)
    for attempt in range(1000):
        path = base / f"{name}-{os.getpid()}-{attempt}"
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            continue
        os.chown(path, user.pw_uid, user.pw_gid)
        return path
    raise RuntimeError(f"no free scratch directory name under {base}")
