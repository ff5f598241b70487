"""The benchmarks (bench/, BENCHMARKS.md) still run: the cheap cluster ones in --quick mode, as
``bench/run`` is documented. Only that they complete and write well-formed results is checked —
benchmarks are not timed tests. training, handoff and serving are left out (tens of seconds each in
quick mode: TensorFlow starts, a Triton node); run them with ``sudo bench/run --quick``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
SMOKE = ("launch", "bootstrap", "campaign")


def test_quick_benchmarks_complete_with_well_formed_results(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    # the CPU partition for the bootstrap job: GPUs may all be held by other tests' jobs
    argv = [str(REPO / "bench" / "run"), "--quick", "--out", str(out), "--bootstrap-gpus", "0", *SMOKE]
    env = {**os.environ, "HPC_TF_VENV": sys.prefix}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"

    data = json.loads(out.read_text())
    assert data["machine"]["cpus"] >= 1
    assert [r["benchmark"] for r in data["results"]] == list(SMOKE)
    for result in data["results"]:
        assert result["quick"] is True and "error" not in result["facts"], result
        assert result["figures"], result["benchmark"]
        for figure in result["figures"]:
            values = figure["subject_values"] + (figure["baseline_values"] or [])
            assert figure["subject"]["n"] >= 1 and all(math.isfinite(v) and v >= 0 for v in values), figure
            if figure["baseline_values"] is not None:
                assert figure["ratio"] is None or figure["ratio"] > 0
        assert result["benchmark"] in done.stdout  # the human-readable table
    facts = {r["benchmark"]: r["facts"] for r in data["results"]}
    assert facts["launch"]["tensorflow_imported"] is False
    assert facts["campaign"]["sbatch_calls"].startswith("campaign 1 vs")
