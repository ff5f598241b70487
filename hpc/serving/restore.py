"""A starting serving node loads what was serving (:mod:`hpc.serving.state`) before it takes traffic.

Each recorded model is pinned to its recorded versions in its config.pbtxt (``version_policy
specific``), unless the policy already selects exactly them (``latest{1}`` with the recorded version the
highest in the repository, the usual case after a hand-off), loaded over gRPC and checked READY. The
config file, not a config passed in the load request: Triton keeps such an override through later plain
loads (lab NOTES §5, gotcha 3), while the next hand-off writes ``latest{1}`` back and so takes over.

A model that cannot be restored (a recorded version gone from the repository, a failed load, a hand-off
holding its lock) is one line in the result; the others still serve.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from hpc.errors import HpcTfError, ServingError
from hpc.serving.config import parse_config, render_config
from hpc.serving.control import LOAD_TIMEOUT_S, ModelControl
from hpc.serving.repository import Repository
from hpc.serving.state import ServingState


@dataclass(frozen=True)
class Restored:
    model: str
    versions: tuple[int, ...]  # the recorded versions
    error: str | None = None  # None: every recorded version is READY

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "versions": list(self.versions), "error": self.error}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Restored:
        error = data.get("error")
        return cls(str(data["model"]), tuple(int(v) for v in data["versions"]), None if error is None else str(error))

    @property
    def line(self) -> str:
        """What the node log says about this model, in one line."""
        shown = ", ".join(f"v{v}" for v in self.versions)
        if self.error is None:
            return f"restored {self.model} {shown} (recorded as serving)"
        return f"NOT restored: {self.model} {shown} was recorded as serving but {self.error}"


def restore(repo: Repository, state: ServingState, control: ModelControl,
            load_timeout: float = LOAD_TIMEOUT_S) -> list[Restored]:
    """Load every recorded model at its recorded versions (:meth:`ServingState.to_load`: splits' variants
    included); one result per model, in name order."""
    results = []
    for model, versions in state.to_load().items():
        try:
            present = set(repo.versions(model))
            missing = [v for v in versions if v not in present]
            if missing:
                raise ServingError(f"version {missing[0]} is no longer in the repository")
            # no hand-off changes the model's config meanwhile; replicas starting together take turns
            with repo.lock(model, patience=load_timeout):
                pin(repo, model, versions)
                deadline = time.monotonic() + load_timeout
                control.load(model, deadline)
                for version in versions:
                    control.wait_ready(model, version, deadline)
            results.append(Restored(model, versions))
        except HpcTfError as err:
            results.append(Restored(model, versions, err.message.splitlines()[0]))
    return results


def pin(repo: Repository, model: str, versions: tuple[int, ...]) -> None:
    """Make ``model``'s config.pbtxt select exactly ``versions`` (rewritten only when it does not)."""
    text = repo.read_config(model)
    if text is None:
        raise ServingError("its config.pbtxt is missing")
    cfg = parse_config(text)
    if selected(cfg, repo.versions(model)) == set(versions):
        return
    cfg.version_policy.specific.versions[:] = list(versions)  # replaces the policy (a oneof)
    repo.write_config(model, render_config(cfg))


def selected(cfg: Any, available: list[int]) -> set[int]:
    """The versions Triton serves under ``cfg``'s version_policy (a ModelConfig), of the ``available`` ones."""
    policy = cfg.version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(available)
    if kind == "specific":
        return set(policy.specific.versions) & set(available)
    latest = policy.latest.num_versions if kind == "latest" else 1  # Triton's default: latest{1}
    return set(sorted(available)[-latest:]) if latest > 0 else set()
