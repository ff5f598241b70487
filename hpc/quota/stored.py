"""slurmdbd's answers about one user, kept for a few minutes so that a launch does not wait on them.

What only slurmdbd (``sacctmgr``) knows — which QOS an association may use and its default QOS, the
per-user and per-account limits of a QOS nobody has met yet, QOS flags — is what an administrator
set; it does not move while jobs run. Each ``sacctmgr`` call costs ~0.3 s (most of it waiting on
slurmdbd), which would be most of a launch. So a launch reuses what ``sacctmgr`` answered in the
last :data:`MAX_AGE_S`, while every number a verdict weighs (limits the controller enforces, GPUs in
use) is read fresh from the controller; a verdict that would block a launch is checked again with
fresh answers (:func:`hpc.quota.preflight.preflight`), and ``hpc-tf quota`` always asks slurmdbd.

The answers live in one file per user under ``$XDG_CACHE_HOME/hpc-tf`` (``~/.cache``), written
atomically; a cache that cannot be read or written is simply not used.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hpc.atomic import write_text_atomic
from hpc.records import RECORD_LIMIT, read_text
from hpc.resources import user_cache_dir

MAX_AGE_S = 300.0


class StoredAnswers:
    """``sacctmgr`` outputs by argv, each with the time it was read."""

    def __init__(
        self, path: Path, *, max_age_s: float = MAX_AGE_S, reuse: bool = True, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.max_age_s = max_age_s
        self.reuse = reuse  # False: ask slurmdbd again, but remember its answers
        self.clock = clock
        self.used = False  # whether an answer came from here (so a blocking verdict is checked again)
        # the cluster whose controller is asked (set by hpc.quota.facts.gather): one home directory may
        # serve several clusters, each with its own slurmdbd and QOS of the same names
        self.cluster = ""

    @classmethod
    def for_user(cls, user: str, *, reuse: bool = True) -> StoredAnswers:
        return cls(user_cache_dir() / f"slurmdbd-{user}.json", reuse=reuse)

    def fresh(self) -> StoredAnswers:
        """The same store, asking slurmdbd again."""
        fresh = StoredAnswers(self.path, max_age_s=self.max_age_s, reuse=False, clock=self.clock)
        fresh.cluster = self.cluster
        return fresh

    def get(self, argv: Sequence[str]) -> str | None:
        """The output ``argv`` gave within the last ``max_age_s``, if any (and reuse is on)."""
        if not self.reuse:
            return None
        stdout = self._recent().get(self._key(argv))
        if stdout is not None:
            self.used = True
        return stdout

    def put(self, argv: Sequence[str], stdout: str) -> None:
        entries = {key: {"at": at, "stdout": out} for key, (at, out) in self._read().items() if self._young(at)}
        entries[self._key(argv)] = {"at": self.clock(), "stdout": stdout}
        with contextlib.suppress(OSError):  # a read-only or full home: launches ask slurmdbd every time
            write_text_atomic(self.path, json.dumps(entries), mode=0o600)

    def _key(self, argv: Sequence[str]) -> str:
        return "\0".join((self.cluster, *argv))

    def _recent(self) -> dict[str, str]:
        return {key: out for key, (at, out) in self._read().items() if self._young(at)}

    def _young(self, at: float) -> bool:
        return 0 <= self.clock() - at <= self.max_age_s

    def _read(self) -> dict[str, tuple[float, str]]:
        try:
            # bounded, and only a file of this user's that nobody else may write: it decides quota verdicts
            document = json.loads(read_text(self.path, RECORD_LIMIT, owned=True))
        except (OSError, ValueError, RecursionError):  # a broken (or foreign) cache is no cache
            return {}
        if not isinstance(document, dict):
            return {}
        return {
            key: (entry["at"], entry["stdout"])
            for key, entry in document.items()
            if isinstance(entry, dict)
            and isinstance(entry.get("at"), (int, float))
            and isinstance(entry.get("stdout"), str)
        }
