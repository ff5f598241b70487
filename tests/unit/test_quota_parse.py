"""Parsers and argv builders of the GPU-quota views, on the outputs recorded from the test cluster.

tests/fixtures/quota/slurm-<version>/ (see the 22.05 README) was written by
tests/integration/test_quota_slurm.py, tests/fixtures/slurm-<version>/scontrol/show-assoc_mgr.txt by
tests/cluster/record-fixtures; the tests on recorded scenes run on every version.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc.errors import HpcTfError, SchedulerOutputError
from hpc.scheduler import commands
from hpc.scheduler.accounting import (
    TresUse,
    parse_assoc_mgr,
    parse_quota_jobs,
    parse_sacctmgr_assoc,
    parse_sacctmgr_qos,
    parse_tres_use,
    tres_limits,
)
from hpc.scheduler.replay import load_recording
from hpc.scheduler.run import CommandResult
from hpc.scheduler.states import JobState
from tests.unit._quota_fixtures import VERSIONS, roles, scene

FIXTURES = Path(__file__).parents[1] / "fixtures"


def recorded(scenario: str, tool: str, contains: str = "", version: str = "22.05") -> CommandResult:
    """The recording of ``tool`` in ``scenario`` whose command contains ``contains``."""
    for path in sorted(scene(scenario, version).glob(f"*-{tool}.rec")):
        result = load_recording(path).result
        if contains in " ".join(result.argv):
            return result
    raise LookupError(f"no {tool} recording with {contains!r} in {scenario}")


def test_tres_limit_and_use() -> None:
    parsed = parse_tres_use("cpu=N(5),mem=N(5000),gres/gpu=4(2),gres/gpu:a100=1(0)")
    assert parsed == {
        "cpu": TresUse(None, 5),
        "mem": TresUse(None, 5000),
        "gres/gpu": TresUse(4, 2),
        "gres/gpu:a100": TresUse(1, 0),
    }
    assert parse_tres_use("gres/gpu=3") == {"gres/gpu": TresUse(3, None)}  # a per-job cap: no use
    assert parse_tres_use("") == {}
    assert tres_limits("gres/gpu=2,cpu=10") == {"gres/gpu": 2, "cpu": 10}
    for bad in ("gres/gpu", "gres/gpu=x(1)", "=4(0)"):
        with pytest.raises(SchedulerOutputError):
            parse_tres_use(bad)
    with pytest.raises(SchedulerOutputError):
        tres_limits("gres/gpu=lots")


@pytest.mark.parametrize("version", VERSIONS)
def test_assoc_mgr_gives_the_account_tree_limits_and_live_use(version: str) -> None:
    state = parse_assoc_mgr(recorded("overview", "scontrol", version=version).stdout)
    by_key = {(a.account, a.user): a for a in state.associations}
    # users=researcher: every account association (the 25.11 cluster also had account "others"),
    # plus researcher's own
    assert {key for key in by_key if key[1]} == {("lab", "researcher"), ("quota-test-a", "researcher")}
    assert {key for key in by_key if not key[1]} >= {
        ("root", None), ("lab", None), ("quota-test", None), ("quota-test-a", None),
    }  # fmt: skip
    parent = by_key["quota-test", None]
    assert (parent.parent_account, parent.cluster) == ("root", "lab")
    assert parent.grp_tres["gres/gpu"] == TresUse(4, 2)  # two GPUs held by the holders
    assert parent.grp_tres_mins["gres/gpu"].limit == 1000
    assert parent.max_tres_per_node["gres/gpu"] == TresUse(3, None)
    child = by_key["quota-test-a", None]
    assert child.parent_account == "quota-test" and child.parent_id == parent.id
    mine = by_key["quota-test-a", "researcher"]
    assert (mine.uid, mine.is_default, mine.parent_account) == (1001, False, None)
    assert mine.max_tres_per_node["gres/gpu"].limit == 3  # inherited: the controller filled it in
    assert by_key["lab", "researcher"].is_default
    assert by_key["lab", None].grp_tres["gres/gpu"].limit == 4

    qos = state.qos_named("quota-test")
    assert qos is not None and qos.grp_tres["gres/gpu"] == TresUse(None, 2)
    assert qos.per_user[1001]["gres/gpu"] == TresUse(2, 2)  # MaxTRESPerUser=2, both in use
    assert qos.per_account["quota-test-a"]["gres/gpu"] == TresUse(None, 2)
    wide = state.qos_named("quota-test-wide")
    assert wide is not None and wide.grp_tres["gres/gpu"] == TresUse(6, 0)
    assert (wide.per_user, wide.per_account) == ({}, {})  # "No Users", "No Accounts"


@pytest.mark.parametrize("version", ["22.05", "25.11"])
def test_assoc_mgr_of_the_cluster_fixtures(version: str) -> None:
    # 22.05 heads a user's QOS use with "1001", 25.11 with "researcher(1001)": the same use either way
    text = (FIXTURES / f"slurm-{version}" / "scontrol" / "show-assoc_mgr.txt").read_text()
    state = parse_assoc_mgr(text)
    lab = next(a for a in state.associations if a.account == "lab" and a.user is None)
    assert lab.grp_tres["gres/gpu"] == TresUse(4, 4)  # the whole quota in use
    assert lab.grp_tres_run_mins["gres/gpu"] == TresUse(None, 240)
    normal = state.qos_named("normal")
    assert normal is not None and normal.per_user[1001]["gres/gpu"] == TresUse(None, 4)


def test_assoc_mgr_rejects_what_it_does_not_know() -> None:
    with pytest.raises(SchedulerOutputError, match="outside any association"):
        parse_assoc_mgr("Association Records\n\n    GrpTRES=gres/gpu=4(0)\n")
    with pytest.raises(SchedulerOutputError, match="without an ID"):
        parse_assoc_mgr("Association Records\n\nClusterName=lab Account=x UserName= Partition=\n")


@pytest.mark.parametrize("version", VERSIONS)
def test_sacctmgr_association_and_qos_rows(version: str) -> None:
    rows_by_account = {
        row.account: row
        for row in parse_sacctmgr_assoc(
            recorded("overview", "sacctmgr", "show assoc", version).stdout, commands.SACCTMGR_ASSOC_FIELDS
        )
    }
    assert set(rows_by_account) == {"lab", "quota-test-a"}
    assoc = rows_by_account["quota-test-a"]
    assert (assoc.cluster, assoc.user, assoc.partition) == ("lab", "researcher", None)
    assert (assoc.qos, assoc.default_qos) == (("normal", "quota-test", "quota-test-wide"), "normal")
    assert (rows_by_account["lab"].qos, rows_by_account["lab"].default_qos) == (("normal",), None)
    qos_rows = recorded("overview", "sacctmgr", "names=normal", version).stdout
    rows = parse_sacctmgr_qos(qos_rows, commands.SACCTMGR_QOS_FIELDS)
    qos = {row.name: row for row in rows}
    assert set(qos) == {"normal", "quota-test", "quota-test-wide"}
    assert qos["quota-test"].max_tres_per_user == {"gres/gpu": 2}
    assert qos["quota-test-wide"].grp_tres == {"gres/gpu": 6}
    assert qos["normal"].flags == () and qos["normal"].max_tres_per_job == {}
    with pytest.raises(SchedulerOutputError, match="fields where"):
        parse_sacctmgr_qos("a|b\n", commands.SACCTMGR_QOS_FIELDS)


@pytest.mark.parametrize("version", VERSIONS)
def test_quota_jobs_hold_or_ask_for_gpus(version: str) -> None:
    scene = roles("overview", version)
    queue = recorded("overview", "squeue", "--accounts", version).stdout
    by_id = {str(j.job_id): j for j in parse_quota_jobs(queue, commands.QUOTA_SQUEUE_FIELDS)}
    waiting = by_id[str(scene["waiting"])]
    assert (waiting.state, waiting.gpus, waiting.qos, waiting.reason) == (
        JobState.PENDING, 1, "quota-test", "QOSMaxGRESPerUser"
    )
    assert not waiting.running and waiting.time_limit_s == 300 and waiting.tasks == 1
    holders = scene["holders"]
    assert isinstance(holders, list)
    for holder in holders:
        job = by_id[holder]
        assert job.running and job.gpus_of("gres/gpu") == 1 and job.gpus_of("gres/gpu:a100") == 0
        assert (job.user, job.account) == ("researcher", "quota-test-a")
    array = parse_quota_jobs(
        "12_[4-9%2]|12|alice|lab|normal|PENDING|cpu=1,node=1,gres/gpu=2|10:00|gpu|JobArrayTaskLimit\n",
        commands.QUOTA_SQUEUE_FIELDS,
    )[0]
    assert (array.tasks, array.gpus) == (6, 2)
    with pytest.raises(SchedulerOutputError):
        parse_quota_jobs("1|2|3\n", commands.QUOTA_SQUEUE_FIELDS)


@pytest.mark.parametrize("version", VERSIONS)
def test_argv_builders_are_what_was_recorded(version: str) -> None:
    def argv(tool: str, contains: str = "") -> list[str]:
        return list(recorded("overview", tool, contains, version).argv)

    assert argv("scontrol") == commands.scontrol_show_assoc_mgr(users=["researcher"])
    assert argv("sacctmgr", "show assoc") == commands.sacctmgr_show_assoc(["researcher"], "lab")
    assert argv("sacctmgr", "names=normal") == commands.sacctmgr_show_qos(["normal", "quota-test", "quota-test-wide"])
    assert argv("squeue", "--accounts") == commands.squeue_quota_jobs(accounts=["quota-test-a"])
    assert argv("squeue", "--qos") == commands.squeue_quota_jobs(users=["researcher"], qos=["quota-test"])
    assert commands.scontrol_show_assoc_mgr(accounts=["a", "b"], qos=["q"])[-2:] == ["accounts=a,b", "qos=q"]
    assert commands.sacctmgr_show_qos()[-1].startswith("format=Name,")


@pytest.mark.parametrize("name", ["", "--all", "a,b", "x y", "$(reboot)", "-x", "a=b", "lab;rm", "über", ".hidden"])
def test_names_that_could_become_options_are_refused(name: str) -> None:
    with pytest.raises(HpcTfError, match="is not a Slurm"):
        commands.scontrol_show_assoc_mgr(users=[name])
    with pytest.raises(HpcTfError):
        commands.squeue_quota_jobs(accounts=[name])


def test_plausible_names_pass() -> None:
    assert commands.checked_names(["lab", "quota-test_a.1", "user@ad", "lab"], "account") == [
        "lab", "quota-test_a.1", "user@ad"
    ]  # fmt: skip
