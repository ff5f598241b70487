"""pyslurm's records → the rows sacct and squeue print → JobStatus, on fields recorded on Slurm 25.11.

The recording (tests/fixtures/slurm-25.11/pyslurm/scenario.json) is the conformance test's scenario
(tests/integration/test_scheduler_conformance_slurm.py: completed, exit 3, cancelled, running, held,
an array with its pending range, a dependant cancelled, a GPU job, an unknown id), with the statuses
the pyslurm scheduler made of those fields, which were equal to the CLI scheduler's at that moment.
Regenerate (as root, the cluster up on 25.11): ``HPC_TF_RECORD_SCHEDULER_FIXTURES=tests/fixtures/slurm-25.11
pytest -m slurm -k pyslurm tests/integration/test_scheduler_conformance_slurm.py``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from hpc.scheduler.libslurm_rows import DB_FIELDS, LIVE_FIELDS, RecordSource, sacct_row, squeue_row
from hpc.scheduler.status import query_source

SCENARIO = Path(__file__).parent.parent / "fixtures" / "slurm-25.11" / "pyslurm" / "scenario.json"


@pytest.fixture(scope="module")
def scenario() -> dict[str, Any]:
    recorded: dict[str, Any] = json.loads(SCENARIO.read_text())
    return recorded


def test_the_recording_holds_every_field_the_rows_read(scenario: dict[str, Any]) -> None:
    for fields, names in ((scenario["accounting"], DB_FIELDS), (scenario["live"], LIVE_FIELDS)):
        assert fields
        assert all(set(names) | {"allocated_gpus", "requested_gpus", "requested_nodes"} <= set(f) for f in fields)


def test_recorded_fields_give_the_statuses_the_cli_gave(scenario: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")  # the cluster's: sacct prints local times
    time.tzset()
    accounting, live = scenario["accounting"], scenario["live"]
    statuses = query_source(RecordSource(lambda _: accounting, lambda: live), scenario["ids"])
    as_json = json.loads(json.dumps({job_id: asdict(status) for job_id, status in statuses.items()}))
    assert as_json == scenario["statuses"]
    monkeypatch.undo()
    time.tzset()


def test_array_records_get_the_ids_sacct_and_squeue_show(scenario: dict[str, Any]) -> None:
    shown = {str(sacct_row(f).job_id) for f in scenario["accounting"]} | {
        str(squeue_row(f).job_id) for f in scenario["live"]}
    array = next(s for s in scenario["statuses"].values() if s["source"] == "summary")
    base = array["job_id"]
    # task 0 (pyslurm reads its id as "not set") and the pending range, throttle included
    assert {f"{base}_0", f"{base}_[1-3%1]"} <= shown


def test_a_pending_range_slurmdbd_keeps_as_a_hex_bitmap() -> None:
    fields = {name: None for name in DB_FIELDS} | {
        "id": 40, "array_id": 40, "array_tasks_waiting": "0x3F0", "array_tasks_parallel": 2, "state": "PENDING",
        "allocated_gpus": {}, "requested_gpus": {"gres/gpu": "1"}, "requested_nodes": 1}
    row = sacct_row(fields)
    assert str(row.job_id) == "40_[4-9%2]"
    assert row.gpus == 1
