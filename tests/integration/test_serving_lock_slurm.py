"""Issue 15, finding 1, on the test cluster: a serving node that ``researcher`` started as a Slurm job
(with the inference token on) refuses every control call of another ordinary user, made over HTTP and
gRPC from another node: repository index, load with an uploaded model.py, unload, model config, and
inference without the token. The owner's hand-off, rollover and predict still work, and so does
inference with the token. One serving node for all of it (cluster time).
"""

from __future__ import annotations

import json
import pwd
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.integration.test_handoff_slurm import PYTHON, Run, hpc_tf, infer_both, project, running_node

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.triton, pytest.mark.tf]
__all__ = ["project"]  # the fixture, shared with test_handoff_slurm

INTRUDER = Path(__file__).with_name("_intruder.py")


def test_another_user_cannot_control_the_serving_node_and_the_owner_still_can(
    researcher_run: Run, intruder_run: Run, project: Path, slurm_cluster: SlurmCluster, scratch_dir: Path,
) -> None:
    from hpc.serving import secret as node_secret
    from tests.unit._serving_models import export_mlp, predict

    exported = project.parent / "exported"
    v1, v2 = export_mlp(exported / "v1", seed=1), export_mlp(exported / "v2", seed=2)
    shutil.copy(INTRUDER, scratch_dir / INTRUDER.name)  # readable by everyone, like any file on scratch
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    repo = project.parent / "models"
    owner = pwd.getpwnam(slurm_cluster.user)
    x = np.random.default_rng(7).normal(size=(8, 16)).astype("float32")

    def handoff(savedmodel: Path) -> int:
        done = hpc_tf(researcher_run, project, "handoff", str(savedmodel), "--model", "mlp", "--format", "python",
                      "--json", check=False, timeout=300)
        assert done.returncode == 0, done.stderr
        return int(json.loads(done.stdout)["version"])

    with running_node(researcher_run, project, "--inference-token") as node:
        # the secret lives only in the owner's config directory (0600), not in the job's script or the repository
        key = node_secret.key_file(repo, environ={"HOME": owner.pw_dir})
        assert key.stat().st_uid == owner.pw_uid and stat.S_IMODE(key.stat().st_mode) == 0o600
        stored = json.loads(key.read_text())
        secret = node_secret.NodeSecret(stored["control"], stored["inference"])
        assert secret.inference is not None
        assert secret.control not in (repo / ".hpc-tf" / "server" / "serve.sbatch").read_text()
        assert stat.S_IMODE((repo / ".hpc-tf" / "server.json").stat().st_mode) == 0o600
        for private in ("server.json", "server/serve.sbatch", f"server/slurm-{node['job_id']}.out"):
            assert intruder_run(["cat", str(repo / ".hpc-tf" / private)], cwd=scratch_dir, check=False).returncode
        # tritonserver's command line holds the secret: no other user's job may share the node
        job = subprocess.run(["scontrol", "-o", "show", "job", node["job_id"]], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        assert re.search(r"\bOverSubscribe=USER\b", job), job

        assert handoff(v1) == 1

        # the intruder, on another node, knows the address and ports (a port scan finds them)
        other = next(n for n in slurm_cluster.nodes if n != node["hostname"])
        partition = slurm_cluster.gpu_partition if other in slurm_cluster.gpu_nodes else slurm_cluster.cpu_partition
        canary = scratch_dir / "ran-as-owner"
        tried = intruder_run(["srun", "-p", partition, "-w", other, "-N1", "-n1", "-t", "5", PYTHON,
                              str(scratch_dir / INTRUDER.name), node["host"], str(node["http_port"]),
                              str(node["grpc_port"]), "mlp", str(canary)], cwd=scratch_dir, timeout=300)
        calls = json.loads(tried.stdout.splitlines()[-1])
        assert calls.pop("http ready")["ok"] and calls.pop("grpc ready")["ok"], calls  # it did reach the node
        assert set(calls) == {f"{p} {c}" for p in ("http", "grpc") for c in ("index", "load with upload", "unload",
                                                                             "config", "infer")} | {
            "http index, guessed key"}
        refused = {name: outcome for name, outcome in calls.items()
                   if not outcome["ok"] and "restricted" in outcome["detail"]}
        assert refused == calls, {name: o for name, o in calls.items() if name not in refused}
        assert not canary.exists()

        # the owner's model is still loaded and answers (with the token); nothing of the intruder's is
        status = json.loads(hpc_tf(researcher_run, project, "serve", "status", "--json").stdout)
        assert {(m["name"], m["version"], m["state"]) for m in status["models"]} == {("mlp", "1", "READY")}
        assert all(np.array_equal(out, predict(v1, x)) for out in infer_both(node, "mlp", "1", {"features": x},
                                                                             "output_0", secret))

        # rollover and predict through hpc-tf, which sends the owner's key and token
        assert handoff(v2) == 2
        answer = json.loads(hpc_tf(researcher_run, project, "serve", "predict", "mlp", "--json").stdout)
        assert answer["version"] == "2" and answer["max_abs_diff"] == 0.0
        assert all(np.array_equal(out, predict(v2, x)) for out in infer_both(node, "mlp", "", {"features": x},
                                                                             "output_0", secret))
