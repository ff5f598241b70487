"""Parsers for Slurm's accounting views: limits, their current use, and the jobs that use them.

Each function takes a tool's stdout, as recorded in ``tests/fixtures/quota/slurm-22.05/``, for the argv
built by :mod:`hpc.scheduler.commands` (``scontrol_show_assoc_mgr``, ``sacctmgr_show_assoc``,
``sacctmgr_show_qos``, ``squeue_quota_jobs``), and returns plain typed values; what the values mean
for a user's GPU quota is :mod:`hpc.quota`'s business. What jobs cost (``sacct_usage``: allocated
``gres/gpu`` × ElapsedRaw) is read here too, for ``hpc-tf usage`` and campaign results.

``scontrol show assoc_mgr`` is the controller's own view: the limits it enforces *and* what it
counts against them right now. A TRES list there is ``name=limit(used)``, ``N`` meaning no limit::

    GrpTRES=cpu=N(5),mem=N(5000),node=N(3),gres/gpu=4(4)     4 GPUs allowed, 4 in use
    GrpTRESMins=…,gres/gpu=600(18)                           600 GPU-minutes allowed, 18 used
    MaxTRESPJ=gres/gpu=4                                     a cap per job: no use to count

Per-job caps an association inherits from its parent accounts are already filled in there (the
controller "pre-propagates" them); group limits are not: each ancestor keeps its own.
``sacctmgr`` (through slurmdbd) adds what the controller does not print: an association's QOS list
and default QOS, and a QOS's per-user/per-account limits and flags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from hpc.errors import SchedulerOutputError
from hpc.scheduler.fields import (
    JobId,
    gpu_count,
    parse_array_tasks,
    parse_duration_s,
    parse_job_id,
    parse_tres,
)
from hpc.scheduler.parse import parsable_records, squeue_records
from hpc.scheduler.states import JobState

# --- TRES with limit and use ---------------------------------------------------------------------

_LIMIT_USE = re.compile(r"(?P<limit>N|\d+)(?:\((?P<used>\d+)(?:\.\d+)?\))?")


@dataclass(frozen=True)
class TresUse:
    """One ``name=limit(used)`` entry of ``scontrol show assoc_mgr``."""

    limit: int | None  # None: no limit ("N")
    used: int | None = None  # None: the field counts no use (a per-job cap)


def parse_tres_use(text: str) -> dict[str, TresUse]:
    """``cpu=N(5),gres/gpu=4(4)`` → {"cpu": TresUse(None, 5), "gres/gpu": TresUse(4, 4)}; empty → {}."""
    result: dict[str, TresUse] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        match = _LIMIT_USE.fullmatch(value.strip()) if sep and name else None
        if match is None:
            raise SchedulerOutputError(f"'{text}' is not a Slurm TRES limit list (expected name=limit(used),…)")
        limit, used = match["limit"], match["used"]
        result[name] = TresUse(None if limit == "N" else int(limit), None if used is None else int(used))
    return result


def tres_limits(text: str) -> dict[str, int]:
    """A TRES list as sacctmgr prints limits (``gres/gpu=4,cpu=10``) → counts; empty → {}."""
    result: dict[str, int] = {}
    for name, value in parse_tres(text).items():
        if not value.isdigit():
            raise SchedulerOutputError(f"'{text}' is not a Slurm TRES limit list ({name}={value})")
        result[name] = int(value)
    return result


# --- scontrol show assoc_mgr ---------------------------------------------------------------------

_NAME_ID = re.compile(r"(?P<name>.*?)\((?P<id>\d+)\)")


def _name_and_id(text: str) -> tuple[str, int | None]:
    """``researcher(1001)`` → ("researcher", 1001); ``root`` → ("root", None); ``""`` → ("", None)."""
    match = _NAME_ID.fullmatch(text)
    return (match["name"], int(match["id"])) if match else (text, None)


@dataclass(frozen=True)
class TresLimits:
    """The TRES limits, with their use, that an association and a QOS both carry in assoc_mgr
    (``key``: the record's field each is read from)."""

    # GPUs held by running jobs (of an account's subtree)
    grp_tres: dict[str, TresUse] = field(hash=False, metadata={"key": "GrpTRES"})
    # TRES-minutes used (decayed), the budget
    grp_tres_mins: dict[str, TresUse] = field(hash=False, metadata={"key": "GrpTRESMins"})
    # TRES-minutes running jobs may still use
    grp_tres_run_mins: dict[str, TresUse] = field(hash=False, metadata={"key": "GrpTRESRunMins"})
    max_tres_per_job: dict[str, TresUse] = field(hash=False, metadata={"key": "MaxTRESPJ"})
    max_tres_per_node: dict[str, TresUse] = field(hash=False, metadata={"key": "MaxTRESPN"})
    max_tres_mins_per_job: dict[str, TresUse] = field(hash=False, metadata={"key": "MaxTRESMinsPJ"})


def _tres_limits(record: Mapping[str, str]) -> dict[str, dict[str, TresUse]]:
    """The :class:`TresLimits` fields of one assoc_mgr record, by field name."""
    return {f.name: parse_tres_use(record.get(f.metadata["key"], "")) for f in fields(TresLimits)}


@dataclass(frozen=True)
class AssocRecord(TresLimits):
    """One association as slurmctld holds it: an account (``user`` None) or a user in an account."""

    id: int
    cluster: str
    account: str
    user: str | None
    uid: int | None
    partition: str | None
    parent_account: str | None  # for account associations; a user's parent is its account
    parent_id: int | None
    is_default: bool  # the user's default association (DefAssoc=Yes)


@dataclass(frozen=True)
class QosRecord(TresLimits):
    """One QOS as slurmctld holds it, with the use it counts per account and per user (by uid)."""

    id: int | None
    name: str
    min_tres_per_job: dict[str, TresUse] = field(hash=False)
    # MaxTRESPA / MaxTRESPU with the current use; an account or user appears only once it has used
    # the QOS, so a limit nobody has met yet is not visible here (sacctmgr shows it)
    per_account: dict[str, dict[str, TresUse]] = field(hash=False)
    per_user: dict[int, dict[str, TresUse]] = field(hash=False)


@dataclass(frozen=True)
class AssocMgrState:
    associations: tuple[AssocRecord, ...]
    qos: tuple[QosRecord, ...]

    def qos_named(self, name: str) -> QosRecord | None:
        return next((q for q in self.qos if q.name == name), None)


_SECTIONS = {"Association Records": "assoc", "QOS Records": "qos", "User Records": "users"}


def parse_assoc_mgr(stdout: str) -> AssocMgrState:
    """``scontrol show assoc_mgr flags=assoc,qos [users=…] [accounts=…] [qos=…]``.

    With ``users=U`` the controller prints every *account* association (the whole account tree:
    each names its ``ParentAccount``) and U's user associations.
    """
    assocs: list[dict[str, str]] = []
    qos: list[tuple[dict[str, str], dict[str, dict[str, str]], dict[str, dict[str, str]]]] = []
    section = ""
    sub: dict[str, dict[str, str]] | None = None  # QOS "Account Limits"/"User Limits" being read
    sub_key: str | None = None
    for raw in stdout.splitlines():
        line = raw.strip()
        if not line or line == "Current Association Manager state":
            continue
        if line in _SECTIONS:
            section = _SECTIONS[line]
            continue
        if section == "assoc":
            if line.startswith("ClusterName="):
                assocs.append({})
            if not assocs:
                raise SchedulerOutputError(f"scontrol show assoc_mgr: a line outside any association: {line!r}")
            _add_pairs(assocs[-1], line)
        elif section == "qos":
            if line.startswith("QOS="):
                qos.append(({}, {}, {}))
                sub = None
            elif not qos:
                raise SchedulerOutputError(f"scontrol show assoc_mgr: a line outside any QOS: {line!r}")
            if line == "Account Limits":
                sub, sub_key = qos[-1][1], None
            elif line == "User Limits":
                sub, sub_key = qos[-1][2], None
            elif line in ("No Accounts", "No Users"):
                continue
            elif sub is not None and "=" not in line:
                sub_key = line
                sub[sub_key] = {}
            elif sub is not None and sub_key is not None:
                _add_pairs(sub[sub_key], line)
            else:
                _add_pairs(qos[-1][0], line)
    return AssocMgrState(tuple(_assoc(a) for a in assocs), tuple(_qos(*q) for q in qos))


def _add_pairs(record: dict[str, str], line: str) -> None:
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep:
            record.setdefault(key, value)


def _assoc(f: dict[str, str]) -> AssocRecord:
    user, uid = _name_and_id(f.get("UserName", ""))
    parent, parent_id = _name_and_id(f.get("ParentAccount", ""))
    try:
        assoc_id = int(f["ID"])
    except (KeyError, ValueError):
        raise SchedulerOutputError(f"scontrol show assoc_mgr: an association without an ID: {f}") from None
    return AssocRecord(
        id=assoc_id,
        cluster=f.get("ClusterName", ""),
        account=f.get("Account", ""),
        user=user or None,
        uid=uid,
        partition=f.get("Partition") or None,
        parent_account=parent or None,
        parent_id=parent_id,
        is_default=f.get("DefAssoc") == "Yes",
        **_tres_limits(f),
    )


def _qos(f: dict[str, str], accounts: dict[str, dict[str, str]], users: dict[str, dict[str, str]]) -> QosRecord:
    name, qos_id = _name_and_id(f.get("QOS", ""))
    per_user: dict[int, dict[str, TresUse]] = {}
    for heading, values in users.items():
        # Slurm 22.05 heads a user's block with the uid ("1001"), 23.02 and later with
        # "researcher(1001)"; the uid is what the use is matched by
        uid = int(heading) if heading.isdigit() else _name_and_id(heading)[1]
        if uid is not None:
            per_user[uid] = parse_tres_use(values.get("MaxTRESPU", ""))
    return QosRecord(
        id=qos_id,
        name=name,
        min_tres_per_job=parse_tres_use(f.get("MinTRESPJ", "")),
        **_tres_limits(f),
        per_account={acct: parse_tres_use(v.get("MaxTRESPA", "")) for acct, v in accounts.items()},
        per_user=per_user,
    )


# --- sacctmgr --parsable2 --noheader -------------------------------------------------------------


def parse_sacctmgr(stdout: str, fields: Sequence[str]) -> list[dict[str, str]]:
    """Rows of ``sacctmgr --noheader --parsable2 show … format=<fields>`` as {field: value}."""
    return parsable_records(stdout, fields, "sacctmgr")


@dataclass(frozen=True)
class SacctmgrAssoc:
    """An association as slurmdbd stores it, with the QOS its jobs may use (inherited if not set)."""

    cluster: str
    account: str
    user: str | None
    partition: str | None
    qos: tuple[str, ...]
    default_qos: str | None


def parse_sacctmgr_assoc(stdout: str, fields: Sequence[str]) -> list[SacctmgrAssoc]:
    """Rows of :func:`hpc.scheduler.commands.sacctmgr_show_assoc` (``fields`` as asked)."""
    return [
        SacctmgrAssoc(
            cluster=row.get("Cluster", ""),
            account=row.get("Account", ""),
            user=row.get("User") or None,
            partition=row.get("Partition") or None,
            qos=tuple(q for q in row.get("QOS", "").split(",") if q),
            default_qos=row.get("DefaultQOS") or None,
        )
        for row in parse_sacctmgr(stdout, fields)
    ]


@dataclass(frozen=True)
class SacctmgrQos:
    """A QOS's limits as slurmdbd stores them (counts; no use)."""

    name: str
    flags: tuple[str, ...]
    grp_tres: dict[str, int] = field(hash=False)
    grp_tres_mins: dict[str, int] = field(hash=False)
    grp_tres_run_mins: dict[str, int] = field(hash=False)
    max_tres_per_job: dict[str, int] = field(hash=False)
    max_tres_per_node: dict[str, int] = field(hash=False)
    max_tres_mins_per_job: dict[str, int] = field(hash=False)
    max_tres_per_user: dict[str, int] = field(hash=False)
    max_tres_per_account: dict[str, int] = field(hash=False)
    min_tres_per_job: dict[str, int] = field(hash=False)


def parse_sacctmgr_qos(stdout: str, fields: Sequence[str]) -> list[SacctmgrQos]:
    """Rows of :func:`hpc.scheduler.commands.sacctmgr_show_qos` (``fields`` as asked)."""

    def limits(row: Mapping[str, str], key: str) -> dict[str, int]:
        return tres_limits(row.get(key, ""))

    return [
        SacctmgrQos(
            name=row.get("Name", ""),
            flags=tuple(f for f in row.get("Flags", "").split(",") if f),
            grp_tres=limits(row, "GrpTRES"),
            grp_tres_mins=limits(row, "GrpTRESMins"),
            grp_tres_run_mins=limits(row, "GrpTRESRunMins"),
            max_tres_per_job=limits(row, "MaxTRES"),
            max_tres_per_node=limits(row, "MaxTRESPerNode"),
            max_tres_mins_per_job=limits(row, "MaxTRESMins"),
            max_tres_per_user=limits(row, "MaxTRESPerUser"),
            max_tres_per_account=limits(row, "MaxTRESPerAccount"),
            min_tres_per_job=limits(row, "MinTRES"),
        )
        for row in parse_sacctmgr(stdout, fields)
    ]


# --- squeue: jobs that hold or want GPUs ---------------------------------------------------------


@dataclass(frozen=True)
class QueuedJob:
    """A running or pending job as the quota view needs it: who, under which account and QOS, how
    many GPUs it holds (running) or asks for (pending)."""

    job_id: JobId
    raw_id: str
    user: str
    account: str
    qos: str
    state: JobState
    tres: dict[str, str] = field(hash=False)  # allocated, or requested while pending
    time_limit_s: int | None
    partition: str
    reason: str  # squeue's words; "None" for a running job

    @property
    def gpus(self) -> int:
        return gpu_count(self.tres)

    def gpus_of(self, tres_name: str) -> int:
        """GPUs counted under one TRES name (``gres/gpu``, or a typed ``gres/gpu:a100``)."""
        if tres_name == "gres/gpu":
            return self.gpus
        value = self.tres.get(tres_name, "0")
        return int(value) if value.isdigit() else 0

    @property
    def running(self) -> bool:
        return self.state.is_active and not self.state.is_waiting

    @property
    def tasks(self) -> int:
        """How many jobs this row stands for: the tasks of an array still pending as one record."""
        task = self.job_id.array_task
        return len(parse_array_tasks(task).ids) if task is not None and self.job_id.is_task_range else 1


def parse_quota_jobs(stdout: str, fields: Sequence[str], separator: str = "|") -> list[QueuedJob]:
    """Rows of :func:`hpc.scheduler.commands.squeue_quota_jobs` (the reason last: it is free text)."""
    jobs: list[QueuedJob] = []
    for f in squeue_records(stdout, fields, separator):
        jobs.append(
            QueuedJob(
                job_id=parse_job_id(f["JobArrayID"]),
                raw_id=f.get("JobID", ""),
                user=f.get("UserName", ""),
                account=f.get("Account", ""),
                qos=f.get("QOS", ""),
                state=JobState.parse(f["State"]),
                tres=parse_tres(f.get("tres-alloc", "")),
                time_limit_s=parse_duration_s(f.get("TimeLimit", "")),
                partition=f.get("Partition", ""),
                reason=f.get("Reason", ""),
            )
        )
    return jobs
