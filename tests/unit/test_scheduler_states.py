"""Every Slurm job state and pending reason maps to an enum and a sentence; unknown values degrade."""

from __future__ import annotations

import logging

import pytest

from hpc.scheduler import JobState, ReasonCategory, parse_reason
from hpc.scheduler.reasons import _from_grammar
from hpc.scheduler.states import summarize

# job_state_string() of Slurm 22.05 (src/common/slurm_protocol_defs.c) and the flags of
# https://slurm.schedmd.com/job_state_codes.html added later.
SLURM_STATES = """
PENDING RUNNING SUSPENDED COMPLETED CANCELLED FAILED TIMEOUT NODE_FAIL PREEMPTED BOOT_FAIL DEADLINE
OUT_OF_MEMORY COMPLETING STAGE_OUT CONFIGURING RESIZING REQUEUED REQUEUE_FED REQUEUE_HOLD SPECIAL_EXIT
STOPPED REVOKED RESV_DEL_HOLD SIGNALING EXPEDITING LAUNCH_FAILED POWER_UP_NODE RECONFIG_FAIL UPDATE_DB
""".split()  # noqa: SIM905 - a readable copy of Slurm's list

TERMINAL = {
    "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
    "OUT_OF_MEMORY", "REVOKED",
}  # fmt: skip

# job_reason_string() of Slurm 22.05: every reason code squeue/sacct/scontrol can print.
SLURM_REASONS = """
Prolog Priority Dependency Resources PartitionNodeLimit PartitionTimeLimit PartitionDown
PartitionInactive JobHeldAdmin JobHeldUser BeginTime Licenses AssociationJobLimit
AssociationResourceLimit AssociationTimeLimit Reservation ReqNodeNotAvail FrontEndDown SchedDefer
NodeDown BadConstraints SystemFailure JobLaunchFailure NonZeroExitCode TimeLimit InactiveLimit
InvalidAccount InvalidQOS QOSUsageThreshold QOSJobLimit QOSResourceLimit QOSTimeLimit Cleaning
QOSNotAllowed AccountNotAllowed DependencyNeverSatisfied QOSGrpCpuLimit QOSGrpCPUMinutesLimit
QOSGrpCPURunMinutesLimit QOSGrpJobsLimit QOSGrpMemLimit QOSGrpNodeLimit QOSGrpSubmitJobsLimit
QOSGrpWallLimit QOSMaxCpuPerJobLimit QOSMaxCpuMinutesPerJobLimit QOSMaxNodePerJobLimit
QOSMaxWallDurationPerJobLimit QOSMaxCpuPerUserLimit QOSMaxJobsPerUserLimit QOSMaxNodePerUserLimit
QOSMaxSubmitJobPerUserLimit QOSMinCpuNotSatisfied AssocGrpCpuLimit AssocGrpCPUMinutesLimit
AssocGrpCPURunMinutesLimit AssocGrpJobsLimit AssocGrpMemLimit AssocGrpNodeLimit
AssocGrpSubmitJobsLimit AssocGrpWallLimit AssocMaxJobsLimit AssocMaxCpuPerJobLimit
AssocMaxCpuMinutesPerJobLimit AssocMaxNodePerJobLimit AssocMaxWallDurationPerJobLimit
AssocMaxSubmitJobLimit JobHoldMaxRequeue JobArrayTaskLimit BurstBufferResources BurstBufferStageIn
BurstBufferOperation PowerNotAvail PowerReserved AssocGrpUnknown AssocGrpUnknownMinutes
AssocGrpUnknownRunMinutes AssocMaxUnknownPerJob AssocMaxUnknownPerNode AssocMaxUnknownMinutesPerJob
AssocMaxCpuPerNode AssocGrpMemMinutes AssocGrpMemRunMinutes AssocMaxMemPerJob AssocMaxMemPerNode
AssocMaxMemMinutesPerJob AssocGrpNodeMinutes AssocGrpNodeRunMinutes AssocMaxNodeMinutesPerJob
AssocGrpEnergy AssocGrpEnergyMinutes AssocGrpEnergyRunMinutes AssocMaxEnergyPerJob
AssocMaxEnergyPerNode AssocMaxEnergyMinutesPerJob AssocGrpGRES AssocGrpGRESMinutes
AssocGrpGRESRunMinutes AssocMaxGRESPerJob AssocMaxGRESPerNode AssocMaxGRESMinutesPerJob
AssocGrpLicense AssocGrpLicenseMinutes AssocGrpLicenseRunMinutes AssocMaxLicensePerJob
AssocMaxLicenseMinutesPerJob AssocGrpBB AssocGrpBBMinutes AssocGrpBBRunMinutes AssocMaxBBPerJob
AssocMaxBBPerNode AssocMaxBBMinutesPerJob QOSGrpUnknown QOSGrpUnknownMinutes QOSGrpUnknownRunMinutes
QOSMaxUnknownPerJob QOSMaxUnknownPerNode QOSMaxUnknownPerUser QOSMaxUnknownMinutesPerJob
QOSMinUnknown QOSMaxCpuPerNode QOSGrpMemoryMinutes QOSGrpMemoryRunMinutes QOSMaxMemoryPerJob
QOSMaxMemoryPerNode QOSMaxMemoryPerUser QOSMaxMemoryMinutesPerJob QOSMinMemory QOSGrpNodeMinutes
QOSGrpNodeRunMinutes QOSMaxNodeMinutesPerJob QOSMinNode QOSGrpEnergy QOSGrpEnergyMinutes
QOSGrpEnergyRunMinutes QOSMaxEnergyPerJob QOSMaxEnergyPerNode QOSMaxEnergyPerUser
QOSMaxEnergyMinutesPerJob QOSMinEnergy QOSGrpGRES QOSGrpGRESMinutes QOSGrpGRESRunMinutes
QOSMaxGRESPerJob QOSMaxGRESPerNode QOSMaxGRESPerUser QOSMaxGRESMinutesPerJob QOSMinGRES
QOSGrpLicense QOSGrpLicenseMinutes QOSGrpLicenseRunMinutes QOSMaxLicensePerJob QOSMaxLicensePerUser
QOSMaxLicenseMinutesPerJob QOSMinLicense QOSGrpBB QOSGrpBBMinutes QOSGrpBBRunMinutes QOSMaxBBPerJob
QOSMaxBBPerNode QOSMaxBBPerUser QOSMinBB DeadLine MaxBBPerAccount MaxCpuPerAccount
MaxEnergyPerAccount MaxGRESPerAccount MaxNodePerAccount MaxLicensePerAccount MaxMemoryPerAccount
MaxUnknownPerAccount MaxJobsPerAccount MaxSubmitJobsPerAccount PartitionConfig AccountingPolicy
FedJobLock OutOfMemory MaxMemPerLimit AssocGrpBilling AssocGrpBillingMinutes
AssocGrpBillingRunMinutes AssocMaxBillingPerJob AssocMaxBillingPerNode AssocMaxBillingMinutesPerJob
QOSGrpBilling QOSGrpBillingMinutes QOSGrpBillingRunMinutes QOSMaxBillingPerJob QOSMaxBillingPerNode
QOSMaxBillingPerUser QOSMaxBillingMinutesPerJob MaxBillingPerAccount QOSMinBilling ReservationDeleted
""".split()  # noqa: SIM905 - a readable copy of Slurm's list


@pytest.mark.parametrize("name", SLURM_STATES)
def test_every_slurm_state_has_a_member(name: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        state = JobState.parse(name)
    assert state.value == name
    assert not caplog.records
    assert state.is_terminal == (name in TERMINAL)
    assert state.is_success == (name == "COMPLETED")
    assert state.is_active == (name not in TERMINAL)


@pytest.mark.parametrize(
    "compact", ["PD", "R", "CG", "CD", "CA", "F", "TO", "NF", "OOM", "PR", "BF", "DL", "RH", "SE"]
)
def test_squeue_compact_codes(compact: str) -> None:
    state = JobState.parse(compact)
    assert state is not JobState.UNKNOWN
    assert state.compact == compact


@pytest.mark.parametrize("text", ["CANCELLED by 1001", "cancelled", " RUNNING ", "CANCELLED+"])
def test_state_spellings(text: str) -> None:
    assert JobState.parse(text) in (JobState.CANCELLED, JobState.RUNNING)


@pytest.mark.parametrize("text", ["", "WARPING", "?", "by 1001", "RUNNING_FAST"])
def test_unknown_state_is_unknown_with_a_warning(text: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        state = JobState.parse(text)
    assert state is JobState.UNKNOWN
    assert "unknown Slurm job state" in caplog.text
    assert not state.is_terminal and not state.is_active and not state.is_success
    assert state.compact == "?"


def test_waiting_states_hold_no_resources() -> None:
    for state in (JobState.PENDING, JobState.REQUEUE_HOLD, JobState.SPECIAL_EXIT, JobState.RESV_DEL_HOLD):
        assert state.is_waiting and state.is_active
    for state in (JobState.RUNNING, JobState.COMPLETING, JobState.SUSPENDED, JobState.COMPLETED):
        assert not state.is_waiting


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["RUNNING", "PENDING", "COMPLETED"], "RUNNING"),
        (["PENDING", "COMPLETED", "FAILED"], "PENDING"),
        (["COMPLETED", "COMPLETED"], "COMPLETED"),
        (["COMPLETED", "CANCELLED", "FAILED"], "FAILED"),
        (["COMPLETED", "TIMEOUT"], "TIMEOUT"),
        (["COMPLETED", "CANCELLED"], "CANCELLED"),
        (["COMPLETED", "UNKNOWN"], "UNKNOWN"),  # not known to have completed
        (["FAILED", "UNKNOWN"], "FAILED"),
        (["COMPLETING", "COMPLETED"], "RUNNING"),
        ([], "UNKNOWN"),
    ],
)
def test_summary_of_array_tasks(states: list[str], expected: str) -> None:
    assert summarize(JobState(s) for s in states) is JobState(expected)


# --- pending reasons ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", SLURM_REASONS)
def test_every_slurm_reason_is_explained(code: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        reason = parse_reason(code)
    assert reason is not None
    assert reason.code == code
    assert "no explanation" not in caplog.text
    assert not reason.explanation.startswith("Slurm gives")
    assert reason.sentence("7")  # formats without a KeyError
    assert parse_reason(f"({code})") == reason  # squeue's %R wraps it in parentheses
    assert parse_reason(code.lower()) is not None  # Slurm compares case-insensitively


@pytest.mark.parametrize(
    ("code", "category", "stuck"),
    [
        ("Resources", ReasonCategory.RESOURCES, False),
        ("Priority", ReasonCategory.RESOURCES, False),
        ("Dependency", ReasonCategory.DEPENDENCY, False),
        ("DependencyNeverSatisfied", ReasonCategory.DEPENDENCY, True),
        ("AssocGrpGRES", ReasonCategory.QUOTA, False),
        ("AssocGrpGRESMinutes", ReasonCategory.QUOTA, True),
        ("AssocMaxGRESPerJob", ReasonCategory.QUOTA, True),
        ("QOSMaxGRESPerUser", ReasonCategory.QUOTA, False),
        ("QOSGrpGRES", ReasonCategory.QUOTA, False),
        ("AssocGrpCpuLimit", ReasonCategory.QUOTA, False),
        ("QOSMaxJobsPerUserLimit", ReasonCategory.QUOTA, False),
        ("QOSMaxWallDurationPerJobLimit", ReasonCategory.QUOTA, True),
        ("MaxGRESPerAccount", ReasonCategory.QUOTA, False),
        ("QOSMinGRES", ReasonCategory.QUOTA, True),
        ("ReqNodeNotAvail", ReasonCategory.RESOURCES, False),
        ("PartitionTimeLimit", ReasonCategory.CONFIG, True),
        ("JobArrayTaskLimit", ReasonCategory.OTHER, False),
        ("BeginTime", ReasonCategory.OTHER, False),
        ("JobHeldUser", ReasonCategory.HELD, True),
        ("JobHeldAdmin", ReasonCategory.HELD, True),
        ("launch failed requeued held", ReasonCategory.HELD, True),
    ],
)
def test_common_reasons_have_the_right_category(code: str, category: ReasonCategory, stuck: bool) -> None:
    reason = parse_reason(code)
    assert reason is not None
    assert (reason.category, reason.stuck) == (category, stuck)


def test_sentences_say_what_to_do() -> None:
    never = parse_reason("DependencyNeverSatisfied")
    assert never is not None
    assert (
        never.sentence("42")
        == "a job it depends on failed; it will never start: cancel it with hpc-tf cancel 42"
    )
    quota = parse_reason("AssocGrpGRES")
    assert quota is not None and "GPU quota" in quota.sentence() and "hpc-tf quota" in quota.sentence()
    held = parse_reason("(launch failed requeued held)")
    assert held is not None and "scontrol release 9" in held.sentence("9")
    too_big = parse_reason("AssocMaxGRESPerJob")
    assert too_big is not None and "never start" in too_big.sentence()


def test_reason_details_after_the_comma_are_kept() -> None:
    reason = parse_reason("(ReqNodeNotAvail, UnavailableNodes:node1)")
    assert reason is not None
    assert reason.code == "ReqNodeNotAvail"
    assert reason.detail == "UnavailableNodes:node1"
    assert "(UnavailableNodes:node1)" in reason.sentence()


@pytest.mark.parametrize("code", ["AssocGrpGRES", "QOSMaxGRESPerUser", "MaxGRESPerAccount"])
def test_the_limit_grammar_reads_a_whole_code(code: str) -> None:
    # a regex's `$` also matches before a final newline: "AssocGrpGRES\n" is not a code Slurm gives
    assert _from_grammar(code) is not None
    assert _from_grammar(code + "\n") is None


@pytest.mark.parametrize("text", ["None", "(None)", "", "  ", "(null)"])
def test_no_reason(text: str) -> None:
    assert parse_reason(text) is None


def test_unknown_reason_still_reads(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        reason = parse_reason("FluxCapacitorCharging, 88mph")
    assert reason is not None
    assert reason.category is ReasonCategory.OTHER
    assert reason.code == "FluxCapacitorCharging" and reason.detail == "88mph"
    assert "FluxCapacitorCharging" in reason.sentence()
    assert "no explanation" in caplog.text
