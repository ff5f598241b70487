"""Parsers for what Slurm's tools print, one function per output format.

Each takes the tool's stdout (as recorded in ``tests/fixtures/slurm-22.05/``) and returns plain
typed values. Field lists are the ones :mod:`hpc.scheduler.commands` asks for, so a row with the
wrong number of fields means the output is not what we asked for: that raises
:class:`SchedulerOutputError`, while an unknown *value* (a state, a reason) degrades gracefully.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from hpc.errors import SchedulerOutputError
from hpc.scheduler.choice import release
from hpc.scheduler.commands import SQUEUE_FIELDS
from hpc.scheduler.fields import (
    ExitCode,
    JobId,
    gpu_count,
    parse_duration_s,
    parse_exit_code,
    parse_job_id,
    parse_state,
    parse_tres,
)
from hpc.scheduler.reasons import PendingReason, parse_reason
from hpc.scheduler.states import JobState

# --- sbatch --parsable ---------------------------------------------------------------------------

_PARSABLE = re.compile(r"(?P<id>\d+)(?:;(?P<cluster>\S+))?")


@dataclass(frozen=True)
class Submitted:
    job_id: str
    cluster: str | None = None  # sbatch -M/--clusters prints "36;lab"


def parse_sbatch_parsable(stdout: str) -> Submitted:
    """``35`` or ``36;lab`` (the last non-empty line; sbatch prints warnings to stderr)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    match = _PARSABLE.fullmatch(lines[-1]) if lines else None
    if match is None:
        raise SchedulerOutputError(f"sbatch --parsable printed {stdout.strip()!r}, not a job id")
    return Submitted(match["id"], match["cluster"])


# --- sacct --parsable2 ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SacctRow:
    """One row of ``sacct --parsable2`` with :data:`hpc.scheduler.commands.SACCT_FIELDS`."""

    job_id: JobId  # as displayed: 12_3, 12_[4-9%2], 30+1, 35.batch
    raw_id: str  # JobIDRaw: the number the controller uses (an array task has its own)
    state: JobState
    state_text: str  # verbatim, e.g. "CANCELLED by 1000"
    cancelled_by: str | None
    exit_code: ExitCode | None
    derived_exit_code: ExitCode | None
    elapsed_s: int | None
    time_limit_s: int | None  # None: UNLIMITED or Partition_Limit
    nodes: int
    node_list: str  # "" when none is assigned yet
    alloc_tres: dict[str, str] = field(hash=False)
    req_tres: dict[str, str] = field(hash=False)
    reason: PendingReason | None
    partition: str
    account: str
    submit: str
    start: str
    end: str

    @property
    def gpus(self) -> int:
        """GPUs held (AllocTRES), or asked for while none are held yet (ReqTRES)."""
        return gpu_count(self.alloc_tres) or gpu_count(self.req_tres)


def parse_sacct(stdout: str, fields: Sequence[str]) -> list[SacctRow]:
    """Rows of ``sacct --parsable2 --noheader --format=<fields>``.

    ``fields`` is the list asked for, in order; it must hold JobID and State. Fields of
    :data:`hpc.scheduler.commands.SACCT_FIELDS` that were not asked for read as empty; others
    (JobName, WorkDir …) are ignored.
    """
    if "JobID" not in fields or "State" not in fields:
        raise ValueError("a sacct field list needs JobID and State")
    return [_sacct_row(record) for record in parsable_records(stdout, fields, "sacct")]


def _sacct_row(f: dict[str, str]) -> SacctRow:
    def get(name: str) -> str:
        return f.get(name, "")

    state_word, cancelled_by = parse_state(f["State"])
    node_list = get("NodeList")
    return SacctRow(
        job_id=parse_job_id(f["JobID"]),
        raw_id=get("JobIDRaw"),
        state=JobState.parse(state_word),
        state_text=f["State"],
        cancelled_by=cancelled_by,
        exit_code=parse_exit_code(get("ExitCode")),
        derived_exit_code=parse_exit_code(get("DerivedExitCode")),
        elapsed_s=parse_duration_s(get("Elapsed")),
        time_limit_s=parse_duration_s(get("Timelimit")),
        nodes=int(get("NNodes")) if get("NNodes").isdigit() else 0,
        node_list="" if node_list.lower() in ("none assigned", "(null)") else node_list,
        alloc_tres=parse_tres(get("AllocTRES")),
        req_tres=parse_tres(get("ReqTRES")),
        reason=parse_reason(get("Reason")),
        partition=get("Partition"),
        account=get("Account"),
        submit=get("Submit"),
        start=get("Start"),
        end=get("End"),
    )


# Before 25.11, sacct printed a job's exit status S of 128 or more as S - 128 (25.11's changelog: "Don't
# subtract 128 from sacct returned exit codes for the codes above 128"); scontrol, and sacct's
# DerivedExitCode (the highest end of the job's steps), always printed it whole. Recorded on 22.05: a
# batch script that passes on its step's 137 (a task killed by SIGKILL) reads ExitCode 9:0, DerivedExitCode 0:9.
WHOLE_EXIT_CODES_SINCE = (25, 11)


def restore_exit_codes(rows: Sequence[SacctRow], slurm_version: Callable[[], str | None]) -> list[SacctRow]:
    """``rows`` with the exit codes an older sacct printed 128 short put right.

    Only a failed job whose ``S:0`` is exactly 128 short of how its steps ended is a candidate (hpc-tf's
    batch script exits with its step's status); ``slurm_version`` (``22.05.8``; None when not known) is
    asked once, and only when there is one, whether this sacct subtracts at all.
    """
    whole = [_whole_exit_code(row) for row in rows]
    if all(code is None for code in whole) or not _subtracts_128(slurm_version()):
        return list(rows)
    return [row if code is None else replace(row, exit_code=code) for row, code in zip(rows, whole, strict=True)]


def _whole_exit_code(row: SacctRow) -> ExitCode | None:
    shown, derived = row.exit_code, row.derived_exit_code
    if row.state is not JobState.FAILED or shown is None or derived is None or shown.signal or shown.status >= 128:
        return None
    return ExitCode(shown.status + 128) if derived.shell_code == shown.status + 128 else None


def _subtracts_128(version: str | None) -> bool:
    numbers = release(version or "")
    return numbers is not None and tuple(int(n) for n in numbers.split(".")) < WHOLE_EXIT_CODES_SINCE


# --- squeue --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqueueRow:
    """One row of ``squeue --Format`` with :data:`hpc.scheduler.commands.SQUEUE_FIELDS`."""

    job_id: JobId  # 35, 12_3, 12_[4-9%2], 30+1
    raw_id: str
    state: JobState
    tres: dict[str, str] = field(hash=False)  # allocated, or requested while pending
    restarts: int
    nodes: int
    node_list: str
    elapsed_s: int | None
    time_limit_s: int | None
    partition: str
    account: str
    reason: PendingReason | None
    reason_text: str

    @property
    def gpus(self) -> int:
        return gpu_count(self.tres)


def parse_squeue(stdout: str, fields: Sequence[str] = SQUEUE_FIELDS, separator: str = "|") -> list[SqueueRow]:
    """Rows of ``squeue --noheader --Format=<fields>`` (each field ``:0|``, the reason last).

    ``fields`` must hold JobArrayID and State; the other fields of SQUEUE_FIELDS read as empty
    when not asked for, unknown ones are ignored.
    """
    if "JobArrayID" not in fields or "State" not in fields:
        raise ValueError("a squeue field list needs JobArrayID and State")
    return [_squeue_row(record) for record in squeue_records(stdout, fields, separator)]


def squeue_records(stdout: str, fields: Sequence[str], separator: str = "|") -> list[dict[str, str]]:
    """``squeue --noheader --Format`` lines; the last field (the reason, free text) may hold the separator."""
    return parsable_records(stdout, fields, "squeue", separator, free_text_last=True)


def parsable_records(
    stdout: str, fields: Sequence[str], tool: str, separator: str = "|", *, free_text_last: bool = False
) -> list[dict[str, str]]:
    """Separator-joined lines of a Slurm tool (``--parsable2``, ``--Format``) as field -> text.

    A line with another number of fields than asked for is an error, not a guess.
    """
    records: list[dict[str, str]] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        values = line.split(separator, len(fields) - 1 if free_text_last else -1)
        if len(values) != len(fields):
            raise SchedulerOutputError(
                f"{tool} printed {len(values)} fields where {len(fields)} were asked for: {line!r}"
            )
        records.append(dict(zip(fields, (v.strip() for v in values), strict=True)))
    return records


def _squeue_row(f: dict[str, str]) -> SqueueRow:
    def get(name: str) -> str:
        return f.get(name, "")

    return SqueueRow(
        job_id=parse_job_id(f["JobArrayID"]),
        raw_id=get("JobID"),
        state=JobState.parse(f["State"]),
        tres=parse_tres(get("tres-alloc")),
        restarts=int(get("RestartCnt")) if get("RestartCnt").isdigit() else 0,
        nodes=int(get("NumNodes")) if get("NumNodes").isdigit() else 0,
        node_list=get("NodeList"),
        elapsed_s=parse_duration_s(get("TimeUsed")),
        time_limit_s=parse_duration_s(get("TimeLimit")),
        partition=get("Partition"),
        account=get("Account"),
        reason=parse_reason(get("Reason")),
        reason_text=get("Reason"),
    )


# --- scontrol ------------------------------------------------------------------------------------


def parse_scontrol_config(stdout: str) -> dict[str, str]:
    """``scontrol show config`` → {"MaxArraySize": "1001", …}.

    Lines are ``Key                     = value``; section titles, the header and the trailing
    ``Slurmctld(primary) at … is UP`` line are skipped. The first occurrence of a key wins
    (the main section comes before the plugin sections).
    """
    config: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or " " in key:
            continue
        config.setdefault(key, value.strip())
    return config


def config_number(value: str) -> int | None:
    """The number in a config value: ``1001`` → 1001, ``300 sec`` → 300, ``(null)``/``N/A`` → None."""
    head = value.strip().split(" ", 1)[0]
    return int(head) if head.isdigit() else None


# Where a new "Key=" starts in a one-line record: a space, then a key made of the characters
# scontrol uses in key names (``AllocNode:Sid``, ``Socks/Node``, ``ReqB:S:C:T``, ``MinCPUsNode``).
_RECORD_KEY = re.compile(r"(?:^|\s)(?=[A-Za-z][\w:/]*=)")


def parse_scontrol_record(line: str) -> dict[str, str]:
    """One ``scontrol show … -o`` line → {"JobId": "35", "JobState": "PENDING", …}.

    Values may contain spaces (``Reason=ReqNodeNotAvail, UnavailableNodes:node1``, a path in
    ``Command=``); a value that itself contains `` word=`` cannot be told apart from the next
    key, which is why hpc-tf reads user-controlled fields (job names) from sacct, not here.
    """
    record: dict[str, str] = {}
    for token in _RECORD_KEY.split(line.strip()):
        key, sep, value = token.strip().partition("=")
        if sep and key:
            record.setdefault(key, value.strip())
    return record


def parse_scontrol_show_job(stdout: str) -> list[dict[str, str]]:
    """``scontrol show job -o [ID]`` → one dict per job (an array prints one line per record)."""
    return [parse_scontrol_record(line) for line in stdout.splitlines() if "=" in line]


# --- sdiag ---------------------------------------------------------------------------------------

_RPC_LINE = re.compile(r"^\s*(?P<name>\S+)\s*\(\s*(?P<num>\d+)\s*\)\s*count:(?P<count>\d+)")


@dataclass(frozen=True)
class Diagnostics:
    """What ``sdiag`` says about the controller's load: the RPC counters callers compare."""

    values: dict[str, str]  # "Server thread count" → "1", "Jobs submitted" → "12", …
    rpc_by_type: dict[str, int]  # REQUEST_JOB_INFO → count
    rpc_by_user: dict[str, int]  # researcher → count

    @property
    def total_rpcs(self) -> int:
        return sum(self.rpc_by_type.values())


def parse_sdiag(stdout: str) -> Diagnostics:
    values: dict[str, str] = {}
    by_type: dict[str, int] = {}
    by_user: dict[str, int] = {}
    section: dict[str, int] | None = None
    for line in stdout.splitlines():
        stripped = line.strip()
        if stripped.startswith(("*", "sdiag output at", "Data since")):
            continue
        if stripped.startswith("Remote Procedure Call statistics by message type"):
            section = by_type
        elif stripped.startswith("Remote Procedure Call statistics by user"):
            section = by_user
        elif stripped.endswith(":") or stripped.startswith("Pending RPC"):
            section = None
        rpc = _RPC_LINE.match(line)
        if rpc is not None and section is not None:
            section[rpc["name"]] = int(rpc["count"])
            continue
        key, sep, value = stripped.partition(":")
        if sep and key and section is None:
            values.setdefault(key.strip(), value.strip())
    return Diagnostics(values, by_type, by_user)
