"""The one exception hierarchy of hpc-tf.

Library code raises these; only the CLI turns them into messages and exit codes
(``HpcTfError.exit_code``). Every message says what is wrong and, where there is
one, what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final


class HpcTfError(Exception):
    """Base of every error hpc-tf reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.reason = message.splitlines()[0] if message else ""  # what went wrong, without the details

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\nhint: {self.hint}"


class FieldProblem:
    """One problem in a user file: where (``resources.gpus_per_node``, line 7) and what.

    A plain class, like those of hpc/runtime/node/record.py: this file is also the node
    runtime's _errors.py, imported by the bootstrap of every task.
    """

    __slots__ = ("line", "message", "path", "source")

    def __init__(self, path: str, message: str, line: int | None = None, source: str | None = None) -> None:
        self.path: Final = path
        self.message: Final = message
        self.line: Final = line
        self.source: Final = source

    def _key(self) -> tuple[str, str, int | None, str | None]:
        return (self.path, self.message, self.line, self.source)

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if isinstance(other, FieldProblem) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"FieldProblem(path={self.path!r}, message={self.message!r}, line={self.line!r}, source={self.source!r})"

    def __str__(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        prefix = f"{where}: " if where else ""
        return f"{prefix}{self.path}: {self.message}" if self.path else f"{prefix}{self.message}"


class InputError(HpcTfError):
    """What the user gave cannot be used as it is: fix it and run again (exit code 2)."""

    exit_code = 2


class SpecError(InputError):
    """A job spec, campaign or site file is invalid. Nothing was written or submitted."""

    def __init__(self, problems: Sequence[FieldProblem], *, hint: str | None = None) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems), hint=hint)


class ConfigError(InputError):
    """A site configuration value is missing or invalid."""


class RecordError(InputError):
    """A record an earlier hpc-tf command wrote (resolved.json, a hand-off record…) cannot be read."""


class QuotaRefused(HpcTfError):
    """The job can never run under the account's GPU limits (or --no-queue refused a wait)."""

    exit_code = 3


class SchedulerCommandFailed(HpcTfError):
    """A Slurm command failed. Carries everything needed to understand and retry it."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str = "",
        stderr: str = "",
        transient: bool = False,
        summary: str = "",
    ) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.transient = transient
        self.summary = summary
        tool = argv[0] if argv else "?"
        status = "timed out" if returncode is None else f"exited {returncode}"
        said = [line.strip() for line in (stderr or stdout).splitlines() if line.strip()]
        head = summary or f"{tool} {status}: {said[-1] if said else '(no output)'}"
        # one line: the summary says what failed and what it means; the command is what to re-run by hand
        command = " ".join(argv)
        command = command if len(command) <= 200 else f"{command[:200]}..."
        super().__init__(
            f"{head} (command: {command})",
            hint="the controller may be busy; try again" if transient else None,
        )
        self.reason = head


class SchedulerUnavailable(SchedulerCommandFailed):
    """The Slurm controller or accounting daemon did not answer."""


class SchedulerOutputError(HpcTfError):
    """A Slurm tool answered with text hpc-tf cannot read (a format or version it does not know)."""


class TaskFailed(HpcTfError):
    """A task of a submitted function job ended without a return value: which task, its log, and why."""

    def __init__(self, job_id: str, rank: int, log: str, cause: str) -> None:
        self.job_id = job_id
        self.rank = rank
        self.log = log
        self.cause = cause
        super().__init__(f"task {rank} of job {job_id} failed: {cause} (log: {log})")


class RuntimeSetupError(HpcTfError):
    """The node-side bootstrap cannot build the environment for a task."""

    exit_code = 4


class ServingError(HpcTfError):
    """A hand-off or serving-node operation failed; the message names the stage and the cause."""

    exit_code = 5


class ModelNameError(InputError, ServingError):
    """A model name Triton or the model repository cannot use."""
