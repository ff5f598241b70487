"""The Triton serving node as a long-running Slurm job on the site's serving partition.

``hpc-tf serve up`` (on a Slurm site with ``serving.partition``, or with ``--slurm``) renders
``<repository>/.hpc-tf/server/serve.sbatch`` and submits it. The job runs ``hpc-tf serve node``
(:func:`run_node`): tritonserver on the allocated node, listening on that node's address, its
endpoint (with the job id) registered in the repository — where ``hpc-tf handoff``, ``serve status``
and ``serve up`` (which waits for it) find it. ``serve down`` cancels the job; the node unregisters
itself on SIGTERM.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hpc.atomic import write_text_atomic
from hpc.backends import Backend
from hpc.errors import ConfigError, ServingError
from hpc.modelbase import validate_document
from hpc.render.cpu_jobs import ServeJob, render_serve_script
from hpc.render.directives import gpu_request
from hpc.resolve import ResolvedJob, resolve
from hpc.rundir import new_run_id
from hpc.scheduler import JobState, Scheduler
from hpc.serving import secret as node_secret
from hpc.serving.repository import Repository, check_replica_name
from hpc.serving.server import Endpoint, read_endpoint, run_foreground
from hpc.serving.service import serving_target
from hpc.site.load import LoadedSite, load_site
from hpc.spec.load import LoadedSpec
from hpc.spec.model import JobSpec
from hpc.text import run_time_literal
from hpc.units import format_duration, parse_duration
from hpc.yamlsource import YamlDocument

SERVE_CPUS = 2
SERVE_MEM = "3000M"  # tritonserver + one python stub with TensorFlow per loaded version (~0.5 GB each)
UP_TIMEOUT_S = 300.0
SERVE_JOB_NAME = "hpc-tf-serve"
REPLICA_JOB_NAME = "hpc-tf-replica"
T = TypeVar("T")


@dataclass(frozen=True)
class SlurmNodePlan:
    repository: Repository
    job: ServeJob
    script: str
    resolved: ResolvedJob  # the job as resolve made it, for the backend's quota preflight
    inference_token: bool = False
    replica: str | None = None  # the router's replica of this name, not the repository's node

    @property
    def script_path(self) -> Path:
        if self.replica is not None:
            return self.repository.replicas_dir / f"{self.replica}.sbatch"
        return self.repository.server_dir / "serve.sbatch"


def uses_slurm(site: str | None, overrides: Sequence[str]) -> bool:
    """Site-driven default of ``serve up``: a Slurm site that names a serving partition."""
    config = load_site(site, overrides).config
    return config.launcher == "slurm" and config.serving.partition is not None


def plan_slurm_node(
    site: str | None,
    overrides: Sequence[str],
    repository: Path | None = None,
    time_limit: str | None = None,
    inference_token: bool | None = None,
    replica: str | None = None,
) -> SlurmNodePlan:
    """The serving-node job for the site's repository (or ``repository``), resolved and rendered, not
    submitted; with ``replica``: the job of the router's replica of that name."""
    loaded = load_site(site, overrides)
    config = loaded.config
    target = serving_target(site, overrides, repository)
    repo = Repository.at(target.repository.root.resolve())
    try:
        time_seconds = parse_duration(time_limit or config.default_time)
    except ValueError as err:  # --time as typed (the site's default_time was checked when the site loaded)
        raise ConfigError(f"--time: {err}") from None
    name = SERVE_JOB_NAME if replica is None else REPLICA_JOB_NAME
    job = resolve_serving_job(loaded, repo, time_seconds, name, args=() if replica is None else ("--replica", replica),
                              gpus=0 if replica is None else config.serving.replica_gpus)
    log = repo.server_dir / "slurm" if replica is None else repo.replicas_dir / replica / "slurm"
    serve = ServeJob(site=config.name, repository=str(repo.root), command=job.command,
                     log=str(log), partition=job.partition, account=job.account, qos=job.qos,
                     time_seconds=job.time_seconds, cpus=SERVE_CPUS, mem=job.mem, module_init=job.module_init,
                     modules=job.modules, name=name,
                     gres=gpu_request(job.gres_name, job.gpu_type, job.gpus_per_node) if job.gpus_per_node else None)
    token = target.inference_token if inference_token is None else inference_token
    return SlurmNodePlan(repo, serve, render_serve_script(serve), job, token, replica)


def resolve_serving_job(site: LoadedSite, repo: Repository, time_seconds: int, name: str = SERVE_JOB_NAME,
                        subcommand: str = "node", mem: str = SERVE_MEM, args: Sequence[str] = (),
                        gpus: int = 0) -> ResolvedJob:
    """A serving job (the node; the router: ``name``, ``hpc-tf serve <subcommand> --repository R [args]``)
    as a one-task CPU job, resolved as every job is: the site's partitions and their limits apply to it
    (its partition: serving.partition, else cpu_partition; ``gpus``: a replica's serving.replica_gpus, counted by
    the quota preflight as any job's)."""
    config = site.config
    partition = config.serving.partition or config.cpu_partition
    resources: dict[str, object] = {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": gpus, "cpus_per_task": SERVE_CPUS,
                                    "mem": mem, "time": format_duration(time_seconds)}
    if partition is not None:
        resources["partition"] = partition
    data = {"name": name, "resources": resources,
            "command": [config.python, "-m", "hpc.cli", "serve", subcommand, "--repository",
                        run_time_literal(str(repo.root)), *args]}
    document = YamlDocument(data=data, source=f"the {name} job of site '{config.name}'")
    spec = LoadedSpec(spec=validate_document(JobSpec, document, what=f"{name} job"), document=document,
                      base_dir=repo.root)
    return resolve(spec, site, new_run_id(name))


def _registered(repo: Repository) -> Endpoint | None:
    try:
        return read_endpoint(repo)
    except ServingError:
        return None


def submit_slurm_node(plan: SlurmNodePlan, backend: Backend) -> str:
    """Refuse when a node registered for the repository still runs; else, through the backend (its quota
    preflight, a no-op for this CPU job; its submit, the script removed again when that fails), store a
    fresh owner's secret (read by the job from the owner's config directory: never in the script or on
    sbatch's command line), write the script and submit it."""
    backend.check_quota(plan.resolved)
    old = _registered(plan.repository)
    if old is not None and old.job_id is not None:
        state = backend.query([old.job_id]).get(old.job_id)
        if state is not None and not state.state.is_terminal:
            raise ServingError(f"a serving node for {plan.repository.root} already runs as Slurm job {old.job_id} "
                               f"({old.http_url})", hint="use it, or stop it first: hpc-tf serve down")
    node_secret.create(plan.repository.root, inference_token=plan.inference_token)
    try:  # not submitted: no secret of a node that never ran, no script that looks submitted
        plan.repository.make_server_dir()
        write_text_atomic(plan.script_path, plan.script, mode=0o755)
        with backend.submitting(plan.script_path):  # only once written: the directory was checked to be ours
            return backend.submit(plan.script_path)
    except BaseException:
        node_secret.remove(plan.repository.root)
        raise


def start_slurm_node(
    site: str | None,
    overrides: Sequence[str],
    backend: Backend,
    repository: Path | None = None,
    time_limit: str | None = None,
    on_submitted: Callable[[str, Path], None] | None = None,
    inference_token: bool | None = None,
) -> Endpoint:
    """``hpc-tf serve up`` on Slurm: plan, submit, then wait until the node registered its endpoint."""
    plan = plan_slurm_node(site, overrides, repository, time_limit, inference_token)
    job_id = submit_slurm_node(plan, backend)
    if on_submitted is not None:
        on_submitted(job_id, plan.script_path)
    return wait_for_endpoint(plan.repository, job_id, backend.scheduler)


def wait_for_endpoint(repo: Repository, job_id: str, scheduler: Scheduler, timeout: float = UP_TIMEOUT_S) -> Endpoint:
    """Wait until job ``job_id`` registered its (ready) endpoint; fail early when the job ends first."""
    def registered() -> Endpoint | None:
        endpoint = _registered(repo)
        return endpoint if endpoint is not None and endpoint.job_id == job_id else None

    return wait_for_job(registered, job_id, scheduler, "serving-node", repo.server_dir / f"slurm-{job_id}.out",
                        timeout)


def wait_for_job(registered: Callable[[], T | None], job_id: str, scheduler: Scheduler, what: str, log: Path,
                 timeout: float = UP_TIMEOUT_S) -> T:
    """Wait until ``registered()`` finds what job ``job_id`` registers; fail early when the job ends first."""
    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        found = registered()
        if found is not None:
            return found
        status = scheduler.query([job_id]).get(job_id)
        if status is not None and status.state.is_terminal:
            raise ServingError(f"{what} job {job_id} ended ({status.state.value}) before it was ready",
                               hint=f"its log: {log}")
        if time.monotonic() > deadline:
            where = f"still {status.state.value}" if status is not None else "not known to Slurm yet"
            raise ServingError(f"{what} job {job_id} is not ready after {timeout:.0f} s ({where})",
                               hint=f"hpc-tf status {job_id}; cancel it with hpc-tf cancel {job_id}")
        time.sleep(delay)
        delay = min(delay * 1.5, 3.0)


def stop_slurm_node(repo: Repository, endpoint: Endpoint, backend: Backend, timeout: float = 60.0) -> None:
    """Cancel the serving-node job and wait for it to end; drop its registration if it could not."""
    assert endpoint.job_id is not None
    backend.cancel([endpoint.job_id])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.query([endpoint.job_id]).get(endpoint.job_id)
        if status is not None and (status.state.is_terminal or status.state is JobState.UNKNOWN):
            break
        time.sleep(1.0)
    else:
        raise ServingError(f"serving-node job {endpoint.job_id} did not end within {timeout:.0f} s after scancel")
    current = _registered(repo)
    if current is not None and current.job_id == endpoint.job_id:
        repo.endpoint_file.unlink(missing_ok=True)  # killed before it could unregister itself
    if current is None or current.job_id == endpoint.job_id:  # no newer node took over the repository
        node_secret.remove(repo.root)


def node_address(hostname: str | None = None) -> str:
    """This node's address as the other nodes reach it (its hostname resolved; loopback refused)."""
    name = hostname or socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError as err:
        raise ServingError(f"cannot resolve this node's name '{name}': {err}", hint="pass --host ADDRESS") from None
    if address.startswith("127."):
        raise ServingError(f"'{name}' resolves to the loopback address {address}; other nodes could not reach it",
                           hint="pass --host with the node's cluster address")
    return address


def run_node(repository: Path, host: str | None = None, replica: str | None = None) -> int:
    """Inside the job: serve ``repository`` on this node until signalled (as the router's replica
    ``replica``, when given); the job id comes from Slurm."""
    if replica is not None:
        check_replica_name(replica)  # before anything else: it names files
    return run_foreground(Repository.at(repository), host or node_address(), os.environ.get("SLURM_JOB_ID"), replica)
