"""The README's first command, ``examples/quickstart/run``, as a new user runs it: on the embedded
default (no Slurm), 2 local workers train, the chief exports, the hand-off job publishes and loads the
model into a local Triton node, a prediction Triton served equals the trained model's, and the
quickstart's 12-task sweep runs to a results table naming the best. (On CI the venv the suite runs in
is reused, so the install step only updates it.) What README.md shows of the run is what it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._readme import assert_shows, readme_argv

pytestmark = [pytest.mark.tf, pytest.mark.triton]

REPO = Path(__file__).resolve().parents[2]


def test_the_first_command_ends_with_a_prediction_served_by_triton(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_TF_", "SLURM_"))}
    env.update(HPC_TF_VENV=sys.prefix, HPC_TF_QUICKSTART_DIR=str(tmp_path / "quickstart"), HOME=str(tmp_path))
    # one stream, in the order a terminal shows it (the README shows it so)
    result = subprocess.run([str(REPO / readme_argv("examples/quickstart/run")[0])], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=900, stdin=subprocess.DEVNULL)
    out = result.stdout
    assert result.returncode == 0, out[-6000:]

    assert "job 1 ended: COMPLETED" in out and "job 2 ended: COMPLETED" in out  # training, then hand-off
    assert re.search(r"^ 1 +quickstart-\S+ +COMPLETED .* local1,local2 +4 ", out, re.MULTILINE), out
    assert "verify: max abs diff 0 (<= tolerance 0)" in out
    served = re.search(r"served by Triton +output_0 = \[(\S+)\]", out)
    trained = re.search(r"trained model +output_0 = \[(\S+)\]", out)
    assert served and trained and served.group(1) == trained.group(1), out[-3000:]
    assert "parity: identical" in out
    assert "serving node stopped" in out  # nothing left running
    assert (tmp_path / "quickstart" / "models" / "quickstart" / "1" / "model.py").is_file()
    # the sweep: 12 trainings of train.py on this machine, every one completed, the best named
    sweep = out[out.index("[5/5]"):]
    assert len(re.findall(r"^ +\d+ +[123] +\d+ +COMPLETED ", sweep, re.MULTILINE)) == 12, sweep
    assert re.search(r"^best: task \d+ \(epochs=3 batch_size=\d+\): loss ", sweep, re.MULTILINE), sweep
    # what README.md shows of this run, line by line (paths, run names, elapsed times and ports masked)
    assert_shows(README_OUTPUT, out)


README_OUTPUT = ("[3/5] train on 2 local workers, export, hand off to Triton: hpc-tf launch job.yaml --wait   "
                 "(in /tmp/hpc-tf-quickstart.Xq3m)")  # the first line of the output block
