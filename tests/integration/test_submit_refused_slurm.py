"""A submission the real sbatch refuses leaves nothing behind, whichever way in (launch, a campaign,
submit_function): here sbatch refuses an account that does not exist. The quota preflight would
refuse it first, so launch and submit_function are forced past it, as a user would with --force."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = pytest.mark.slurm

Run = Callable[..., subprocess.CompletedProcess[str]]
NO_ACCOUNT = "hpc-tf-no-such-account"
SLURM_SAYS = "invalid account"

SUBMIT_FUNCTION = """\
import json, os, sys
from hpc.backends import QuotaPolicy
from hpc.errors import HpcTfError
from hpc.functions import submit_function

try:
    submit_function(os.getpid, spec=json.loads(sys.argv[1]), site="sandbox", overrides=sys.argv[2:],
                    quota=QuotaPolicy(force=True))
    print(json.dumps({"submitted": True}))
except Exception as err:
    print(json.dumps({"error": str(err)}))
"""


@pytest.fixture
def project(scratch_dir: Path, slurm_cluster: SlurmCluster) -> Path:
    (scratch_dir / "job.yaml").write_text("name: refused\ncommand: [sleep, '1']\nresources: {nodes: 1, time: '1:00'}\n")
    (scratch_dir / "sweep.yaml").write_text("name: refused-sweep\njob: {command: [sleep, '1'], resources: "
                                            "{nodes: 1, partition: cpu, time: '1:00'}}\nparameters: {list: [{x: 1}]}\n")
    (scratch_dir / "submit_function.py").write_text(SUBMIT_FUNCTION)
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True, timeout=30)
    return scratch_dir


def settings(project: Path) -> list[str]:
    return ["--set", f"runs_dir={project / 'runs'}", "--set", f"account={NO_ACCOUNT}"]


def left_behind(project: Path) -> list[str]:
    runs = project / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def test_a_launch_sbatch_refuses_leaves_no_run_directory(researcher_run: Run, project: Path) -> None:
    refused = researcher_run(["hpc-tf", "launch", "job.yaml", "--site", "sandbox", *settings(project), "--force"],
                             cwd=project, check=False, timeout=120)
    assert refused.returncode != 0 and refused.stdout == ""
    assert SLURM_SAYS in refused.stderr.lower(), refused.stderr
    assert left_behind(project) == []


def test_a_campaign_sbatch_refuses_leaves_no_campaign_directory(researcher_run: Run, project: Path) -> None:
    refused = researcher_run(["hpc-tf", "campaign", "run", "sweep.yaml", "--site", "sandbox", *settings(project)],
                             cwd=project, check=False, timeout=120)
    assert refused.returncode != 0
    assert SLURM_SAYS in refused.stderr.lower(), refused.stderr
    assert left_behind(project) == []


def test_a_function_sbatch_refuses_leaves_no_run_directory(researcher_run: Run, project: Path) -> None:
    spec = {"name": "refused-fn", "resources": {"nodes": 1, "partition": "cpu", "time": "1:00"}}
    overrides = [f"runs_dir={project / 'runs'}", f"account={NO_ACCOUNT}"]
    done = researcher_run([sys.executable, "submit_function.py", json.dumps(spec), *overrides], cwd=project,
                          timeout=120)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert SLURM_SAYS in report.get("error", "").lower(), report
    assert left_behind(project) == []
