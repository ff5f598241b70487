"""Typed submit options: each launcher spells them its own way, or refuses what it cannot do."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc.errors import HpcTfError
from hpc.local.scheduler import LocalScheduler
from hpc.scheduler import ArrayRequest, SubmitOptions
from hpc.scheduler.commands import submit_args


def test_slurm_spells_an_array_its_dependencies_and_a_hold_as_sbatch_reads_them() -> None:
    options = SubmitOptions(array=ArrayRequest((0, 1, 2, 5), throttle=2),
                            after=(("aftercorr", ("12",)), ("afterany", ("13", "14_2"))), hold=True)
    assert submit_args(options) == ["--array=0-2,5%2", "--dependency=aftercorr:12,afterany:13:14_2", "--hold"]
    assert submit_args(SubmitOptions()) == []
    with pytest.raises(HpcTfError, match="needs at least one job id"):
        submit_args(SubmitOptions.after_success([]))


@pytest.mark.parametrize(("options", "refusal"), [
    (SubmitOptions(hold=True), "the local launcher takes no held jobs"),
    (SubmitOptions(after=(("afterany", ("3",)),)), "cannot wait for local job '3': there is no such job"),
])
def test_the_local_launcher_refuses_what_it_cannot_do(tmp_path: Path, options: SubmitOptions, refusal: str) -> None:
    # arrays and every dependency kind it runs (tests/integration/test_local_arrays.py); a hold it has no release for
    with pytest.raises(HpcTfError, match=refusal):
        LocalScheduler(tmp_path).submit(tmp_path / "job.sbatch", options)
