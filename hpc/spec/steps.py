"""Setup steps (job.yaml ``setup``): shell lines a job runs after its environment, before its tasks.

``- LINE`` runs in the batch shell, once per job (by eval: ``source``, ``export``, ``cd`` and ``module``
last for the job); ``- node: LINE`` once on every node of the job (one task per node), for staging to
node-local disk. Rendered by templates/setup_steps.sh.j2.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hpc.modelbase import StrictModel
from hpc.text import OneLine, one_line

SHAPE = "a setup step is a shell line, or {node: LINE} to run it once on every node"


class SetupStep(StrictModel):
    """A setup step: ``- LINE`` runs in the batch shell (once per job), ``- node: LINE`` once on every node.
    Shell code: bash expands it (no ${NAME} rule here)."""

    job: OneLine | None = Field(None, description="shell line run in the batch shell before the tasks")
    node: OneLine | None = Field(None, description="shell line run once on every node (one task per node)")

    @model_validator(mode="before")
    @classmethod
    def _line(cls, value: object) -> object:
        if isinstance(value, str):
            return {"job": one_line(value, "a setup line")}
        if isinstance(value, bool | int | float):  # `- true` is YAML's boolean
            raise ValueError(f"YAML reads this step as a {type(value).__name__}, not a shell line: quote it")
        if not isinstance(value, dict):
            raise ValueError(SHAPE)
        return value

    @model_validator(mode="after")
    def _one(self) -> SetupStep:
        if (self.job is None) == (self.node is None):
            raise ValueError(SHAPE)
        return self

    @property
    def where(self) -> Literal["job", "node"]:
        return "job" if self.job is not None else "node"

    @property
    def line(self) -> str:
        return self.job if self.job is not None else str(self.node)
