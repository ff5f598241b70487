"""Issue 22 on the test cluster: a router that ``researcher`` runs in front of their serving-node job
refuses every control call of another ordinary user made from another node (read the state, set a
split, add a replica, and the repository/config calls it never passes on), with and without a guessed
key, while inference through it stays open; the owner sets a split with ``hpc-tf serve split``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import as_user_argv
from tests.integration.test_handoff_slurm import PYTHON, Run, hpc_tf, project, running_node

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.triton, pytest.mark.tf, pytest.mark.service]
__all__ = ["project"]  # the fixture, shared with test_handoff_slurm

HERE = Path(__file__).parent
BRIDGE = "10.77.0.1"  # this host's address on the cluster's bridge: the nodes reach the router there


def test_another_user_cannot_control_the_router_and_inference_through_it_stays_open(
    researcher_run: Run, intruder_run: Run, project: Path, slurm_cluster: SlurmCluster, scratch_dir: Path,
) -> None:
    from tests.unit._serving_models import export_mlp

    tools = scratch_dir / "tools" / "tests" / "integration"
    tools.mkdir(parents=True)
    for name in ("__init__.py", "_intruder.py", "_router_intruder.py"):
        (tools / name).write_text((HERE / name).read_text() if name != "__init__.py" else "")
    (tools.parent / "__init__.py").write_text("")
    exported = export_mlp(project.parent / "exported" / "v1", seed=1)
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    repo = project.parent / "models"

    with running_node(researcher_run, project) as node:
        done = hpc_tf(researcher_run, project, "handoff", str(exported), "--model", "mlp", "--format", "python",
                      check=False, timeout=300)
        assert done.returncode == 0, done.stderr
        site = ["--site", "sandbox", "--set", f"serving.model_repository={repo}"]
        router = subprocess.Popen(
            as_user_argv(slurm_cluster.user, ["hpc-tf", "serve", "router", "--host", BRIDGE, "--replica",
                                              f"{node['host']}:{node['http_port']}:{node['grpc_port']}", *site]),
            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert router.stdout is not None
            ready = router.stdout.readline()
            assert ready.startswith("router ready"), (ready, router.stderr.read() if router.poll() else "")
            endpoint = json.loads((repo / ".hpc-tf" / "router.json").read_text())
            assert intruder_run(["cat", str(repo / ".hpc-tf" / "router.json")], cwd=scratch_dir,
                                check=False).returncode

            owner = researcher_run(["hpc-tf", "serve", "split", "mlp", "mlp:1=100", *site], cwd=project,
                                   check=False)
            assert owner.returncode == 0 and owner.stdout.strip() == "mlp: mlp:1 100", owner.stderr
            theirs = intruder_run(["hpc-tf", "serve", "split", "mlp", "evil=1", *site], cwd=scratch_dir, check=False)
            assert theirs.returncode != 0 and len(theirs.stderr.strip().splitlines()) <= 2, theirs.stderr

            other = next(n for n in slurm_cluster.nodes if n != node["hostname"])
            partition = (slurm_cluster.gpu_partition if other in slurm_cluster.gpu_nodes
                         else slurm_cluster.cpu_partition)
            tried = intruder_run(["srun", "-p", partition, "-w", other, "-N1", "-n1", "-t", "5", "--chdir",
                                  str(tools.parents[1]), PYTHON, "-m", "tests.integration._router_intruder",
                                  endpoint["host"], str(endpoint["http_port"]), str(endpoint["grpc_port"]), "mlp"],
                                 cwd=scratch_dir, timeout=300)
            calls = json.loads(tried.stdout.splitlines()[-1])
            assert calls.pop("http ready")["ok"] and calls.pop("grpc infer")["ok"], calls  # it reached the router
            assert not any(outcome["ok"] for outcome in calls.values()), calls
            for name in ("state", "state, guessed key", "set split", "set split, guessed key", "add replica",
                         "start canary", "drain replica", "delete split", "http config"):
                assert calls[name]["detail"].startswith("403 "), (name, calls[name])
            for name in ("grpc load", "grpc unload"):
                assert "UNIMPLEMENTED" in calls[name]["detail"], (name, calls[name])
            assert "PERMISSION_DENIED" in calls["grpc config"]["detail"], calls["grpc config"]

            # the owner's split is unchanged, and no replica was added
            state = researcher_run([PYTHON, "-c", "import json, sys; from pathlib import Path; "
                                    "from hpc.serving.repository import Repository; "
                                    "from hpc.serving.router import client; "
                                    "print(json.dumps(client.state(Repository.at(Path(sys.argv[1])))))", str(repo)],
                                   cwd=project)
            info = json.loads(state.stdout)
            assert info["splits"] == {"mlp": {"variants": [{"model": "mlp", "version": 1, "weight": 100}],
                                              "sticky_header": None}}
            assert [r["name"] for r in info["replicas"]] == [f"{node['host']}:{node['http_port']}"]
        finally:
            _stop(router)
        assert not (repo / ".hpc-tf" / "router.json").exists()  # a router that stops unregisters


def test_another_user_cannot_control_the_router_job_of_the_service(
    researcher_run: Run, intruder_run: Run, project: Path, slurm_cluster: SlurmCluster, scratch_dir: Path,
) -> None:
    """The router as a Slurm job (``serve up --router``): another user, from another node, can neither set
    the split, scale, add a replica, nor load or unload models through it, with or without a guessed key;
    nor read its endpoint file or use ``hpc-tf serve split`` on it. Inference stays open."""
    from tests.unit._serving_models import export_mlp

    tools = scratch_dir / "tools" / "tests" / "integration"
    tools.mkdir(parents=True)
    for name in ("__init__.py", "_intruder.py", "_router_intruder.py"):
        (tools / name).write_text((HERE / name).read_text() if name != "__init__.py" else "")
    (tools.parent / "__init__.py").write_text("")
    exported = export_mlp(project.parent / "exported" / "v1", seed=1)
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    repo = project.parent / "models"
    up = hpc_tf(researcher_run, project, "serve", "up", "--router", "--json", "--time", "15:00", check=False,
                timeout=600)
    started = json.loads(up.stdout) if up.returncode == 0 else {}
    try:
        assert up.returncode == 0, up.stderr
        router = started["router"]
        done = hpc_tf(researcher_run, project, "handoff", str(exported), "--model", "mlp", "--format", "python",
                      check=False, timeout=300)
        assert done.returncode == 0, done.stderr
        site = ["--site", "sandbox", "--set", f"serving.model_repository={repo}"]
        owner = researcher_run(["hpc-tf", "serve", "split", "mlp", "mlp:1=100", *site], cwd=project, check=False)
        assert owner.returncode == 0 and owner.stdout.strip() == "mlp: mlp:1 100", owner.stderr
        assert intruder_run(["cat", str(repo / ".hpc-tf" / "router.json")], cwd=scratch_dir,
                            check=False).returncode
        theirs = intruder_run(["hpc-tf", "serve", "split", "mlp", "evil=1", *site], cwd=scratch_dir, check=False)
        assert theirs.returncode != 0 and len(theirs.stderr.strip().splitlines()) <= 2, theirs.stderr

        other = next(n for n in slurm_cluster.nodes if n != router["hostname"])
        partition = slurm_cluster.gpu_partition if other in slurm_cluster.gpu_nodes else slurm_cluster.cpu_partition
        tried = intruder_run(["srun", "-p", partition, "-w", other, "-N1", "-n1", "-t", "5", "--chdir",
                              str(tools.parents[1]), PYTHON, "-m", "tests.integration._router_intruder",
                              router["host"], str(router["http_port"]), str(router["grpc_port"]), "mlp"],
                             cwd=scratch_dir, timeout=300)
        calls = json.loads(tried.stdout.splitlines()[-1])
        assert calls.pop("http ready")["ok"] and calls.pop("grpc infer")["ok"], calls  # it reached the router
        assert not any(outcome["ok"] for outcome in calls.values()), calls
        for name in ("state", "state, guessed key", "set split", "set split, guessed key", "add replica", "scale",
                     "http config"):
            assert calls[name]["detail"].startswith("403 "), (name, calls[name])
        for name in ("grpc load", "grpc unload"):
            assert "UNIMPLEMENTED" in calls[name]["detail"], (name, calls[name])

        status = hpc_tf(researcher_run, project, "serve", "status", check=False)
        assert "  split mlp: mlp:1 100%" in status.stdout.splitlines(), status.stdout  # unchanged
        assert len([line for line in status.stdout.splitlines() if line.startswith("  replica ")]) == 1
    finally:
        hpc_tf(researcher_run, project, "serve", "down", check=False, timeout=180)
        for job in (started.get("job_id"), started.get("router", {}).get("job_id")):
            if job:
                subprocess.run(["scancel", job], check=False, timeout=30)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop the router started above (runuser passes SIGTERM on to it)."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
