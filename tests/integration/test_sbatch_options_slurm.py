"""The option parser against the real sbatch of the test cluster: the recorded option tables are the ones
the installed sbatch and srun build, and ``sbatch --test-only`` reads abbreviated, short, ambiguous and unknown
options in ``#SBATCH`` lines exactly as :mod:`hpc.scheduler.sbatch_options` says it does."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hpc.render.directives import read_directives
from hpc.render.quoting import sbatch_words
from hpc.scheduler.sbatch_options import OptionError, parse_arguments

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.parametrize("command", ["sbatch", "srun"])
def test_the_recorded_table_is_the_one_the_installed_command_builds(slurm_cluster: SlurmCluster, command: str) -> None:
    program = shutil.which(command)
    assert program is not None
    result = subprocess.run([sys.executable, str(REPO / "tests" / "cluster" / "record_sbatch_options.py"),
                             "--check", "--command", command, program],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    version = ".".join(slurm_cluster.slurm_version.split(".")[:2])
    assert f"{command} {version}: the recorded table matches" in result.stdout


@pytest.mark.parametrize(
    ("directives", "refused_with"),
    [
        ("--partitio=cpu", None),  # finding 2: sbatch takes an abbreviation for the option
        ("--partitio gpu", None),
        ("-pcpu", None),
        ("-p gpu --job-nam=abbrev", None),
        ("--mem-per=1G", "is ambiguous"),
        ("--gpus-per=1", "is ambiguous"),
        ("--partitionx=cpu", "unrecognized option"),
        ("--hold=yes", "doesn't allow an argument"),
        ("--partition=gpu stray", "Invalid directive"),  # a word that is no option
    ],
)
def test_sbatch_reads_options_as_the_parser_does(
    researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster, directives: str, refused_with: str | None
) -> None:
    script = scratch_dir / "probe.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH {directives}\n#SBATCH --time=1\ntrue\n")
    shutil.chown(script, slurm_cluster.user)
    version = ".".join(slurm_cluster.slurm_version.split(".")[:2])
    result = researcher_run(["sbatch", "--test-only", str(script)], cwd=scratch_dir, check=False)
    if refused_with is not None:
        assert result.returncode != 0 and refused_with in result.stderr, result.stderr
        with pytest.raises(OptionError):
            parse_arguments(sbatch_words(directives), versions=[version])
        with pytest.raises(OptionError):
            read_directives(script.read_text())
        return
    assert result.returncode == 0, result.stderr
    partition = re.search(r" in partition (\S+)", result.stderr)
    assert partition is not None, result.stderr
    parsed = {o.name: o.value for o in parse_arguments(sbatch_words(directives), versions=[version])}
    assert partition.group(1) == parsed["partition"] == read_directives(script.read_text())["partition"]
