"""slurmdbd's answers remembered between launches (hpc.quota.stored), on the recorded overview scene.

A launch asks the controller every time and slurmdbd only when it has no answer from the last few
minutes; whatever the remembered answers would block is decided again with fresh ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc.quota import StoredAnswers, VerdictKind, preflight, quota_report
from hpc.quota.stored import MAX_AGE_S
from hpc.scheduler import commands
from tests.unit._quota_fixtures import USER, MakeJob, cli, make_job, replay, tools

__all__ = ["make_job"]  # the fixture, used by name

ASSOC_ARGV = commands.sacctmgr_show_assoc([USER], "lab")


def test_a_second_launch_asks_only_the_controller(make_job: MakeJob, tmp_path: Path) -> None:
    store = tmp_path / "cache" / "slurmdbd-researcher.json"
    first = preflight(make_job(1), cli(replay("overview")), user=USER, stored=StoredAnswers(store))
    assert tools(first) == ["scontrol", "sacctmgr", "sacctmgr"]
    assert store.stat().st_mode & 0o777 == 0o600  # other users must not read someone's QOS settings

    again = preflight(make_job(1), cli(replay("overview")), user=USER, stored=StoredAnswers(store))
    assert tools(again) == ["scontrol"]
    assert (again.kind, again.qos, again.message) == (VerdictKind.OK, "normal", first.message)


def test_answers_someone_else_could_have_written_are_not_used(make_job: MakeJob, tmp_path: Path) -> None:
    store = tmp_path / "cache" / "slurmdbd-researcher.json"
    preflight(make_job(1), cli(replay("overview")), user=USER, stored=StoredAnswers(store))
    store.chmod(0o666)  # anyone could have planted answers that decide the next verdict
    again = preflight(make_job(1), cli(replay("overview")), user=USER, stored=StoredAnswers(store))
    assert tools(again) == ["scontrol", "sacctmgr", "sacctmgr"]  # asked slurmdbd afresh


def test_the_quota_overview_leaves_its_answers_for_the_next_launch(make_job: MakeJob, tmp_path: Path) -> None:
    store = tmp_path / "slurmdbd-researcher.json"
    quota_report("quota-test-a", cli(replay("overview")), user=USER, stored=StoredAnswers(store, reuse=False))
    verdict = preflight(make_job(1), cli(replay("overview")), user=USER, stored=StoredAnswers(store))
    assert tools(verdict) == ["scontrol"] and verdict.kind is VerdictKind.OK


def test_a_verdict_remembered_answers_would_block_is_made_again_with_fresh_ones(
    make_job: MakeJob, tmp_path: Path
) -> None:
    # remembered: the association's default QOS was quota-test (full: the job would have to wait);
    # since then an administrator made it normal again
    store = StoredAnswers(tmp_path / "s.json")
    store.cluster = "lab"  # the recorded controller's
    store.put(ASSOC_ARGV, "lab|quota-test-a|researcher||normal,quota-test,quota-test-wide|quota-test\n")

    verdict = preflight(make_job(1), cli(replay("overview")), user=USER, stored=StoredAnswers(store.path))
    assert (verdict.kind, verdict.qos) == (VerdictKind.OK, "normal")
    assert tools(verdict) == ["scontrol", "sacctmgr", "scontrol", "sacctmgr", "sacctmgr"]
    assert verdict.calls[3] == tuple(ASSOC_ARGV)  # asked again, not taken from the store
    assert "|normal\n" in (store.get(ASSOC_ARGV) or "")  # and the fresh answer kept


def test_a_blocking_verdict_costs_fresh_answers_even_when_they_agree(make_job: MakeJob, tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    preflight(make_job(1, qos="quota-test"), cli(replay("overview")), user=USER, stored=StoredAnswers(path))
    verdict = preflight(make_job(1, qos="quota-test"), cli(replay("overview")), user=USER, stored=StoredAnswers(path))
    assert (verdict.kind, verdict.reason) == (VerdictKind.MUST_WAIT, "QOSMaxGRESPerUser")
    assert tools(verdict) == ["scontrol", "scontrol", "sacctmgr", "squeue"]


@pytest.mark.parametrize(("age_s", "reused"), [(10.0, True), (MAX_AGE_S + 1, False), (-60.0, False)])
def test_answers_are_reused_only_while_young(tmp_path: Path, age_s: float, reused: bool) -> None:
    now = [1_000_000.0]
    StoredAnswers(tmp_path / "s.json", clock=lambda: now[0]).put(ASSOC_ARGV, "answer\n")
    now[0] += age_s  # negative: the clock went back, so the age is unknown
    store = StoredAnswers(tmp_path / "s.json", clock=lambda: now[0])
    assert store.get(ASSOC_ARGV) == ("answer\n" if reused else None)
    assert store.used is reused


def test_an_unusable_cache_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = StoredAnswers(blocker / "slurmdbd-researcher.json")
    store.put(ASSOC_ARGV, "answer\n")  # cannot be written: nothing raised
    assert store.get(ASSOC_ARGV) is None

    garbage = tmp_path / "garbage.json"
    for text in ("{not json", "[1, 2]", '{"k": {"at": "yesterday", "stdout": 3}}'):
        garbage.write_text(text)
        assert StoredAnswers(garbage).get(ASSOC_ARGV) is None


def test_the_cache_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert StoredAnswers.for_user("ada").path == tmp_path / "hpc-tf" / "slurmdbd-ada.json"


def test_answers_are_kept_per_cluster(tmp_path: Path) -> None:
    # one home directory, two clusters with their own slurmdbd: QOS of the same name may differ
    lab = StoredAnswers(tmp_path / "s.json")
    lab.cluster = "lab"
    lab.put(ASSOC_ARGV, "lab's answer\n")
    other = StoredAnswers(tmp_path / "s.json")
    other.cluster = "physics"
    assert other.get(ASSOC_ARGV) is None
    assert lab.get(ASSOC_ARGV) == "lab's answer\n"
