"""The installed runtime and bootstrap, run as real processes (no TensorFlow needed)."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _runtime_fixtures import recorded_tasks

from hpc.runtime import install_into, node_env
from hpc.runtime.node import hooks
from hpc.runtime.node.bootstrap import RECORD_PREFIX, _parse_args
from hpc.runtime.node.formation import formation_failure_message
from hpc.runtime.node.hook_config import HOOKS_VARIABLE, HookConfig
from hpc.runtime.node.keras_fix import TESTED_KERAS_VERSIONS, check_version

NODE_PACKAGE = Path(hooks.__file__).resolve().parent
PRINT_ENV = "import json, os; print(json.dumps({'pid': os.getpid(), 'env': dict(os.environ)}))"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    install_into(tmp_path / "runtime")
    (tmp_path / "resolved.json").write_text(
        json.dumps({"runtime": {"coordination_timeout_s": 30}}), encoding="utf-8"
    )
    return tmp_path


def bootstrap(run_dir: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    """Start the installed bootstrap as srun would, in an isolated interpreter (no site-packages, no hpc)."""
    argv = [
        sys.executable,
        "-I",
        "-S",
        str(run_dir / "runtime" / "bootstrap.py"),
        "--resolved",
        str(run_dir / "resolved.json"),
        "--",
        *command,
    ]
    return subprocess.run(
        argv, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=60
    )


def record_of(stderr: str) -> dict[str, object]:
    (line,) = [line for line in stderr.splitlines() if line.startswith(RECORD_PREFIX)]
    record: dict[str, object] = json.loads(line[len(RECORD_PREFIX) :])
    return record


def test_install_into_writes_the_bootstrap_and_the_package(run_dir: Path) -> None:
    runtime = run_dir / "runtime"
    assert (runtime / "bootstrap.py").is_file()
    copied = {p.relative_to(runtime / "hpc_tf_runtime") for p in (runtime / "hpc_tf_runtime").rglob("*.py")}
    assert copied == {p.relative_to(NODE_PACKAGE) for p in NODE_PACKAGE.rglob("*.py")}
    # the library's _errors re-exports hpc.errors; the run dir gets a standalone copy of it
    assert "from hpc.errors import" not in (runtime / "hpc_tf_runtime" / "_errors.py").read_text(
        encoding="utf-8"
    )
    assert "class RuntimeSetupError" in (runtime / "hpc_tf_runtime" / "_errors.py").read_text(
        encoding="utf-8"
    )


def test_runtime_sources_import_only_the_standard_library_or_themselves() -> None:
    for source in NODE_PACKAGE.rglob("*.py"):
        if source.name == "_errors.py":
            continue  # replaced by a copy of hpc/errors.py, checked below and by the next test
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in sys.stdlib_module_names | {"__future__"}, (
                    f"{source.name}: {name}"
                )


def test_installed_runtime_loads_with_nothing_but_the_standard_library(run_dir: Path) -> None:
    check = """
import importlib, pkgutil, sys
sys.path.insert(0, sys.argv[1])
import hpc_tf_runtime
for info in pkgutil.walk_packages(hpc_tf_runtime.__path__, "hpc_tf_runtime."):
    importlib.import_module(info.name)
top_level = {name.split(".")[0] for name in sys.modules}
outside = sorted(top_level - set(sys.stdlib_module_names) - {"hpc_tf_runtime", "__main__"})
print(",".join(outside))
"""
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", check, str(run_dir / "runtime")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_bootstrap_sets_the_plan_and_execs_the_command(run_dir: Path) -> None:
    env = recorded_tasks("gres2-2tasks-per-node")[2]
    process = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-S",
            str(run_dir / "runtime" / "bootstrap.py"),
            "--resolved",
            str(run_dir / "resolved.json"),
            "--",
            sys.executable,
            "-c",
            PRINT_ENV,
        ],
        env={"PATH": os.environ["PATH"], **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    child = json.loads(stdout)
    assert child["pid"] == process.pid  # exec, not a child process: Slurm's signals reach the command
    expected = node_env(env, run_dir / "resolved.json")  # what `hpc-tf node-env` prints
    assert {key: child["env"][key] for key in expected} == expected
    record = record_of(stderr)
    assert record["env"] == expected
    assert (record["rank"], record["node"], record["inherited_cuda_visible_devices"]) == (2, "node2", "0,1")
    assert record["command"] == [sys.executable, "-c", PRINT_ENV]


def test_outside_a_step_the_bootstrap_says_run_under_srun(run_dir: Path) -> None:
    (batch,) = recorded_tasks("batch-step")
    result = bootstrap(run_dir, batch, "true")
    assert result.returncode == 4
    assert "not inside a Slurm job step" in result.stderr and "run under srun" in result.stderr


def test_a_missing_command_is_reported(run_dir: Path) -> None:
    result = bootstrap(run_dir, recorded_tasks("cpu-2tasks")[0], "hpc-tf-no-such-command")
    assert result.returncode == 4
    assert "cannot run 'hpc-tf-no-such-command'" in result.stderr


def test_a_taken_port_is_reported_before_tensorflow_starts(run_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        port = holder.getsockname()[1]
        (run_dir / "resolved.json").write_text(
            json.dumps({"runtime": {"port_range": [port, port]}}), encoding="utf-8"
        )
        result = bootstrap(run_dir, recorded_tasks("gres2-1task-per-node")[0], "true")
    assert result.returncode == 4
    assert f"port {port} on node1 (rank 0) is already in use" in result.stderr


def test_the_bootstrap_imports_nothing_it_can_do_without(run_dir: Path) -> None:
    # it starts before every task (hpc/runtime/node/record.py says what these cost)
    argv = [
        sys.executable,
        "-I",
        "-S",
        "-X",
        "importtime",
        str(run_dir / "runtime" / "bootstrap.py"),
        "--resolved",
        str(run_dir / "resolved.json"),
        "--",
        "true",
    ]
    env = {"PATH": os.environ["PATH"], **recorded_tasks("gres2-2tasks-per-node")[0]}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "hpc_tf_runtime.task_env" in loaded
    avoided = {"dataclasses", "pathlib", "typing", "argparse", "importlib.abc", "hpc_tf_runtime.hooks"}
    assert loaded & avoided == set()


@pytest.mark.parametrize(
    "argv",
    [
        ["--resolved", "r.json", "--", "cmd", "--resolved", "x"],  # the batch script's form
        ["--resolved=r.json", "--", "cmd", "--resolved", "x"],
        ["--resolved", "r.json", "cmd", "--resolved", "x"],
    ],
)
def test_bootstrap_command_line_spellings(argv: list[str]) -> None:
    assert _parse_args(argv) == ("r.json", ["cmd", "--resolved", "x"])


def test_bootstrap_command_line_without_a_command_is_a_usage_error() -> None:
    assert _parse_args(["--", "cmd"]) == (None, ["cmd"])
    with pytest.raises(SystemExit) as caught:
        _parse_args(["--resolved", "r.json", "--"])
    assert caught.value.code == 2


def test_user_process_gets_lazy_hooks_and_the_shadowed_sitecustomize_still_runs(
    run_dir: Path, tmp_path: Path
) -> None:
    user_lib = tmp_path / "userlib"
    user_lib.mkdir()
    (user_lib / "sitecustomize.py").write_text(
        "import os\nos.environ['USER_SITECUSTOMIZE'] = 'ran'\n", encoding="utf-8"
    )
    probe = (
        "import json, os, sys; print(json.dumps({"
        "'user': os.environ.get('USER_SITECUSTOMIZE'),"
        "'finders': [type(f).__name__ for f in sys.meta_path],"
        "'heavy': sorted(m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules)}))"
    )
    env = {**recorded_tasks("gres2-cyclic")[1], "PYTHONPATH": str(user_lib)}
    result = bootstrap(run_dir, env, sys.executable, "-c", probe)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["user"] == "ran"
    assert "_PostImportFinder" in seen["finders"]
    assert seen["heavy"] == []  # nothing heavy is imported until the user's code asks


# --- the pieces the hooks are made of, in this process ---


@pytest.fixture
def clean_meta_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    yield


def test_when_imported_runs_the_callback_after_the_module_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_meta_path: None
) -> None:
    (tmp_path / "hpc_tf_probe_module.py").write_text("VALUE = 41\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[int] = []

    def patch(module: object) -> None:
        seen.append(module.VALUE)  # type: ignore[attr-defined]
        module.VALUE += 1  # type: ignore[attr-defined]

    hooks.when_imported("hpc_tf_probe_module", patch)
    assert seen == []
    import hpc_tf_probe_module  # type: ignore[import-not-found]

    assert seen == [41] and hpc_tf_probe_module.VALUE == 42
    assert type(hpc_tf_probe_module.__loader__).__name__ == "SourceFileLoader"  # the real loader is put back
    monkeypatch.delitem(sys.modules, "hpc_tf_probe_module")


def test_hooks_are_only_installed_for_two_or_more_workers(
    clean_meta_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # other tests in this process may have imported TensorFlow already; then the hooks would run
    # at once instead of waiting for the import (and patch this process): hide those modules
    for name in [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")]:
        monkeypatch.delitem(sys.modules, name)
    before = list(sys.meta_path)
    hooks.install_from_environ({HOOKS_VARIABLE: HookConfig(30, True, ("n1",)).to_json()})
    assert sys.meta_path == before
    hooks.install_from_environ({HOOKS_VARIABLE: HookConfig(30, True, ("n1", "n2")).to_json()})
    assert type(sys.meta_path[0]).__name__ == "_PostImportFinder"


def test_untested_keras_versions_stop_with_a_clear_error() -> None:
    for version in TESTED_KERAS_VERSIONS:
        check_version(version)
    with pytest.raises(
        Exception, match=r"Keras 3\.99\.0 is not a version hpc-tf's multi-worker Keras handling"
    ) as caught:
        check_version("3.99.0")
    assert "keras_mwms_fix: false" in str(caught.value)


# TensorFlow 2.21's errors, recorded on this machine with a 2-worker cluster and a 10 s bound:
# on the leader when worker 1 never registers, and on worker 1 when the leader never starts
TF_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tf"
LEADER_TIMEOUT = (TF_FIXTURES / "formation-timeout-leader.txt").read_text(encoding="utf-8")
WORKER_TIMEOUT = (TF_FIXTURES / "formation-timeout-worker.txt").read_text(encoding="utf-8")


def test_formation_message_names_the_missing_worker_from_tensorflows_report() -> None:
    message = formation_failure_message(
        LEADER_TIMEOUT,
        workers=["node1:20010", "node2:20010"],
        nodes=["node1", "node2"],
        own_index=0,
        timeout_s=30,
    )
    assert message == (
        "the TensorFlow cluster did not form within 30 s: worker 1 (Slurm rank 1 on host node2, "
        "address node2:20010) never joined"
    )


def test_formation_message_finds_a_missing_leader_by_probing() -> None:
    with socket.socket() as alive, socket.socket() as gone:
        alive.bind(("127.0.0.1", 0))
        alive.listen()
        gone.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        workers = [f"127.0.0.1:{gone.getsockname()[1]}", "127.0.0.1:1", f"127.0.0.1:{alive.getsockname()[1]}"]
        message = formation_failure_message(
            WORKER_TIMEOUT, workers=workers, nodes=["n1", "n2", "n3"], own_index=1, timeout_s=9
        )
    assert message == (
        f"the TensorFlow cluster did not form within 9 s: worker 0 (Slurm rank 0 on host n1, "
        f"address {workers[0]}) never joined"
    )
