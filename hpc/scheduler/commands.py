"""argv lists for Slurm's tools: pure functions, no I/O. The only place that spells Slurm flags.

Every query is batched: many job ids go into one call (``--jobs=1,2,3``), never one call per job.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from hpc.errors import HpcTfError, SchedulerOutputError
from hpc.scheduler.fields import parse_job_id
from hpc.scheduler.submission import DependencyType, SubmitOptions
from hpc.text import forbidden_character, shown

# sacct: explicit fields, none of them user-controlled free text (a job name may contain "|",
# the --parsable2 separator, and sacct does not escape it).
SACCT_FIELDS: tuple[str, ...] = (
    "JobID",
    "JobIDRaw",
    "State",
    "ExitCode",
    "DerivedExitCode",
    "Elapsed",
    "Timelimit",
    "NNodes",
    "NodeList",
    "AllocTRES",
    "ReqTRES",
    "Reason",
    "Partition",
    "Account",
    "Submit",
    "Start",
    "End",
)

# squeue --Format: width 0 (no padding) and "|" after each field. The reason goes last: it is
# the only one that may hold free text ("ReqNodeNotAvail, UnavailableNodes:node1").
SQUEUE_FIELDS: tuple[str, ...] = (
    "JobArrayID",  # as displayed: 35, 12_3, 12_[4-9%2], 30+1
    "JobID",  # raw
    "State",
    "tres-alloc",  # allocated TRES, or the requested ones while pending
    "RestartCnt",
    "NumNodes",
    "NodeList",
    "TimeUsed",
    "TimeLimit",
    "Partition",
    "Account",
    "Reason",
)
SQUEUE_SEPARATOR = "|"


def checked_job_ids(job_ids: Sequence[str]) -> list[str]:
    """Ids as the tools accept them, de-duplicated in order; anything else is refused.

    Refusing here keeps user text (``12;rm -rf``, ``--all``) out of every argv.
    """
    seen: dict[str, None] = {}
    for raw in job_ids:
        text = raw.strip()
        try:
            job_id = parse_job_id(text)
        except SchedulerOutputError:
            job_id = None
        if job_id is None or job_id.step is not None or job_id.is_task_range:
            raise HpcTfError(f"{shown(raw)} is not a Slurm job id", hint="job ids look like 123, 123_4 or 123+1")
        seen.setdefault(text, None)
    return list(seen)


def _check_args(args: Sequence[str]) -> list[str]:
    for arg in args:
        bad = forbidden_character(arg)
        if bad is not None:
            raise HpcTfError(f"sbatch argument {shown(arg)} contains {bad}")
    return list(args)


# --- options for job arrays and dependencies (campaigns) ------------------------------------------


def array_option(indices: Sequence[int], throttle: int | None = None) -> str:
    """``--array=0-11%4`` / ``--array=1,3,5-7``: array indices as sbatch reads them (:func:`array_spec`)."""
    return f"--array={array_spec(indices, throttle)}"


def array_spec(indices: Sequence[int], throttle: int | None = None) -> str:
    """``0-11%4`` / ``1,3,5-7``: array indices as Slurm reads them, runs compressed.

    Indices must be below the cluster's ``MaxArraySize``; ``throttle`` caps the tasks running at once.
    """
    ordered = sorted(set(indices))
    if not ordered or ordered[0] < 0:
        raise HpcTfError(f"an array needs indices >= 0, got {list(indices)[:5]}")
    if throttle is not None and throttle < 1:
        raise HpcTfError(f"an array throttle must be at least 1, got {throttle}")
    runs: list[str] = []
    start = prev = ordered[0]
    for index in [*ordered[1:], None]:
        if index is not None and index == prev + 1:
            prev = index
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if index is not None:
            start = prev = index
    return ",".join(runs) + (f"%{throttle}" if throttle else "")


def dependency_option(dependencies: Sequence[tuple[DependencyType, Sequence[str]]]) -> str | None:
    """``--dependency=`` and :func:`dependency_spec`; None when there is nothing to wait for."""
    spec = dependency_spec(dependencies)
    return None if spec is None else f"--dependency={spec}"


def dependency_spec(dependencies: Sequence[tuple[DependencyType, Sequence[str]]]) -> str | None:
    """``aftercorr:12,afterany:13:14`` (all must hold); None when there is nothing to wait for.

    ``aftercorr``: task N of this array waits for task N of the named arrays (a missing task N
    counts as done); ``afterok``/``afterany``: the whole job or array must end (successfully / at all).
    """
    parts = [f"{kind}:{':'.join(checked_job_ids(ids))}" for kind, ids in dependencies if ids]
    return ",".join(parts) if parts else None


def submit_options(options: SubmitOptions) -> list[tuple[str, str | None]]:
    """Typed submit options as sbatch options (long name, value): ``array``, ``dependency``,
    ``kill-on-invalid-dep`` (a job whose dependency can never be met is cancelled instead of pending
    with DependencyNeverSatisfied), ``hold``. Every backend spells these from here."""
    found: list[tuple[str, str | None]] = []
    if options.array is not None:
        found.append(("array", array_spec(options.array.indices, options.array.throttle)))
    dependency = dependency_spec(options.after)
    if dependency is not None:
        found.append(("dependency", dependency))
    elif options.cancel_if_never_satisfied:
        raise HpcTfError("a dependent job needs at least one job id to wait for")
    if options.cancel_if_never_satisfied:
        found.append(("kill-on-invalid-dep", "yes"))
    if options.hold:
        found.append(("hold", None))
    return found


def submit_args(options: SubmitOptions) -> list[str]:
    """sbatch's arguments for typed submit options (:func:`submit_options`)."""
    return [f"--{name}" if value is None else f"--{name}={value}" for name, value in submit_options(options)]


def sbatch(script: Path | str, extra_args: Sequence[str] = ()) -> list[str]:
    """Submit a script; prints ``35`` (or ``36;cluster``). ``extra_args`` (:func:`submit_args`) go
    before the script so sbatch reads them as options."""
    return ["sbatch", "--parsable", *_check_args(extra_args), str(script)]


def sacct(job_ids: Sequence[str], *, steps: bool = False, fields: Sequence[str] = SACCT_FIELDS) -> list[str]:
    """One accounting query for many jobs.

    ``--duplicates`` keeps the records of earlier runs of a requeued job (their count is the
    restart count); without ``steps`` only allocations (``-X``), not ``.batch``/``.0`` steps.
    ``-j`` without ``-S`` searches from the epoch, so old jobs are found too.
    """
    argv = [
        "sacct",
        "--parsable2",
        "--noheader",
        "--duplicates",
        f"--format={','.join(fields)}",
        f"--jobs={','.join(checked_job_ids(job_ids))}",
    ]
    if not steps:
        argv.insert(1, "--allocations")
    return argv


# What a job cost: GPUs held (AllocTRES) × seconds held (ElapsedRaw; a running job's counts to now)
USAGE_FIELDS: tuple[str, ...] = ("JobID", "JobIDRaw", "State", "Account", "AllocTRES", "ElapsedRaw", "Start")


def sacct_usage(job_ids: Sequence[str] = (), *, since: str | None = None, user: str | None = None) -> list[str]:
    """One accounting query for what jobs cost: the jobs ``job_ids`` (searched from the epoch, as
    :func:`sacct`), or ``user``'s jobs that ran or waited after ``since`` (``2026-11-05T14:00:00``,
    local time; until now). ``--duplicates``: an earlier run of a requeued job held its GPUs too."""
    if bool(job_ids) == (since is not None):
        raise ValueError("sacct_usage needs job ids or a start time, not both")
    argv = ["sacct", "--allocations", "--parsable2", "--noheader", "--duplicates", f"--format={','.join(USAGE_FIELDS)}"]
    if job_ids:
        return [*argv, f"--jobs={','.join(checked_job_ids(job_ids))}"]
    if not _SINCE.fullmatch(since or ""):
        raise HpcTfError(f"{shown(since or '')} is not a time sacct reads", hint="e.g. 2026-11-05T14:00:00")
    argv.append(f"--starttime={since}")
    if user is not None:
        argv.append(f"--user={checked_names([user], 'user')[0]}")
    return argv


_SINCE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def squeue(job_ids: Sequence[str]) -> list[str]:
    """Live state, pending reason and resources of many jobs in one call (array tasks included).

    squeue shows only jobs that have not ended, even with --jobs; ids it no longer knows at all
    make it exit 1 with ``Invalid job id specified``.
    """
    fields = ",".join(f"{name}:0{SQUEUE_SEPARATOR}" for name in SQUEUE_FIELDS[:-1])
    return [
        "squeue",
        "--noheader",
        f"--Format={fields},{SQUEUE_FIELDS[-1]}:0",
        f"--jobs={','.join(checked_job_ids(job_ids))}",
    ]


def scancel(job_ids: Sequence[str]) -> list[str]:
    return ["scancel", *checked_job_ids(job_ids)]


def scontrol_show_job(job_id: str | None = None) -> list[str]:
    """One line per job (``-o``); all jobs the caller may see when ``job_id`` is None."""
    return ["scontrol", "--oneliner", "show", "job", *([] if job_id is None else checked_job_ids([job_id]))]


def scontrol_show_config() -> list[str]:
    return ["scontrol", "show", "config"]


def sdiag() -> list[str]:
    return ["sdiag"]


# --- accounting limits and their use (GPU quota) -------------------------------------------------

# Slurm names: users, accounts, QOS. Checked like job ids, so no user text reaches an argv as an option.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@+-")


def checked_names(names: Sequence[str], what: str) -> list[str]:
    """Names as the tools accept them in a ``users=a,b`` list, de-duplicated in order; else refused
    (letters, digits, ``_.@+-``, not starting with ``-``, ``.``, ``@`` or ``+``)."""
    seen: dict[str, None] = {}
    for name in names:
        if not name or not set(name) <= _NAME_CHARS or name[0] in "-.@+":
            raise HpcTfError(f"'{name}' is not a Slurm {what} name")
        seen.setdefault(name, None)
    return list(seen)


def scontrol_show_assoc_mgr(
    users: Sequence[str] = (), accounts: Sequence[str] = (), qos: Sequence[str] = ()
) -> list[str]:
    """The controller's associations and QOS with their limits and current use (slurmdbd not needed).

    With ``users`` the controller adds every account association (the account tree) to the user's own.
    """
    argv = ["scontrol", "show", "assoc_mgr", "flags=assoc,qos"]
    for key, names, what in (("users", users, "user"), ("accounts", accounts, "account"), ("qos", qos, "QOS")):
        if names:
            argv.append(f"{key}={','.join(checked_names(names, what))}")
    return argv


SACCTMGR_ASSOC_FIELDS: tuple[str, ...] = ("Cluster", "Account", "User", "Partition", "QOS", "DefaultQOS")
SACCTMGR_QOS_FIELDS: tuple[str, ...] = (
    "Name",
    "Flags",
    "GrpTRES",
    "GrpTRESMins",
    "GrpTRESRunMins",
    "MaxTRES",
    "MaxTRESPerNode",
    "MaxTRESMins",
    "MaxTRESPerUser",
    "MaxTRESPerAccount",
    "MinTRES",
)


def sacctmgr_show_assoc(
    users: Sequence[str], cluster: str | None = None, fields: Sequence[str] = SACCTMGR_ASSOC_FIELDS
) -> list[str]:
    """A user's associations as slurmdbd stores them (QOS lists inherited from parents filled in)."""
    where = [f"users={','.join(checked_names(users, 'user'))}"]
    if cluster:
        where.append(f"cluster={checked_names([cluster], 'cluster')[0]}")
    return ["sacctmgr", "--noheader", "--parsable2", "show", "assoc", "where", *where, f"format={','.join(fields)}"]


def sacctmgr_show_qos(names: Sequence[str] = (), fields: Sequence[str] = SACCTMGR_QOS_FIELDS) -> list[str]:
    """QOS limits as slurmdbd stores them (all QOS when ``names`` is empty)."""
    where = ["where", f"names={','.join(checked_names(names, 'QOS'))}"] if names else []
    return ["sacctmgr", "--noheader", "--parsable2", "show", "qos", *where, f"format={','.join(fields)}"]


# The reason goes last: it may hold free text.
QUOTA_SQUEUE_FIELDS: tuple[str, ...] = (
    "JobArrayID",
    "JobID",
    "UserName",
    "Account",
    "QOS",
    "State",
    "tres-alloc",
    "TimeLimit",
    "Partition",
    "Reason",
)


def squeue_quota_jobs(accounts: Sequence[str] = (), users: Sequence[str] = (), qos: Sequence[str] = ()) -> list[str]:
    """Running and pending jobs of some accounts / users / QOS (all three filters must hold), in
    every partition (``--all``: hidden ones too), with the TRES each holds or asks for."""
    fields = ",".join(f"{name}:0{SQUEUE_SEPARATOR}" for name in QUOTA_SQUEUE_FIELDS[:-1])
    argv = [
        "squeue",
        "--all",
        "--noheader",
        "--states=PENDING,CONFIGURING,RUNNING",
        f"--Format={fields},{QUOTA_SQUEUE_FIELDS[-1]}:0",
    ]
    for key, names, what in (("accounts", accounts, "account"), ("users", users, "user"), ("qos", qos, "QOS")):
        if names:
            argv.append(f"--{key}={','.join(checked_names(names, what))}")
    return argv
