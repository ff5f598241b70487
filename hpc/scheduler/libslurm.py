"""The pyslurm backend of :class:`hpc.scheduler.Scheduler`: Slurm's C library instead of its tools.

The only module that imports pyslurm, and only when a site asks for it (``scheduler: pyslurm`` or
``auto``, :mod:`hpc.scheduler.choice`). What pyslurm hands back is turned into the rows the CLI
backend parses (:class:`~hpc.scheduler.parse.SacctRow` from ``pyslurm.db.Jobs``,
:class:`~hpc.scheduler.parse.SqueueRow` from ``pyslurm.Jobs``), so both backends share one status
merge (:func:`hpc.scheduler.status.query_source`) and give the same :class:`JobStatus` values.

A script is submitted with the options sbatch would read from it: its ``#SBATCH`` lines through
hpc-tf's one reader of them (:func:`hpc.render.directives.read_directives`), then the typed options
(:func:`hpc.scheduler.commands.submit_options`, which win, as sbatch's command line does). Each option
maps to a ``JobSubmitDescription`` attribute in :data:`_SUBMIT_ATTRIBUTES`; one that has none is
refused by name, never dropped.

pyslurm wraps one Slurm release (pyslurm 25.11.x needs libslurm 25.11): :func:`load` checks that.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from hpc.errors import HpcTfError, SchedulerCommandFailed, SchedulerUnavailable
from hpc.scheduler import commands
from hpc.scheduler.fields import ExitCode, JobId, parse_array_tasks, parse_job_id
from hpc.scheduler.parse import SacctRow, SqueueRow
from hpc.scheduler.reasons import parse_reason
from hpc.scheduler.states import JobState
from hpc.scheduler.status import JobStatus, query_source
from hpc.scheduler.submission import NO_OPTIONS, SubmitOptions

NAME = "pyslurm"


def load() -> ModuleType:
    """pyslurm, imported once (its import initialises libslurm, which reads slurm.conf).

    ImportError (as :func:`hpc.scheduler.choice.pyslurm_problem` words it) when it is missing or
    cannot load its libslurm.
    """
    flags = sys.getdlopenflags()
    try:
        import pyslurm  # type: ignore[import-not-found,import-untyped,unused-ignore]
    finally:
        sys.setdlopenflags(flags)  # pyslurm widens them for every later import; keep that to itself
    return pyslurm  # type: ignore[no-any-return,unused-ignore]


def pyslurm_version(module: ModuleType) -> str:
    return str(getattr(module, "__version__", "?"))


class PyslurmScheduler:
    """Talks to slurmctld and slurmdbd through pyslurm. Construction imports pyslurm (see :func:`load`)."""

    name = NAME

    def __init__(self, module: ModuleType | None = None) -> None:
        self.pyslurm = module if module is not None else load()

    # --- submit ------------------------------------------------------------------------------------

    def submit(self, script_path: Path | str, options: SubmitOptions = NO_OPTIONS) -> str:
        """The script's ``#SBATCH`` options and ``options`` as one JobSubmitDescription → the job id."""
        from hpc.render.directives import script_directives  # the one reader of #SBATCH lines

        script = Path(script_path).absolute()
        directives = script_directives(script)
        attributes = submit_attributes({**directives, **dict(commands.submit_options(options))}, script)
        desc = self.pyslurm.JobSubmitDescription(
            script=str(script), name=script.name, working_directory=os.getcwd(), environment=_environment()
        )
        for name, value in attributes.items():
            setattr(desc, name, value)
        job_id = self._call(desc.submit, "JobSubmitDescription.submit", request_sent=True)
        return str(int(job_id))

    # --- status ------------------------------------------------------------------------------------

    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        return query_source(RecordSource(self.accounting_records, self.live_records), job_ids)

    def accounting_records(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        """slurmdbd's records of the jobs as fields (an array task's id asks for its whole array, as
        sacct finds a task inside a pending range)."""
        wanted = sorted({int(parse_job_id(i).base) for i in job_ids})
        db = self.pyslurm.db
        found = self._call(lambda: db.Jobs.load(db.JobFilter(ids=wanted)), "db.Jobs.load", accounting=True)
        return [fields_of(job, DB_FIELDS) for job in sorted(found.values(), key=lambda j: int(j.id))]

    def live_records(self) -> list[dict[str, Any]]:
        """Every job the controller holds, as fields (one load, as squeue does)."""
        found = self._call(lambda: self.pyslurm.Jobs.load(), "Jobs.load")
        return [fields_of(job, LIVE_FIELDS) for job in sorted(found.values(), key=lambda j: int(j.id))]

    # --- cancel, config ----------------------------------------------------------------------------

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel jobs (or array tasks); jobs that already ended are not an error (pyslurm ignores them).

        pyslurm cancels by the controller's number: an array task by its own, which a task still
        waiting inside its array's pending range does not have yet (refused, naming the way out).
        """
        ids = commands.checked_job_ids(job_ids)
        parts = [i for i in ids if parse_job_id(i).job != parse_job_id(i).base]  # 12_3, 30+1
        live = RecordSource(self.accounting_records, self.live_records).live(parts) if parts else []
        numbers = {row.job_id.job: row.raw_id for row in live}
        for job_id in ids:
            if job_id in parts and job_id not in numbers:
                if _in_pending_range(parse_job_id(job_id), live):
                    raise HpcTfError(f"the pyslurm scheduler cannot cancel array task {job_id} while it waits "
                                     "inside its array's pending range",
                                     hint=f"cancel the whole array (hpc-tf cancel {parse_job_id(job_id).base}), "
                                          "or set scheduler: cli")
                continue  # ended already: nothing to cancel
            job = self.pyslurm.Job(int(numbers.get(job_id, job_id)))
            self._call(job.cancel, "Job.cancel")

    def show_config(self) -> dict[str, str]:
        """The controller's configuration, keys as ``scontrol show config`` names them (``MaxArraySize`` …)."""
        config = self._call(self.pyslurm.slurmctld.Config.load, "slurmctld.Config.load")
        raw: Mapping[str, Any] = config.to_dict()
        return {_config_key(key): _config_text(value) for key, value in raw.items()}

    # --- errors ------------------------------------------------------------------------------------

    def _call(self, call: Callable[[], Any], what: str, *, accounting: bool = False,
              request_sent: bool = False) -> Any:
        """Run one pyslurm call; its RPCError (and a value it refuses before sending) becomes the
        project's error, naming the call."""
        try:
            return call()
        except self.pyslurm.RPCError as err:
            raise _rpc_error(what, err, accounting=accounting, request_sent=request_sent) from None
        except ValueError as err:  # pyslurm's own checks: an empty script, a value it cannot convert
            raise HpcTfError(f"pyslurm.{what} refused it: {err}") from None


class RecordSource:
    """The two reads :func:`~hpc.scheduler.status.query_source` needs, from pyslurm's records as fields
    (:func:`fields_of`): ``accounting(ids)`` (db.Jobs) and ``live()`` (every job the controller holds)."""

    def __init__(self, accounting: Callable[[Sequence[str]], list[dict[str, Any]]],
                 live: Callable[[], list[dict[str, Any]]]) -> None:
        self.accounting_records = accounting
        self.live_records = live

    def accounting(self, job_ids: Sequence[str]) -> list[SacctRow]:
        return [sacct_row(f) for f in self.accounting_records(job_ids)]

    def live(self, job_ids: Sequence[str]) -> list[SqueueRow]:
        """squeue's rows of these jobs (their tasks and components too) that have not ended."""
        wanted = {parse_job_id(i) for i in job_ids}
        bases = {w.base for w in wanted}
        rows = [squeue_row(f) for f in self.live_records()]
        return [row for row in rows if row.state.is_active
                and (row.job_id.base in bases or row.raw_id in bases or row.job_id in wanted)]


# Words of a libslurm error that mean a daemon did not answer (slurm_strerror of the
# SLURM_COMMUNICATIONS_* and SLURMCTLD/SLURMDBD connection errors).
_UNREACHABLE = ("Unable to contact slurm controller", "Communication connection failure",
                "Socket timed out", "Zero Bytes were transmitted", "Failed to get Jobs from slurmdbd",
                "Connection refused", "Unable to connect to database")


def _rpc_error(what: str, err: Exception, *, accounting: bool, request_sent: bool) -> SchedulerCommandFailed:
    text = str(err).strip() or type(err).__name__
    daemon = "Slurm's accounting daemon (slurmdbd)" if accounting else "the Slurm controller (slurmctld)"
    if any(word in text for word in _UNREACHABLE):
        summary = f"{daemon} is not answering ({text})"
        if request_sent:
            summary += "; the job may have been submitted anyway: check hpc-tf status --all before submitting again"
        return SchedulerUnavailable(argv=[f"pyslurm.{what}"], returncode=1, stderr=text, transient=True,
                                    summary=summary)
    return SchedulerCommandFailed(argv=[f"pyslurm.{what}"], returncode=1, stderr=text,
                                  summary=f"pyslurm.{what} failed: {text}")


def _in_pending_range(task: JobId, live: Sequence[SqueueRow]) -> bool:
    return any(row.job_id.base == task.base and row.job_id.is_task_range and task.array_task is not None
               and int(task.array_task) in parse_array_tasks(row.job_id.array_task or "").ids for row in live)


def _environment() -> dict[str, str]:
    """What sbatch exports by default (--export=ALL): this process's environment, plus what sbatch
    adds to it: the umask (applied to the job by slurmstepd), the submit directory and host, the
    nice value."""
    mask = os.umask(0)
    os.umask(mask)
    return {**os.environ, "SLURM_UMASK": f"{mask:04o}", "SLURM_SUBMIT_DIR": os.getcwd(),
            "SLURM_SUBMIT_HOST": socket.gethostname(), "SLURM_PRIO_PROCESS": str(os.getpriority(os.PRIO_PROCESS, 0))}


def _keep(value: str | None) -> str | None:
    return value


def _flag(value: str | None) -> bool:
    return True


def _number(value: str | None) -> int | None:
    return None if value is None else int(value)


def _hold(value: str | None) -> int:
    return 0  # a priority of 0 is Slurm's hold


def _time(value: str | None) -> str | int | None:
    """pyslurm passes a bare number of minutes through as it is: it must be an int."""
    return int(value) if value is not None and value.isdigit() else value


def _memory(value: str | None) -> str | None:
    """pyslurm reads ``0`` (all of each node's memory) as "not set": refused rather than dropped."""
    if value is not None and re.fullmatch(r"0+[KMGT]?", value.strip(), re.IGNORECASE):
        raise HpcTfError("the pyslurm scheduler cannot ask for all of a node's memory (--mem=0)",
                         hint="ask for an amount (resources.mem), or set scheduler: cli")
    return value


def _yes(value: str | None) -> bool:
    return value is None or value.lower() in ("yes", "y", "true", "1")


# sbatch's long option → (JobSubmitDescription attribute, conversion of the option's value).
_SUBMIT_ATTRIBUTES: dict[str, tuple[str, Callable[[str | None], Any]]] = {
    "account": ("account", _keep),
    "array": ("array", _keep),
    "chdir": ("working_directory", _keep),
    "comment": ("comment", _keep),
    "constraint": ("constraints", _keep),
    "cpus-per-gpu": ("cpus_per_gpu", _keep),
    "cpus-per-task": ("cpus_per_task", _number),
    "dependency": ("dependencies", _keep),
    "error": ("standard_error", _keep),
    "exclude": ("excluded_nodes", _keep),
    "exclusive": ("resource_sharing", lambda value: "no" if value is None else value),
    "gpus": ("gpus", _keep),
    "gpus-per-node": ("gres_per_node", lambda value: None if value is None else f"gpu:{value}"),
    "gpus-per-task": ("gpus_per_task", _keep),
    "gres": ("gres_per_node", _keep),
    "hold": ("priority", _hold),
    "job-name": ("name", _keep),
    "kill-on-invalid-dep": ("kill_on_invalid_dependency", _yes),
    "mail-type": ("mail_types", _keep),
    "mail-user": ("mail_user", _keep),
    "mem": ("memory_per_node", _memory),
    "mem-per-cpu": ("memory_per_cpu", _memory),
    "mem-per-gpu": ("memory_per_gpu", _memory),
    "nodelist": ("required_nodes", _keep),
    "nodes": ("nodes", _keep),
    "ntasks": ("ntasks", _number),
    "ntasks-per-node": ("ntasks_per_node", _number),
    "open-mode": ("log_files_open_mode", _keep),
    "output": ("standard_output", _keep),
    "partition": ("partitions", _keep),
    "qos": ("qos", _keep),
    "requeue": ("is_requeueable", _flag),
    "no-requeue": ("is_requeueable", lambda value: False),
    "reservation": ("reservations", _keep),
    "signal": ("signal", _keep),
    "time": ("time_limit", _time),
    "wckey": ("wckey", _keep),
}


def submit_attributes(options: Mapping[str, str | None], script: Path | str) -> dict[str, Any]:
    """sbatch options (long name → value, as :func:`~hpc.render.directives.read_directives` gives them)
    → JobSubmitDescription attributes. An option without one is refused, naming it.

    Like sbatch, ``--ntasks-per-node`` without ``--ntasks`` asks for that many tasks on each node
    (pyslurm would otherwise ask for one task).
    """
    attributes: dict[str, Any] = {}
    for option, value in options.items():
        attribute = _SUBMIT_ATTRIBUTES.get(option)
        if attribute is None:
            raise HpcTfError(f"the pyslurm scheduler cannot pass --{option} (in {script}) to Slurm",
                             hint="set scheduler: cli in the site configuration (sbatch takes every option)")
        name, convert = attribute
        attributes[name] = convert(value)
    if "ntasks" not in attributes and attributes.get("ntasks_per_node"):
        min_nodes = int(str(attributes.get("nodes") or 1).split("-", 1)[0])
        attributes["ntasks"] = min_nodes * attributes["ntasks_per_node"]
    return attributes


# --- pyslurm's records as the rows the CLI parsers give -------------------------------------------
#
# A record is first read into plain fields (:func:`fields_of`: the attributes below, GPU counts as a
# TRES dict), then turned into a row by pure functions, which the unit tests feed with fields recorded
# on the cluster (tests/fixtures/scheduler/slurm-25.11/pyslurm/).

_ID_FIELDS = ("id", "array_id", "array_task_id", "array_tasks_waiting", "array_tasks_parallel",
              "heterogeneous_id", "heterogeneous_offset", "state", "state_reason", "time_limit", "num_nodes",
              "partition", "account")
DB_FIELDS = (*_ID_FIELDS, "cancelled_by", "exit_code", "exit_code_signal", "derived_exit_code",
             "derived_exit_code_signal", "elapsed_time", "nodelist", "submit_time", "start_time", "end_time")
LIVE_FIELDS = (*_ID_FIELDS, "requeue_count", "allocated_nodes", "run_time")


def fields_of(job: Any, names: Sequence[str]) -> dict[str, Any]:
    """The attributes ``names`` of a pyslurm record, plus its GPUs (allocated and requested) as TRES
    dicts and the nodes it asked for."""
    found = {name: getattr(job, name) for name in names}
    found["allocated_gpus"] = _gpu_tres(job.allocated_tres)
    found["requested_gpus"] = _gpu_tres(job.requested_tres)
    node = getattr(job.requested_tres, "node", None) if job.requested_tres else None
    found["requested_nodes"] = int(node.count) if node is not None else None
    return found


def _gpu_tres(tres: Any) -> dict[str, str]:
    """A pyslurm TrackableResources as the GPU entries of a TRES list (``gres/gpu=4``, ``gres/gpu:a100=2``)."""
    if not tres:
        return {}
    return {f"gres/{name}": str(int(gres.count)) for name, gres in tres.gres.items()
            if name == "gpu" or str(name).startswith("gpu:")}


def _array_range(waiting: str | None) -> str | None:
    """A pending array range: ``4-9`` (slurmdbd keeps it as a hex bitmap, ``0x3F0``)."""
    if not waiting:
        return None
    if waiting.lower().startswith("0x"):
        mask = int(waiting, 16)
        ids = [bit for bit in range(mask.bit_length()) if mask >> bit & 1]
        return commands.array_spec(ids) if ids else None
    return waiting


def _display_id(f: Mapping[str, Any], waiting: str | None) -> JobId:
    """The id as sacct and squeue display it: ``35``, ``12_3``, ``12_[4-9%2]``, ``30+1``.

    An array record is a task or the range of tasks still pending; pyslurm reads task id 0 as "not
    set" (None), so a task record without one is task 0.
    """
    if f["array_id"]:
        if f["array_task_id"] is None and waiting:
            throttle = f["array_tasks_parallel"]
            return JobId(str(f["array_id"]), f"[{waiting}{f'%{throttle}' if throttle else ''}]")
        return JobId(str(f["array_id"]), str(f["array_task_id"] or 0))
    if f["heterogeneous_id"]:
        return JobId(str(f["heterogeneous_id"]), het_offset=int(f["heterogeneous_offset"] or 0))
    return JobId(str(f["id"]))


def _seconds(minutes: Any) -> int | None:
    """A time limit in minutes (None or a word: no limit of its own) → seconds."""
    return int(minutes) * 60 if isinstance(minutes, int) else None


def _timestamp(epoch: Any) -> str:
    """A time as sacct prints it (``2026-11-24T21:48:54``, local time); ``Unknown`` when not set."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(int(epoch))) if epoch else "Unknown"


def _uid(user: Any) -> str | None:
    """sacct names the canceller by uid, pyslurm by user name."""
    if user is None or user == "":
        return None
    try:
        return str(pwd.getpwnam(str(user)).pw_uid)
    except KeyError:
        return str(user)


def sacct_row(f: Mapping[str, Any]) -> SacctRow:
    """A ``pyslurm.db.Job``'s fields (:data:`DB_FIELDS`) as the row sacct prints for it."""
    state = JobState.parse(str(f["state"]))
    cancelled_by = _uid(f["cancelled_by"]) if state is JobState.CANCELLED else None
    nodes = str(f["nodelist"] or "")
    return SacctRow(
        job_id=_display_id(f, _array_range(f["array_tasks_waiting"])),
        raw_id=str(f["id"]),
        state=state,
        state_text=f"{f['state']} by {cancelled_by}" if cancelled_by else str(f["state"]),
        cancelled_by=cancelled_by,
        exit_code=ExitCode(int(f["exit_code"] or 0), int(f["exit_code_signal"] or 0)),
        derived_exit_code=ExitCode(int(f["derived_exit_code"] or 0), int(f["derived_exit_code_signal"] or 0)),
        elapsed_s=int(f["elapsed_time"] or 0),
        time_limit_s=_seconds(f["time_limit"]),
        nodes=int(f["num_nodes"] or f["requested_nodes"] or 0),  # sacct: asked for, while none are held
        node_list="" if nodes.lower() in ("", "none assigned", "(null)") else nodes,
        alloc_tres=dict(f["allocated_gpus"]),
        req_tres=dict(f["requested_gpus"]),
        reason=parse_reason(str(f["state_reason"] or "")),
        partition=str(f["partition"] or ""),
        account=str(f["account"] or ""),
        submit=_timestamp(f["submit_time"]),
        start=_timestamp(f["start_time"]),
        end=_timestamp(f["end_time"]),
    )


def squeue_row(f: Mapping[str, Any]) -> SqueueRow:
    """A ``pyslurm.Job``'s fields (:data:`LIVE_FIELDS`) as the row squeue prints for it."""
    state = JobState.parse(str(f["state"]))
    running = state.is_active and not state.is_waiting
    reason = str(f["state_reason"] or "")
    return SqueueRow(
        job_id=_display_id(f, _array_range(f["array_tasks_waiting"])),
        raw_id=str(f["id"]),
        state=state,
        tres=dict(f["allocated_gpus"] if running else f["requested_gpus"]),
        restarts=int(f["requeue_count"] or 0),
        nodes=int(f["num_nodes"] or 0),
        node_list=str(f["allocated_nodes"] or "") if running else "",
        elapsed_s=int(f["run_time"] or 0),
        time_limit_s=_seconds(f["time_limit"]),
        partition=str(f["partition"] or ""),
        account=str(f["account"] or ""),
        reason=parse_reason(reason),
        reason_text=reason,
    )


# --- the controller's configuration ---------------------------------------------------------------

# pyslurm's snake_case names are scontrol's CamelCase ones (max_array_size → MaxArraySize) but these
_CONFIG_NAMES = {
    "slurm_conf_path": "SLURM_CONF",
    "version": "SLURM_VERSION",
}


def _config_key(name: str) -> str:
    return _CONFIG_NAMES.get(name) or "".join(word.capitalize() for word in name.split("_"))


def _config_text(value: Any) -> str:
    if value is None:
        return "(null)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


__all__ = ["DB_FIELDS", "LIVE_FIELDS", "NAME", "PyslurmScheduler", "RecordSource", "fields_of", "load",
           "pyslurm_version", "sacct_row", "squeue_row", "submit_attributes"]
