"""Multi-worker Keras 3 training through the bootstrap, as two local processes (no Slurm).

Each worker starts exactly as the batch script starts it on a cluster — the installed
``runtime/bootstrap.py --resolved resolved.json -- python mwms_fit.py ...`` — with the
environment Slurm gave the two tasks of a CPU step (recorded on the test cluster: node
``cpu1``, 2 tasks). ``HPC_TF_NODE_ADDRESS_MAP=cpu1=127.0.0.1`` points the node name at
this machine; the two tasks get distinct ports because they are local ranks 0 and 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc.runtime import install_into
from tests.integration._local_step import FIXTURES, free_port_pair, local_task_env

pytestmark = pytest.mark.tf

SCRIPT = FIXTURES / "tf" / "mwms_fit.py"
TIMEOUT_S = 240


class LocalJob:
    """A run directory with the runtime installed, and the two tasks of one step."""

    def __init__(self, root: Path, runtime: dict[str, object]) -> None:
        self.root = root
        self.port = free_port_pair()
        install_into(root / "runtime")
        resolved = {"runtime": {"port_range": [self.port, self.port + 1], **runtime}}
        (root / "resolved.json").write_text(json.dumps(resolved), encoding="utf-8")
        self.out = root / "out"

    def start(self, rank: int) -> subprocess.Popen[str]:
        env = local_task_env(rank, self.root, TF_CPP_MIN_LOG_LEVEL="1")
        argv = [
            sys.executable,
            str(self.root / "runtime" / "bootstrap.py"),
            "--resolved",
            str(self.root / "resolved.json"),
            "--",
            sys.executable,
            str(SCRIPT),
            str(self.out),
        ]
        log = (self.root / f"task-{rank}.log").open("w")
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=self.root)

    def log(self, rank: int) -> str:
        return (self.root / f"task-{rank}.log").read_text(encoding="utf-8")

    def run(self, ranks: tuple[int, ...] = (0, 1)) -> dict[int, int]:
        processes = {rank: self.start(rank) for rank in ranks}
        try:
            return {rank: process.wait(timeout=TIMEOUT_S) for rank, process in processes.items()}
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()


def test_unmodified_fit_script_trains_identically_on_two_workers(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    job = LocalJob(tmp_path, {"coordination_timeout_s": 120})
    codes = job.run()
    assert codes == {0: 0, 1: 0}, job.log(0) + job.log(1)

    weights = [np.load(job.out / f"weights-{rank}.npz") for rank in (0, 1)]
    assert len(weights[0].files) == 4
    for name in weights[0].files:
        assert weights[0][name].tobytes() == weights[1][name].tobytes(), name  # bitwise identical
    assert (job.out / "saved_model" / "saved_model.pb").is_file()
    assert not (job.out / "saved_model-1").exists()

    # the bootstrap recorded each task's environment: one cluster, ranks in order, distinct ports
    records = [
        json.loads(line.partition("hpc-tf bootstrap: ")[2])
        for rank in (0, 1)
        for line in job.log(rank).splitlines()
        if line.startswith("hpc-tf bootstrap: {")
    ]
    configs = [json.loads(record["env"]["TF_CONFIG"]) for record in records]
    workers = [f"127.0.0.1:{job.port}", f"127.0.0.1:{job.port + 1}"]
    assert [config["cluster"]["worker"] for config in configs] == [workers, workers]
    assert [config["task"]["index"] for config in configs] == [0, 1]
    assert [record["env"]["CUDA_VISIBLE_DEVICES"] for record in records] == ["", ""]


def test_without_the_keras_fix_the_same_script_fails(tmp_path: Path) -> None:
    """keras-team/keras#20585 is real in this Keras: the fix above is what makes fit work."""
    job = LocalJob(tmp_path, {"coordination_timeout_s": 120, "keras_mwms_fix": False})
    codes = job.run()
    assert codes[0] != 0 and codes[1] != 0
    assert "PerReplica" in job.log(0) + job.log(1)


@pytest.mark.parametrize("missing", [1, 0])
def test_a_worker_that_never_starts_fails_the_other_within_the_bound(tmp_path: Path, missing: int) -> None:
    bound_s = 10
    job = LocalJob(tmp_path, {"coordination_timeout_s": bound_s})
    present = 1 - missing
    started = time.monotonic()
    codes = job.run((present,))
    elapsed = time.monotonic() - started
    assert codes[present] != 0
    # import of TensorFlow (~3-6 s) + the bound + TF's own RPC deadline, far from TF's default of an hour
    assert elapsed < bound_s + 45, elapsed
    expected = (
        f"the TensorFlow cluster did not form within {bound_s} s: worker {missing} "
        f"(Slurm rank {missing} on host cpu1, address 127.0.0.1:{job.port + missing}) never joined"
    )
    assert expected in job.log(present)
