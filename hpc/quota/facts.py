"""Reading what Slurm knows about one user's GPU limits: a few calls, each with a timeout.

The controller (``scontrol show assoc_mgr``) answers with the limits it enforces and what it counts
against them now; that call is the one the quota view cannot do without. slurmdbd (``sacctmgr``)
adds the QOS lists of associations and the QOS per-user/per-account limits; when it is down or slow,
the answer is marked incomplete with a warning instead of failing (a launch must not wait on it).
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from hpc.errors import HpcTfError, SchedulerCommandFailed, SchedulerOutputError, SchedulerUnavailable
from hpc.quota.stored import StoredAnswers
from hpc.scheduler import commands
from hpc.scheduler.accounting import (
    AssocMgrState,
    AssocRecord,
    QueuedJob,
    SacctmgrAssoc,
    SacctmgrQos,
    parse_assoc_mgr,
    parse_quota_jobs,
    parse_sacctmgr_assoc,
    parse_sacctmgr_qos,
)
from hpc.scheduler.run import RetryPolicy, SlurmCli

T = TypeVar("T")

# A launch waits at most this long for one quota query, and at most the budget for the whole check.
PREFLIGHT_TIMEOUT_S = 5.0
PREFLIGHT_BUDGET_S = 10.0
ACCOUNTING_DOWN = "Slurm's accounting daemon (slurmdbd) did not answer"


def quick_cli(timeout_s: float = PREFLIGHT_TIMEOUT_S) -> SlurmCli:
    """A SlurmCli for checks that must not hold anything up: a short timeout, no retries."""
    return SlurmCli(timeout_s=timeout_s, retry=RetryPolicy(attempts=1))


def current_user() -> str:
    """The user Slurm sees: the name of this process's uid (not $USER, which anyone can set)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        name = os.environ.get("USER") or os.environ.get("LOGNAME")
        if not name:
            raise HpcTfError(f"uid {os.getuid()} has no user name; Slurm cannot know whose quota to show") from None
        return name


class Calls:
    """The scheduler calls made for one answer: counted, each cut off where the time budget ends, and
    refused once it is spent."""

    def __init__(
        self, cli: SlurmCli, budget_s: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cli = cli
        self.budget_s = budget_s
        self.clock = clock
        self.started = clock()
        self.argvs: list[tuple[str, ...]] = []

    @property
    def count(self) -> int:
        return len(self.argvs)

    def run(self, argv: Sequence[str], parse: Callable[[str], T], stored: StoredAnswers | None = None) -> T:
        """Run one query and parse its output; raises the scheduler's errors (or
        SchedulerUnavailable once the budget is spent, without calling). With ``stored``, a recent
        answer to the same argv is parsed instead of asking, and a new answer is remembered."""
        remembered = stored.get(argv) if stored is not None else None
        stdout = self._ask(argv) if remembered is None else remembered
        try:
            value = parse(stdout)
        except SchedulerOutputError as err:
            raise SchedulerOutputError(f"{err.message} (command: {' '.join(argv)})") from err
        if stored is not None and remembered is None:
            stored.put(argv, stdout)
        return value

    def _ask(self, argv: Sequence[str]) -> str:
        elapsed = self.clock() - self.started
        if self.budget_s is not None and elapsed >= self.budget_s:
            raise SchedulerUnavailable(
                argv=tuple(argv),
                returncode=None,
                transient=True,
                summary=f"the quota check used up its {self.budget_s:g} s; {argv[0]} was not asked",
            )
        self.argvs.append(tuple(argv))
        cli = self.cli
        if self.budget_s is not None and self.budget_s - elapsed < cli.timeout_s:  # the last call gets what is left
            cli = SlurmCli(cli.runner, timeout_s=self.budget_s - elapsed, retry=cli.retry, sleep=cli.sleep,
                           clock=cli.clock)  # fmt: skip
        return cli.run(argv).stdout


def failure_summary(err: HpcTfError) -> str:
    return err.summary if isinstance(err, SchedulerCommandFailed) and err.summary else err.message.splitlines()[0]


@dataclass(frozen=True)
class QuotaFacts:
    """What Slurm said about one user's associations and QOS, parsed."""

    user: str
    controller: AssocMgrState
    associations: tuple[SacctmgrAssoc, ...] | None = None  # None: slurmdbd was not asked or did not answer
    qos: Mapping[str, SacctmgrQos] | None = field(default=None, hash=False)
    accounting_error: str | None = None  # why slurmdbd's part is missing
    warnings: tuple[str, ...] = ()

    @property
    def cluster(self) -> str:
        return next((a.cluster for a in self.controller.associations if a.cluster), "")

    @property
    def uid(self) -> int | None:
        return next((a.uid for a in self.user_associations() if a.uid is not None), None)

    def user_associations(self) -> list[AssocRecord]:
        return [a for a in self.controller.associations if a.user == self.user]

    def association(self, account: str | None, partition: str | None = None) -> AssocRecord | None:
        """The association a job of this user runs under: its account (the default one when None),
        the partition-specific association when there is one, else the one for any partition."""
        mine = self.user_associations()
        if account is None:
            default = next((a for a in mine if a.is_default), None)
            if default is None:
                return None
            account = default.account
        candidates = [a for a in mine if a.account == account]
        exact = next((a for a in candidates if partition is not None and a.partition == partition), None)
        return exact or next((a for a in candidates if a.partition is None), None)

    def account_record(self, account: str) -> AssocRecord | None:
        return next((a for a in self.controller.associations if a.user is None and a.account == account), None)

    def path(self, assoc: AssocRecord) -> list[AssocRecord]:
        """``assoc``, then its account, then each parent account up to the root."""
        by_id = {a.id: a for a in self.controller.associations}
        path = [assoc]
        node = self.account_record(assoc.account) if assoc.user is not None else None
        seen = {assoc.id}
        if node is not None:
            path.append(node)
            seen.add(node.id)
        current = path[-1]
        while current.parent_id is not None or current.parent_account is not None:
            parent = by_id.get(current.parent_id) if current.parent_id is not None else None
            if parent is None and current.parent_account:
                parent = self.account_record(current.parent_account)
            if parent is None or parent.id in seen:
                break
            path.append(parent)
            seen.add(parent.id)
            current = parent
        return path

    def subtree(self, account: str) -> frozenset[str]:
        """``account`` and every account below it (from the account associations the controller printed)."""
        children: dict[str, list[str]] = {}
        for a in self.controller.associations:
            if a.user is None and a.parent_account:
                children.setdefault(a.parent_account, []).append(a.account)
        found: set[str] = set()
        todo = [account]
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo.extend(children.get(name, ()))
        return frozenset(found)

    def stored_association(self, assoc: AssocRecord) -> SacctmgrAssoc | None:
        rows = self.associations or ()
        return next(
            (
                r
                for r in rows
                if r.account == assoc.account
                and r.user == assoc.user
                and r.partition == assoc.partition
                and (not r.cluster or not assoc.cluster or r.cluster == assoc.cluster)
            ),
            None,
        )

    def job_qos(self, assoc: AssocRecord, requested: str | None) -> str | None:
        """The QOS a job of ``assoc`` runs in: the one asked for; else the association's default QOS,
        its only QOS, or "normal" (Slurm's ``assoc_mgr_get_default_qos_info``). None: not known
        (slurmdbd did not answer)."""
        if requested:
            return requested
        stored = self.stored_association(assoc)
        if stored is None:
            return None
        if stored.default_qos:
            return stored.default_qos
        if len(stored.qos) == 1:
            return stored.qos[0]
        return "normal"


def read_controller(calls: Calls, user: str) -> AssocMgrState:
    return calls.run(commands.scontrol_show_assoc_mgr(users=[user]), parse_assoc_mgr)


def gather(
    calls: Calls, user: str, *, qos: str | None = None, every_qos: bool = False, stored: StoredAnswers | None = None
) -> QuotaFacts:
    """The controller's view (required: its errors propagate), then slurmdbd's (optional).

    ``qos``: the QOS a job asks for, which spares the association query; ``every_qos``: read every QOS
    the user's associations may use (the quota overview) instead of just the job's; ``stored``:
    slurmdbd's recent answers, reused instead of asking again.
    """
    state = read_controller(calls, user)
    facts = QuotaFacts(user=user, controller=state)
    if stored is not None:
        stored.cluster = facts.cluster
    if not any(a.user == user for a in state.associations):
        return facts
    assocs: tuple[SacctmgrAssoc, ...] | None = None
    try:
        if qos is None or every_qos:
            fields = commands.SACCTMGR_ASSOC_FIELDS
            argv = commands.sacctmgr_show_assoc([user], facts.cluster or None)
            assocs = tuple(calls.run(argv, lambda out: parse_sacctmgr_assoc(out, fields), stored))
        names = {qos} if qos else set()
        if every_qos or qos is None:
            names.update(q for row in assocs or () for q in row.qos)
            names.update(r.default_qos for r in assocs or () if r.default_qos)
            names.add("normal")
        qos_fields = commands.SACCTMGR_QOS_FIELDS
        rows = calls.run(
            commands.sacctmgr_show_qos(sorted(names)), lambda out: parse_sacctmgr_qos(out, qos_fields), stored
        )
    except (SchedulerCommandFailed, SchedulerOutputError) as err:
        summary = failure_summary(err)
        reason = summary if "slurmdbd" in summary else f"{ACCOUNTING_DOWN}: {summary}"
        return QuotaFacts(user, state, assocs, None, accounting_error=reason, warnings=(reason,))
    return QuotaFacts(user, state, assocs, {r.name: r for r in rows})


def read_jobs(
    calls: Calls, accounts: Sequence[str] = (), users: Sequence[str] = (), qos: Sequence[str] = ()
) -> list[QueuedJob]:
    fields = commands.QUOTA_SQUEUE_FIELDS
    argv = commands.squeue_quota_jobs(accounts=sorted(accounts), users=users, qos=qos)
    return calls.run(argv, lambda out: parse_quota_jobs(out, fields))
