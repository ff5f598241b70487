"""The serving node: the ``tritonserver`` binary bundled in the nvidia-pytriton wheel, started directly.

Facts it relies on (lab NOTES §2, §4): the wheel's backend directory has no python stub, so a
backend directory is assembled (a copy of ``backends/python`` plus a *symlink* to the stub for this
interpreter, which keeps the stub's RPATH valid); the stub ignores PYTHONPATH and takes its
``sys.prefix`` from the first ``python3`` on PATH, so the venv's bin goes first; it loads the
libpython found on LD_LIBRARY_PATH, so this interpreter's LIBDIR goes first. A stub that cannot
start makes every load hang, so it is run once before the server starts (rc 1 = fine).

Once ready, the node loads what was serving (:mod:`hpc.serving.restore`); only then is the endpoint
(addresses, ports, pid, host, what was restored) written to the repository's ``.hpc-tf/server.json``
(0600: the owner's commands need it, nobody else), where ``hpc-tf handoff`` and clients find it. The
control APIs answer only requests carrying the owner's secret (:mod:`hpc.serving.secret`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hpc.atomic import write_text_atomic
from hpc.errors import ConfigError, HpcTfError, ServingError
from hpc.records import read_record
from hpc.runtime.node.processes import alive
from hpc.serving import native_backend
from hpc.serving import secret as node_secret
from hpc.serving.config import AUTO, BACKEND, FORMATS, FormatChoice
from hpc.serving.repository import Repository
from hpc.serving.restore import Restored, restore
from hpc.serving.secret import NodeSecret
from hpc.serving.state import ServingState
from hpc.text import shown

READY_TIMEOUT_S = 60.0
# what stops a node: SIGTERM (scancel, a router scaling down), SIGINT (Ctrl-C), SIGUSR1 (the walltime warning)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Endpoint:
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    pid: int
    hostname: str
    repository: str
    log: str
    started: float
    job_id: str | None = None
    # the Triton backends the server was started with (which formats it can load); None: not recorded
    backends: list[str] | None = None
    # backends hpc-tf could not add (its own onnxruntime: hpc.serving.native_backend), with why
    missing_backends: dict[str, str] = field(default_factory=dict)
    # what the node loaded of the recorded serving state when it started (Restored, as dicts)
    restored: list[dict[str, Any]] = field(default_factory=list)

    def restored_lines(self) -> list[str]:
        return [Restored.from_dict(r).line for r in self.restored]

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def to_dict(self) -> dict[str, object]:
        """What ``serve up --json`` prints: the record and the URLs clients use, as ``serve status --json`` has them."""
        return {**asdict(self), "grpc_url": self.grpc_url, "http_url": self.http_url}


def endpoint_path(repo: Repository, replica: str | None = None) -> Path:
    """The node's endpoint file, or that of the router's replica ``replica``."""
    return repo.endpoint_file if replica is None else repo.replica_file(replica)


def read_endpoint(repo: Repository, replica: str | None = None) -> Endpoint:
    path = endpoint_path(repo, replica)
    if not path.is_file():
        raise ServingError(f"no serving node is registered for {repo.root} ({path} missing)",
                           hint="start one with: hpc-tf serve up")
    # owned: hpc-tf sends the owner's secret to the address this file names
    return read_record(path, "the serving node's endpoint", parse=_endpoint, owned=True,
                       fix="if its serving node still runs, stop it (squeue, or ps for tritonserver); then remove it")


def _endpoint(data: dict[str, Any]) -> Endpoint:
    endpoint = Endpoint(**data)
    endpoint.restored_lines()  # a damaged entry fails here, as the record's, not later
    return endpoint


def registered_node(repo: Repository) -> Endpoint | None:
    """The repository's serving node, when one is registered and readable (None: a caller that needs it
    reads it with :func:`read_endpoint`, which says what is wrong)."""
    if not repo.endpoint_file.is_file():
        return None
    try:
        return read_endpoint(repo)
    except HpcTfError:
        return None


def check_servable(fmt: FormatChoice, node: Endpoint, other_setting: str = "pass --format {}") -> None:
    """Refuse a format the node's Triton has no backend for: its load would fail (and a hand-off roll back).
    The fix names serving.format and ``other_setting`` (where else the format may have come from)."""
    backend = BACKEND["python" if fmt == AUTO else fmt]  # auto chooses between python-backend formats
    if node.backends is None or backend in node.backends:
        return  # a node that did not record its backends: its load says
    served = [f for f in FORMATS if BACKEND[f] in node.backends]
    fix = (f"set serving.format: {served[0]} in the site config, or {other_setting.format(served[0])}" if served
           else "serve it with a Triton that has that backend")
    why = f"; {node.missing_backends[backend]}" if backend in node.missing_backends else ""
    raise ConfigError(f"serving format '{fmt}' needs Triton's {backend} backend, which the serving node at "
                      f"{node.grpc_url} does not have (its backends: {', '.join(node.backends) or 'none'}{why}): "
                      f"{fix}")


@dataclass(frozen=True)
class Bundle:
    """Paths inside the installed nvidia-pytriton wheel."""

    server_dir: Path  # .../site-packages/pytriton/tritonserver
    libs_dir: Path  # .../site-packages/nvidia_pytriton.libs

    @classmethod
    def find(cls) -> Bundle:
        spec = importlib.util.find_spec("pytriton")  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise ServingError("the tritonserver bundled in nvidia-pytriton is not installed",
                               hint="install the serving extra: pip install 'hpc-tf[serving]'")
        pkg = Path(next(iter(spec.submodule_search_locations)))
        bundle = cls(pkg / "tritonserver", pkg.parent / "nvidia_pytriton.libs")
        if not bundle.binary.is_file():
            raise ServingError(f"no tritonserver binary at {bundle.binary}")
        return bundle

    @property
    def binary(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    def stub(self, version: str) -> Path:
        return self.server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"

    def backends(self) -> list[str]:
        """The backends this tritonserver has (the wheel's has ``python`` only)."""
        return sorted(p.name for p in (self.server_dir / "backends").iterdir() if p.is_dir())


def server_env(bundle: Bundle) -> dict[str, str]:
    """Environment for tritonserver and its python stubs: this venv first on PATH, this
    interpreter's libpython first on LD_LIBRARY_PATH (lab NOTES §4)."""
    libdir = str(sysconfig.get_config_var("LIBDIR") or "")
    return {
        "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": sys.prefix,
        "LD_LIBRARY_PATH": ":".join(p for p in (libdir, str(bundle.libs_dir)) if p),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
    }


def backend_dir(bundle: Bundle, workdir: Path) -> Path:
    """A backend directory with the python backend and a symlink to this interpreter's stub."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = bundle.stub(version)
    if not stub.is_file():
        raise ServingError(f"the bundled Triton has no python backend stub for Python {version} ({stub})")
    dst = workdir / "backends"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(bundle.server_dir / "backends", dst, symlinks=True)
    (dst / "python" / "triton_python_backend_stub").symlink_to(stub)
    return dst


def preflight_stub(stub: Path, env: dict[str, str]) -> None:
    """Run the stub bare: it must get as far as complaining about its arguments (rc 1)."""
    try:
        done = subprocess.run([str(stub)], env=env, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ServingError(f"the python backend stub {stub} cannot run: {err}") from None
    if done.returncode != 1:
        detail = (done.stderr or done.stdout).strip()
        raise ServingError(f"the python backend stub cannot start (exit {done.returncode}): {detail}",
                           hint="a stub that cannot start makes every model load hang; fix its libraries first")


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _http_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def server_argv(bundle: Bundle, repo: Repository, backends: Path, host: str,
                ports: tuple[int, int, int], secret: NodeSecret) -> list[str]:
    http, grpc, metrics = ports
    return [
        str(bundle.binary), f"--model-repository={repo.root}", "--model-control-mode=explicit",
        f"--http-address={host}", f"--grpc-address={host}", f"--metrics-address={host}",
        f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
        f"--backend-directory={backends}", f"--cache-directory={bundle.server_dir / 'caches'}",
        "--disable-auto-complete-config", "--exit-timeout-secs=20", "--log-verbose=0",
        # ready = able to serve; with strict readiness one failed (rolled back) version would make the
        # whole node report not-ready although the previous version serves
        "--strict-readiness=false",
        *secret.server_flags(),
    ]


def start_server(
    repo: Repository,
    secret: NodeSecret,
    host: str = "127.0.0.1",
    ports: tuple[int, int, int] | None = None,
    job_id: str | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
    replica: str | None = None,
) -> tuple[Endpoint, subprocess.Popen[bytes]]:
    """Start tritonserver in the background on ``repo``, locked with ``secret``, wait until ready, load the
    recorded serving state, register its endpoint (the node's, or that of the router's replica ``replica``)."""
    _refuse_running(repo, replica)
    state = ServingState.read(repo)  # before anything starts: a damaged record is refused, nothing loaded
    bundle = Bundle.find()
    repo.root.mkdir(parents=True, exist_ok=True)
    work = repo.make_server_dir(replica)
    env = server_env(bundle)
    backends = backend_dir(bundle, work)
    missing_backends = native_backend.add_to(backends)
    preflight_stub(backends / "python" / "triton_python_backend_stub", env)
    ports = ports or (free_port(host), free_port(host), free_port(host))
    log = work / "tritonserver.log"
    with log.open("ab") as out:
        out.writelines(f"hpc-tf: no {name} backend: {why}\n".encode() for name, why in missing_backends.items())
        out.flush()
        proc = subprocess.Popen(server_argv(bundle, repo, backends, host, ports, secret), env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    endpoint = Endpoint(host=host, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2], pid=proc.pid,
                        hostname=socket.gethostname(), repository=str(repo.root), log=str(log),
                        started=time.time(), job_id=job_id, backends=sorted(p.name for p in backends.iterdir()),
                        missing_backends=missing_backends)
    try:
        _wait_ready(endpoint, proc, log, time.monotonic() + ready_timeout)
        restored = _restore(repo, state, endpoint, secret, log)
    except BaseException:
        if proc.poll() is None:
            _stop_pid(proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # its stubs, if it had to be killed
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    endpoint = replace(endpoint, restored=[r.to_dict() for r in restored])
    write_text_atomic(endpoint_path(repo, replica), endpoint.to_json(), mode=0o600)
    return endpoint, proc


def _wait_ready(endpoint: Endpoint, proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    while not _http_ready(endpoint.http_url):
        if proc.poll() is not None or time.monotonic() > deadline:
            said = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            last = f": {shown(said[-1], 200)}" if said else ""
            raise ServingError(f"tritonserver did not become ready (exit {proc.poll()}){last}; its log: {log}")
        time.sleep(0.05)


def _restore(repo: Repository, state: ServingState, endpoint: Endpoint, secret: NodeSecret,
             log: Path) -> list[Restored]:
    """Load what was serving; each model's outcome is one line of the node's log."""
    from hpc.serving.control import ModelControl

    control = ModelControl(endpoint.grpc_url, secret)
    try:
        restored = restore(repo, state, control)
    finally:
        control.close()
    with log.open("a", encoding="utf-8") as out:  # O_APPEND: between tritonserver's own lines, never inside
        out.writelines(f"hpc-tf: {r.line}\n" for r in restored)
    return restored


def start_local(repo: Repository, host: str = "127.0.0.1", *, inference_token: bool = False) -> Endpoint:
    """``hpc-tf serve up --local``: a fresh owner's secret (the running node's is never replaced), then
    the server. The secret reaches tritonserver's command line, which this host's other users can read:
    a local node on a shared login node is not protected from them (a Slurm node is: --exclusive=user)."""
    _refuse_running(repo)
    endpoint, _ = start_server(repo, node_secret.create(repo.root, inference_token=inference_token), host=host)
    return endpoint


def _refuse_running(repo: Repository, replica: str | None = None) -> None:
    if endpoint_path(repo, replica).is_file():
        old = read_endpoint(repo, replica)
        if old.hostname == socket.gethostname() and alive(old.pid):
            raise ServingError(f"a serving node for {repo.root} is already running (pid {old.pid}, {old.http_url})",
                               hint="hpc-tf serve down first, or use it")


def _is_tritonserver(pid: int) -> bool:
    try:
        return b"tritonserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _stop_pid(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        _reap(pid)


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie (others' are not ours)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_server(repo: Repository) -> Endpoint:
    """Stop the serving node registered for ``repo`` (local process only; by its recorded pid)."""
    endpoint = read_endpoint(repo)
    if endpoint.job_id is not None:
        raise ServingError(f"the serving node runs as Slurm job {endpoint.job_id}",
                           hint=f"hpc-tf cancel {endpoint.job_id}")
    if endpoint.hostname != socket.gethostname():
        raise ServingError(f"the serving node runs on {endpoint.hostname}, not on this host")
    if alive(endpoint.pid) and _is_tritonserver(endpoint.pid):
        _stop_pid(endpoint.pid)
    repo.endpoint_file.unlink(missing_ok=True)
    node_secret.remove(repo.root)
    return endpoint


def run_foreground(repo: Repository, host: str, job_id: str | None, replica: str | None = None) -> int:
    """Serving node inside a Slurm job (or the router's replica ``replica``, a job or a local process): start
    with the secret ``serve up`` stored, register, wait for the server; unregister at the end."""
    def stop_starting(signum: int, _frame: object) -> None:
        for sig in STOP_SIGNALS:  # one stop: the clean-up below must not be cut short by a second signal
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    # stopped while it starts (a router scaling down, scancel): start_server stops the tritonserver it
    # started (it runs in a session of its own, which a signal to this process does not reach)
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop_starting)
    endpoint, proc = start_server(repo, node_secret.load(repo.root), host=host, job_id=job_id, replica=replica)
    for line in endpoint.restored_lines():
        print(line, flush=True)
    print(f"serving node ready: http {endpoint.http_url} grpc {endpoint.grpc_url} pid {endpoint.pid}", flush=True)

    def forward(signum: int, _frame: object) -> None:
        proc.send_signal(signal.SIGINT)

    for sig in STOP_SIGNALS:
        signal.signal(sig, forward)
    try:
        return proc.wait()
    finally:
        # a tritonserver that was killed outright (SIGKILL, OOM) leaves its python backend stubs running in
        # its session: end them with it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ServingError):  # already gone or replaced: nothing of ours to remove
            if read_endpoint(repo, replica).pid == endpoint.pid:
                endpoint_path(repo, replica).unlink(missing_ok=True)
