"""The pyslurm backend of :class:`hpc.scheduler.Scheduler`: Slurm's C library instead of its tools.

The only module that imports pyslurm, and only when a site asks for it (``scheduler: pyslurm`` or
``auto``, :mod:`hpc.scheduler.choice`). Its two mappings are pure modules of their own: what pyslurm
hands back becomes the rows the CLI backend parses (:mod:`hpc.scheduler.libslurm_rows`), so both
backends share one status merge and give the same :class:`JobStatus` values; what sbatch would read
becomes a ``JobSubmitDescription`` (:mod:`hpc.scheduler.libslurm_submit`).

A script is submitted with the options sbatch would read from it: its ``#SBATCH`` lines through
hpc-tf's one reader of them (:func:`hpc.render.directives.read_directives`), then the typed options
(:func:`hpc.scheduler.commands.submit_options`, which win, as sbatch's command line does).

pyslurm wraps one Slurm release (pyslurm 25.11.x needs libslurm 25.11): :func:`load` checks that.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from hpc.errors import HpcTfError, SchedulerCommandFailed, SchedulerUnavailable
from hpc.scheduler import commands
from hpc.scheduler.fields import JobId, parse_array_tasks, parse_job_id
from hpc.scheduler.job_usage import JobUsage, usage_of
from hpc.scheduler.libslurm_rows import DB_FIELDS, LIVE_FIELDS, RecordSource, fields_of
from hpc.scheduler.libslurm_submit import environment, submit_attributes
from hpc.scheduler.parse import SqueueRow
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
            script=str(script), name=script.name, working_directory=os.getcwd(), environment=environment()
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

    def usage(self, job_ids: Sequence[str] = (), *, since: float | None = None,
              user: str | None = None) -> list[JobUsage]:
        """GPU time of jobs from slurmdbd's records (the same read as :meth:`query`); listing a user's
        jobs by time is sacct's (refused here)."""
        if not job_ids:
            if since is None:
                return []
            raise HpcTfError("the pyslurm scheduler cannot list jobs by time for hpc-tf usage",
                             hint="ask Slurm's tools instead: hpc-tf usage --set scheduler=cli")
        wanted = set(commands.checked_job_ids(job_ids))
        rows = RecordSource(self.accounting_records, self.live_records).accounting(list(wanted))
        return [usage_of(row) for row in rows if row.job_id.job in wanted or row.job_id.base in wanted]

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


__all__ = ["NAME", "PyslurmScheduler", "load", "pyslurm_version"]
