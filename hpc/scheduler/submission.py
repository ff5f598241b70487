"""What a submission asks of the scheduler besides its script, typed: an array, dependencies, a hold.

Each backend spells these its own way (Slurm's CLI: :func:`hpc.scheduler.commands.submit_args`);
callers never write ``--array=`` or ``--dependency=`` themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DependencyType = Literal["afterok", "afterany", "afternotok", "aftercorr"]
Dependencies = tuple[tuple[DependencyType, tuple[str, ...]], ...]


@dataclass(frozen=True)
class ArrayRequest:
    """A job array: one task per index (below the cluster's ``MaxArraySize``), ``throttle`` at once."""

    indices: tuple[int, ...]
    throttle: int | None = None


@dataclass(frozen=True)
class SubmitOptions:
    array: ArrayRequest | None = None
    # start once every group holds: afterok/afterany the whole jobs ended (successfully / at all);
    # aftercorr: task N of this array waits for task N of the named arrays
    after: Dependencies = ()
    # cancel the job at once when a dependency can never be met (instead of pending forever)
    cancel_if_never_satisfied: bool = False
    hold: bool = False  # submitted held: it starts only once released

    @classmethod
    def after_success(cls, job_ids: Sequence[str]) -> SubmitOptions:
        """Run only once ``job_ids`` all completed successfully; cancelled at once if one of them fails."""
        return cls(after=(("afterok", tuple(job_ids)),), cancel_if_never_satisfied=True)

    @property
    def after_ok(self) -> tuple[str, ...]:
        """The jobs that must complete successfully first (the only dependency every launcher has)."""
        return tuple(job for kind, ids in self.after if kind == "afterok" for job in ids)


NO_OPTIONS = SubmitOptions()
