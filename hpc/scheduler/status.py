"""The state of many jobs from two scheduler calls at most: sacct for all, squeue for the live ones.

sacct first, because squeue forgets a job as soon as it ends; then one squeue call for the jobs
sacct still shows as active or does not know, because only the controller knows the *current*
state and pending reason. slurmdbd lags behind the controller (recorded: a new job missing, an
array still shown as one pending record after its first task started, "None" as every pending
reason, a finished het job as one bare record), so for a job both know squeue's record wins.

Keys of the result are the ids asked for. An array job id (``12``) maps to a summary of its tasks
(:func:`hpc.scheduler.states.summarize`) and every task gets its own entry (``12_3``, and
``12_[4-9%2]`` for tasks still pending as one record); a heterogeneous job id (``30``) likewise
summarizes its components (``30+0``, ``30+1``). Ids nobody knows map to UNKNOWN.

When one daemon does not answer, the other's view is the answer, marked (``JobStatus.unanswered``):
with slurmctld down, sacct's records (they lag; no pending reasons); with slurmdbd down, squeue's
(finished jobs are forgotten). Both calls together end within ``STATUS_BUDGET_S`` however the
daemons fail: with slurmctld down one squeue alone spends ~18 s in Slurm's own connect retries.
Only when neither answers is there an error.
"""

from __future__ import annotations

import pwd
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from hpc.errors import SchedulerOutputError, SchedulerUnavailable
from hpc.scheduler import commands
from hpc.scheduler.choice import slurm_version
from hpc.scheduler.fields import ExitCode, JobId, parse_array_tasks, parse_job_id
from hpc.scheduler.parse import SacctRow, SqueueRow, parse_sacct, parse_squeue, restore_exit_codes
from hpc.scheduler.reasons import PendingReason
from hpc.scheduler.run import CommandResult, SlurmCli
from hpc.scheduler.states import JobState, summarize

T = TypeVar("T")

# squeue's answer when none of the ids is in the controller's memory any more
SQUEUE_NO_SUCH_JOB = "Invalid job id specified"

# The whole answer within STATUS_BUDGET_S; sacct may use ACCOUNTING_BUDGET_S of it, so that squeue
# still has time when slurmdbd hangs. A healthy daemon answers either in well under a second.
STATUS_BUDGET_S = 10.0
ACCOUNTING_BUDGET_S = 6.0

CONTROLLER = "slurmctld"
ACCOUNTING = "slurmdbd"
# the part that did not answer → what it means for the statuses shown, one line each
_DEGRADED = {
    CONTROLLER: "the Slurm controller (slurmctld) is not answering: job states come from accounting "
    "(slurmdbd) and may lag, without pending reasons; launch and cancel need the controller",
    ACCOUNTING: "Slurm's accounting daemon (slurmdbd) is not answering: job states come from the "
    "controller (squeue), which forgets jobs once they ended; launch and cancel still work",
}
_MARK = {
    CONTROLLER: "controller not answering: state from accounting",
    ACCOUNTING: "accounting not answering: state from the controller",
}


@dataclass(frozen=True)
class JobStatus:
    """What ``hpc-tf status`` shows for one job, array task, array or het job."""

    job_id: str
    state: JobState
    reason: PendingReason | None = None  # only while the job waits
    exit_code: ExitCode | None = None
    elapsed_s: int | None = None
    time_limit_s: int | None = None  # None: no limit of its own (UNLIMITED, or the partition's)
    nodes: int = 0
    node_list: str = ""
    gpus: int = 0  # held (AllocTRES), or requested while pending (ReqTRES)
    restarts: int = 0  # earlier runs of a requeued job
    partition: str = ""
    account: str = ""
    state_text: str = ""  # Slurm's own words, e.g. "CANCELLED by 1000"
    cancelled_by: str = ""  # the uid that cancelled it, when Slurm says
    ended: str = ""  # when it ended, as the scheduler prints it (2026-11-24T21:48:54); "" while it runs
    note: str = ""  # the launcher's own words on how it ended (the local launcher's "cancelled before it started")
    array_job_id: str | None = None
    array_task: str | None = None  # "3", or "[4-9%2]" for tasks pending as one record
    tasks: tuple[str, ...] = ()  # for an array/het summary: the keys of its members in the same result
    raw_id: str = ""  # the controller's number (an array task has its own: SLURM_JOB_ID inside it)
    source: str = "sacct"  # sacct | squeue | summary | none
    unanswered: str = ""  # CONTROLLER / ACCOUNTING: that daemon did not answer; the state is the other's

    @property
    def reason_sentence(self) -> str | None:
        return None if self.reason is None else self.reason.sentence(self.job_id)

    @property
    def ending(self) -> str:
        """How a finished job ended, in words: ``exit code 3``, ``cancelled by alice at 2026-11-24 21:48:54``,
        ``reached its time limit``; "" for one that has not ended or succeeded."""
        if not self.state.is_terminal or self.state.is_success:
            return ""
        words = self.state.ending
        if self.state is JobState.FAILED and self.exit_code is not None:
            words = f"exit code {self.exit_code.shell_code}"
        if self.cancelled_by:
            words += f" by {user_name(self.cancelled_by)}"
        if self.ended and self.state is not JobState.FAILED:
            words += f" at {self.ended.replace('T', ' ')}"
        return "; ".join(filter(None, (words, self.note)))

    @property
    def unanswered_note(self) -> str:
        """``controller not answering: state from accounting``, or "" when both answered."""
        return _MARK.get(self.unanswered, "")


def user_name(uid: str) -> str:
    """``alice`` for the uid Slurm names (``CANCELLED by 1001``), or ``uid 1001`` when this host does not know it."""
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError):
        return f"uid {uid}"


def degraded_warnings(statuses: Iterable[JobStatus]) -> list[str]:
    """One line per daemon that did not answer: which one, where the states came from instead, and
    what still works."""
    parts = dict.fromkeys(s.unanswered for s in statuses if s.unanswered)
    return [_DEGRADED[part] for part in parts]


class StatusSource(Protocol):
    """Where a backend reads job records: accounting (all jobs, finished ones too) and the controller
    (the live ones). Each raises :class:`SchedulerUnavailable` when its daemon does not answer."""

    def accounting(self, job_ids: Sequence[str]) -> list[SacctRow]:
        """sacct's rows (allocations, earlier runs of a requeued job first) of these jobs and their tasks."""
        ...

    def live(self, job_ids: Sequence[str]) -> list[SqueueRow]:
        """squeue's rows of these jobs and their tasks that have not ended; ids it does not know are left out."""
        ...


class _CliSource:
    """sacct and squeue, both within STATUS_BUDGET_S from the first call."""

    def __init__(self, cli: SlurmCli) -> None:
        self.cli = cli
        self.started = cli.clock()

    def accounting(self, job_ids: Sequence[str]) -> list[SacctRow]:
        rows = _run_parsed(self.cli, commands.sacct(job_ids), _parse_sacct, deadline=self.started + ACCOUNTING_BUDGET_S)
        return restore_exit_codes(rows, lambda: slurm_version(self.cli))

    def live(self, job_ids: Sequence[str]) -> list[SqueueRow]:
        return _run_parsed(self.cli, commands.squeue(job_ids), parse_squeue, tolerate=(SQUEUE_NO_SUCH_JOB,),
                           deadline=self.started + STATUS_BUDGET_S)


def query(cli: SlurmCli, job_ids: Sequence[str]) -> dict[str, JobStatus]:
    """Status of every id in ``job_ids`` (plus array tasks / het components) in at most two calls."""
    return query_source(_CliSource(cli), job_ids)


def query_source(source: StatusSource, job_ids: Sequence[str]) -> dict[str, JobStatus]:
    """Status of every id in ``job_ids`` from one accounting read and at most one controller read."""
    ids = commands.checked_job_ids(job_ids)
    if not ids:
        return {}
    unanswered = ""
    try:
        members = statuses_from_sacct(source.accounting(ids))
    except SchedulerUnavailable:
        members, unanswered = {}, ACCOUNTING
    index = _Index(members)
    live = [i for i in ids if _needs_live_view(index.matches(i)[0])]
    if live:
        try:
            rows = source.live(live)
        except SchedulerUnavailable:
            if unanswered:
                raise
            unanswered = CONTROLLER
        else:
            index = _Index(_merge_live(members, rows, [parse_job_id(i) for i in live]))
    result: dict[str, JobStatus] = {}
    for job_id in ids:
        found, group = index.matches(job_id)
        # only the jobs whose state the missing daemon would have given are marked
        mark = unanswered if job_id in live else ""
        result[job_id] = replace(_combine(job_id, found, group), unanswered=mark)
        if group:
            for member in found:
                result.setdefault(member.job_id, replace(member, unanswered=mark))
    return result


def _parse_sacct(stdout: str) -> list[SacctRow]:
    return parse_sacct(stdout, commands.SACCT_FIELDS)


def _needs_live_view(found: Sequence[JobStatus]) -> bool:
    return not found or any(s.state.is_active for s in found)


def _run_parsed(
    cli: SlurmCli,
    argv: list[str],
    parse: Callable[[str], T],
    tolerate: Sequence[str] = (),
    deadline: float | None = None,
) -> T:
    result: CommandResult = cli.run(argv, tolerate=tolerate, deadline=deadline)
    try:
        return parse(result.stdout)
    except SchedulerOutputError as err:
        raise SchedulerOutputError(f"{err.message} (command: {' '.join(argv)})") from err


def statuses_from_sacct(rows: Iterable[SacctRow]) -> dict[str, JobStatus]:
    """One status per displayed id (``35``, ``12_3``, ``12_[4-9%2]``, ``30+1``).

    With ``--duplicates`` a requeued job has one row per run, the current one last; the earlier
    ones count as restarts (Slurm 22.05's sacct has no restart-count field).
    """
    runs: dict[str, list[SacctRow]] = {}
    for row in rows:
        runs.setdefault(row.job_id.job, []).append(row)
    return {key: _status_of(rs[-1], restarts=len(rs) - 1) for key, rs in runs.items()}


def _status_of(row: SacctRow, restarts: int) -> JobStatus:
    return JobStatus(
        job_id=row.job_id.job,
        state=row.state,
        reason=row.reason if row.state.is_waiting else None,
        exit_code=None if row.state.is_active else row.exit_code,
        elapsed_s=row.elapsed_s,
        time_limit_s=row.time_limit_s,
        nodes=row.nodes,
        node_list=row.node_list,
        gpus=row.gpus,
        restarts=restarts,
        partition=row.partition,
        account=row.account,
        state_text=row.state_text,
        cancelled_by=row.cancelled_by or "",
        ended=row.end if row.state.is_terminal and row.end[:1].isdigit() else "",  # not "Unknown"
        array_job_id=row.job_id.base if row.job_id.array_task is not None else None,
        array_task=row.job_id.array_task,
        raw_id=row.raw_id,
        source="sacct",
    )


def _merge_live(
    members: dict[str, JobStatus], rows: Sequence[SqueueRow], asked: Sequence[JobId]
) -> dict[str, JobStatus]:
    merged = dict(members)
    live_keys = {row.job_id.job for row in rows}
    # Tasks still pending as one record ("12_[4-9%2]") shrink as tasks start: for arrays squeue
    # was asked about, its ranges replace sacct's older ones.
    for key, status in members.items():
        if _is_range(status) and key not in live_keys and any(a.base == status.array_job_id for a in asked):
            del merged[key]
    for row in rows:
        key = row.job_id.job
        known = merged.get(key)
        merged[key] = JobStatus(
            job_id=key,
            state=row.state,
            reason=row.reason if row.state.is_waiting else None,
            elapsed_s=row.elapsed_s,
            time_limit_s=row.time_limit_s,
            nodes=row.nodes,
            node_list=row.node_list,
            gpus=row.gpus,
            restarts=max(row.restarts, known.restarts if known else 0),
            partition=row.partition,
            account=row.account,
            state_text=row.state.value,
            array_job_id=row.job_id.base if row.job_id.array_task is not None else None,
            array_task=row.job_id.array_task,
            raw_id=row.raw_id,
            source="squeue",
        )
    return merged


class _Index:
    """Member statuses by displayed id, indexed for the lookups a requested id needs."""

    def __init__(self, members: dict[str, JobStatus]) -> None:
        self.members = members
        self.groups: dict[str, list[JobStatus]] = {}  # array/het job id → its tasks/components
        self.tasks_by_raw: dict[str, JobStatus] = {}
        for status in members.values():
            job_id = parse_job_id(status.job_id)
            if job_id.array_task is not None or job_id.het_offset is not None:
                self.groups.setdefault(job_id.base, []).append(status)
            if _is_single_task(status):
                self.tasks_by_raw.setdefault(status.raw_id, status)

    def matches(self, job_id: str) -> tuple[list[JobStatus], bool]:
        """The statuses a requested id stands for, and whether they are a group to summarize.

        Itself; its array tasks or het components (a group); the pending range holding a task
        (12_5 in 12_[4-9%2]); or the array task whose raw id it is (SLURM_JOB_ID inside a task).
        """
        if job_id in self.members:
            return [self.members[job_id]], False
        wanted = parse_job_id(job_id)
        if wanted.array_task is None and wanted.het_offset is None:
            if job_id in self.groups:
                return sorted(self.groups[job_id], key=_member_order), True
            if job_id in self.tasks_by_raw:
                return [self.tasks_by_raw[job_id]], False
        if wanted.array_task is not None:
            task_no = int(wanted.array_task)
            for status in self.groups.get(wanted.base, ()):
                if task_no in _range_ids(status):
                    return [replace(status, job_id=job_id, array_task=wanted.array_task)], False
        return [], False


def _member_order(status: JobStatus) -> tuple[int, int]:
    """Array tasks by number with pending ranges after them; het components by offset."""
    job_id = parse_job_id(status.job_id)
    if job_id.het_offset is not None:
        return (0, job_id.het_offset)
    ids = parse_array_tasks(job_id.array_task).ids if job_id.array_task else ()
    return (1 if job_id.is_task_range else 0, ids[0] if ids else -1)


def _is_single_task(status: JobStatus) -> bool:
    return status.array_task is not None and not status.array_task.startswith("[")


def _is_range(status: JobStatus) -> bool:
    return status.array_task is not None and status.array_task.startswith("[")


def _range_ids(status: JobStatus) -> tuple[int, ...]:
    return parse_array_tasks(status.array_task).ids if status.array_task and _is_range(status) else ()


def _combine(job_id: str, found: Sequence[JobStatus], group: bool) -> JobStatus:
    if not found:
        return JobStatus(job_id=job_id, state=JobState.UNKNOWN, source="none")
    return _summary(job_id, found) if group else found[0]


def _summary(job_id: str, members: Sequence[JobStatus]) -> JobStatus:
    """An array or het job as one line: the summarized state, the reason of a waiting member,
    the exit code of the member that decided a final state, what running members hold (or, when
    none runs, what one waiting member asks for)."""
    state = summarize(m.state for m in members)
    deciding = next((m for m in members if m.state is state), members[0])
    running = [m for m in members if m.state.is_active and not m.state.is_waiting]
    waiting = [m for m in members if m.state.is_waiting]
    first = members[0]
    return JobStatus(
        job_id=job_id,
        state=state,
        reason=waiting[0].reason if state is JobState.PENDING and waiting else None,
        exit_code=deciding.exit_code if state.is_terminal else None,
        cancelled_by=deciding.cancelled_by if state.is_terminal else "",
        ended=deciding.ended if state.is_terminal else "",
        elapsed_s=max((m.elapsed_s or 0 for m in members), default=None),
        time_limit_s=first.time_limit_s,
        nodes=sum(m.nodes for m in running),
        gpus=sum(m.gpus for m in running) if running else sum(m.gpus for m in waiting[:1]),
        restarts=sum(m.restarts for m in members),
        partition=first.partition,
        account=first.account,
        state_text=state.value,
        array_job_id=job_id if first.array_task is not None else None,
        tasks=tuple(m.job_id for m in members),
        source="summary",
    )
