"""Why a job waits, in plain words, with what to do about it.

Reason codes are the strings of Slurm's ``job_reason_string`` (``src/common/slurm_protocol_defs.c``)
with the meanings of https://slurm.schedmd.com/job_reason_codes.html. ``squeue`` prints the
controller's free-text description instead of the code when there is one, e.g.
``launch failed requeued held`` or ``ReqNodeNotAvail, UnavailableNodes:node1``.

The ~150 accounting-limit codes follow one grammar (``AssocGrpGRES``, ``QOSMaxGRESPerUser``,
``AssocGrpCPUMinutesLimit``, ``MaxGRESPerAccount`` …) and are explained from it; the common ones
have a hand-written sentence. Unknown codes still give a PendingReason (category OTHER).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from enum import Enum

log = logging.getLogger(__name__)


class ReasonCategory(str, Enum):
    QUOTA = "quota"  # an association/QOS limit: your group's share is in use, or the job exceeds a cap
    RESOURCES = "resources"  # the cluster is busy or nodes are unavailable: waiting in line
    DEPENDENCY = "dependency"  # waiting for other jobs
    HELD = "held"  # someone (or Slurm after a failure) put it on hold
    CONFIG = "config"  # the request does not fit the partition/account setup
    OTHER = "other"


@dataclass(frozen=True)
class PendingReason:
    """One pending reason. ``action`` may contain ``{job_id}``; :meth:`sentence` fills it in."""

    code: str
    category: ReasonCategory
    explanation: str
    action: str | None = None
    stuck: bool = False  # will not start unless someone acts (cancel, release, raise a limit)
    detail: str = ""  # what Slurm printed after the code, e.g. "UnavailableNodes:node1"

    def sentence(self, job_id: str = "ID") -> str:
        """E.g. ``a job it depends on failed; it will never start: cancel it with hpc-tf cancel 12``."""
        text = self.explanation if not self.detail else f"{self.explanation} ({self.detail})"
        return text if self.action is None else f"{text}: {self.action.format(job_id=job_id)}"


_Q, _R, _D, _H, _C, _O = (
    ReasonCategory.QUOTA,
    ReasonCategory.RESOURCES,
    ReasonCategory.DEPENDENCY,
    ReasonCategory.HELD,
    ReasonCategory.CONFIG,
    ReasonCategory.OTHER,
)
_CANCEL = "cancel it with hpc-tf cancel {job_id}"
_RESUBMIT = "cancel it (hpc-tf cancel {job_id}) and submit it again with a smaller request"
_QUOTA = "see hpc-tf quota"


def _r(
    code: str, category: ReasonCategory, explanation: str, action: str | None = None, *, stuck: bool = False
) -> PendingReason:
    return PendingReason(code, category, explanation, action, stuck)


_NEVER = "; it will never start"
_WHEN_FREE = "; it starts when some of them finish"

# fmt: off
_KNOWN = (
    # waiting in line
    _r("Priority", _R, "jobs with a higher priority are ahead of it in the queue"),
    _r("Resources", _R, "waiting for free resources: the nodes or GPUs it asks for are in use"),
    _r("ReqNodeNotAvail", _R, "a node it needs is down, drained or reserved",
       "wait for the node, or cancel it and submit it without --nodelist"),
    _r("NodeDown", _R, "a node it needs is down"),
    _r("Reservation", _R, "waiting for its reservation to start"),
    _r("Licenses", _R, "waiting for a license"),
    _r("BurstBufferResources", _R, "waiting for burst-buffer space"),
    _r("PowerNotAvail", _R, "waiting for power capacity"),
    _r("PowerReserved", _R, "waiting for power capacity held in reserve"),
    _r("FrontEndDown", _R, "no front-end node is available"),
    # dependencies
    _r("Dependency", _D, "waiting for the jobs it depends on to finish"),
    _r("DependencyNeverSatisfied", _D, "a job it depends on failed" + _NEVER, _CANCEL, stuck=True),
    # holds
    _r("JobHeldUser", _H, "held by its owner", "release it with scontrol release {job_id}", stuck=True),
    _r("JobHeldAdmin", _H, "held by the cluster administrators", "ask them why", stuck=True),
    _r("launch failed requeued held", _H, "Slurm could not start it on its node and put it on hold",
       "release it with scontrol release {job_id}; if that happens again, tell the administrators",
       stuck=True),
    _r("JobHoldMaxRequeue", _H, "it was requeued too many times and is now held",
       "find out why it keeps failing, then cancel it (hpc-tf cancel {job_id}) and submit it again",
       stuck=True),
    # the request does not fit the cluster's setup
    _r("PartitionTimeLimit", _C, "it asks for more time than its partition allows" + _NEVER,
       "cancel it (hpc-tf cancel {job_id}) and submit it again with a shorter time", stuck=True),
    _r("PartitionNodeLimit", _C, "it asks for more nodes than its partition allows, or they are down",
       _RESUBMIT),
    _r("PartitionDown", _C, "its partition is down", "wait, or submit it to another partition"),
    _r("PartitionInactive", _C, "its partition is not accepting jobs", "submit it to another partition"),
    _r("PartitionConfig", _C, "it breaks a limit of its partition" + _NEVER, _RESUBMIT, stuck=True),
    _r("BadConstraints", _C, "no node can satisfy its request (features, memory or CPUs per node)",
       _RESUBMIT, stuck=True),
    _r("MaxMemPerLimit", _C, "it asks for more memory per CPU or node than allowed", _RESUBMIT, stuck=True),
    _r("InvalidAccount", _C, "its account is not valid", "submit it again with another --account",
       stuck=True),
    _r("InvalidQOS", _C, "its QOS is not valid", "submit it again with another --qos", stuck=True),
    _r("AccountNotAllowed", _C, "its account may not use this partition",
       "submit it again to another partition or account", stuck=True),
    _r("QOSNotAllowed", _C, "its QOS may not use this partition",
       "submit it again with another partition or QOS", stuck=True),
    _r("ReservationDeleted", _C, "its reservation was deleted", _CANCEL, stuck=True),
    _r("DeadLine", _C, "it can no longer finish before its deadline", _CANCEL, stuck=True),
    # waits of its own making, or short-lived
    _r("BeginTime", _O, "its start time has not come yet (--begin, or the delay after a requeue)"),
    _r("JobArrayTaskLimit", _O, "the array's own limit on tasks running at once (%N) is reached"),
    _r("Prolog", _O, "the node's prolog is still running; it starts in a moment"),
    _r("Cleaning", _O, "it was requeued and its previous run is still being cleaned up"),
    _r("SchedDefer", _O, "the scheduler deferred it; it is considered again shortly"),
    _r("FedJobLock", _O, "waiting for the federated clusters to agree"),
    _r("BurstBufferStageIn", _O, "its burst-buffer data is being staged in"),
    # why a job ended, as sacct's Reason keeps it (not a reason to wait)
    _r("NonZeroExitCode", _O, "it exited with a non-zero exit code"),
    _r("TimeLimit", _O, "it reached its time limit"),
    _r("OutOfMemory", _O, "it ran out of memory"),
    _r("JobLaunchFailure", _O, "Slurm could not launch it (a missing program or file system problem?)"),
    _r("SystemFailure", _O, "a Slurm or node failure ended it"),
    _r("InactiveLimit", _O, "it was inactive for longer than the cluster allows"),
    _r("BurstBufferOperation", _O, "a burst-buffer operation for it failed"),
    # GPU quota: the reasons users meet most (Slurm's gres/gpu accounting)
    _r("AssocGrpGRES", _Q,
       "waiting for GPU quota: your account's running jobs hold all the GPUs it may use" + _WHEN_FREE,
       _QUOTA),
    _r("AssocGrpGRESMinutes", _Q,
       "your account has used up its GPU-hours budget; it will not start until the budget is raised",
       _QUOTA, stuck=True),
    _r("AssocGrpGRESRunMinutes", _Q,
       "your account's running jobs have reserved all the GPU-minutes it may use at once" + _WHEN_FREE,
       _QUOTA),
    _r("AssocMaxGRESPerJob", _Q, "it asks for more GPUs than one job of your account may use" + _NEVER,
       _RESUBMIT, stuck=True),
    _r("AssocMaxGRESPerNode", _Q, "it asks for more GPUs per node than your account allows" + _NEVER,
       _RESUBMIT, stuck=True),
    _r("QOSGrpGRES", _Q,
       "waiting for GPU quota: jobs of its QOS hold all the GPUs the QOS allows" + _WHEN_FREE, _QUOTA),
    _r("QOSMaxGRESPerUser", _Q,
       "waiting for GPU quota: your other jobs hold all the GPUs the QOS allows one user" + _WHEN_FREE,
       _QUOTA),
    _r("QOSMaxGRESPerJob", _Q, "it asks for more GPUs than one job of its QOS may use" + _NEVER,
       _RESUBMIT, stuck=True),
    # other common limits
    _r("AssocGrpCpuLimit", _Q,
       "waiting for CPU quota: your account's running jobs hold all the CPUs it may use" + _WHEN_FREE,
       _QUOTA),
    _r("QOSMaxJobsPerUserLimit", _Q, "you already run as many jobs as the QOS allows one user" + _WHEN_FREE),
    _r("AssocMaxJobsLimit", _Q, "you already run as many jobs as your account allows" + _WHEN_FREE),
    _r("AssocGrpJobsLimit", _Q, "your account already runs as many jobs as allowed" + _WHEN_FREE),
    _r("QOSGrpJobsLimit", _Q, "its QOS already runs as many jobs as allowed" + _WHEN_FREE),
    _r("AccountingPolicy", _Q, "an accounting limit (quota) holds it back", _QUOTA),
    _r("AssociationJobLimit", _Q, "your account has reached its job limit"),
    _r("AssociationResourceLimit", _Q, "your account has reached a resource limit", _QUOTA),
    _r("AssociationTimeLimit", _Q, "your account has reached its time limit", _QUOTA, stuck=True),
    _r("QOSJobLimit", _Q, "its QOS has reached its job limit"),
    _r("QOSResourceLimit", _Q, "its QOS has reached a resource limit", _QUOTA),
    _r("QOSTimeLimit", _Q, "its QOS has reached its time limit", stuck=True),
    _r("QOSUsageThreshold", _Q, "its QOS usage is above the threshold that lets jobs start"),
)
# fmt: on
_TABLE = {reason.code.lower(): reason for reason in _KNOWN}

# The accounting-limit grammar: (Assoc|QOS)(Grp|Max|Min)<resource>[PerJob|PerNode|PerUser][Minutes…][Limit]
_LIMIT = re.compile(
    r"(?P<who>Assoc|QOS)(?P<kind>Grp|Max|Min)(?P<what>[A-Za-z]+?)"
    r"(?P<scope>MinutesPerJob|PerJob|PerNode|PerUser|PerAccount|RunMinutes|Minutes|NotSatisfied)?(?:Limit)?"
)
_PER_ACCOUNT = re.compile(r"Max(?P<what>[A-Za-z]+?)PerAccount")
_RESOURCE_WORDS = {
    "cpu": "CPU",
    "cpus": "CPU",
    "mem": "memory",
    "memory": "memory",
    "node": "node",
    "gres": "GPU (GRES)",
    "jobs": "running-job",
    "job": "running-job",
    "submitjob": "queued-job",
    "submitjobs": "queued-job",
    "wall": "wall-time",
    "wallduration": "wall-time",
    "energy": "energy",
    "license": "license",
    "bb": "burst-buffer",
    "billing": "billing",
    "unknown": "resource",
}


def _from_grammar(code: str) -> PendingReason | None:
    per_account = _PER_ACCOUNT.fullmatch(code)
    if per_account is not None:
        what = _RESOURCE_WORDS.get(per_account["what"].lower(), per_account["what"])
        text = f"your account's jobs in this QOS use all the {what} quota it allows per account"
        return _r(code, _Q, text + _WHEN_FREE, _QUOTA)
    match = _LIMIT.fullmatch(code)
    if match is None:
        return None
    who = "your account" if match["who"] == "Assoc" else "its QOS"
    what = _RESOURCE_WORDS.get(match["what"].lower(), match["what"])
    kind, scope = match["kind"], match["scope"] or ""
    if kind == "Min":
        text = f"it asks for less {what} than {who} requires" + _NEVER
        return _r(code, _Q, text, "submit it again with a larger request", stuck=True)
    if kind == "Grp" and scope == "Minutes":
        text = f"{who} has used up its {what}-minutes budget; it will not start until the budget is raised"
        return _r(code, _Q, text, _QUOTA, stuck=True)
    if kind == "Grp" and scope == "RunMinutes":
        text = f"running jobs of {who} have reserved all the {what}-minutes it may use at once"
        return _r(code, _Q, text + _WHEN_FREE, _QUOTA)
    if kind == "Grp":
        return _r(code, _Q, f"waiting for {what} quota: jobs of {who} use all it allows" + _WHEN_FREE, _QUOTA)
    if scope in ("PerUser", "PerAccount", ""):
        return _r(code, _Q, f"your other jobs use all the {what} quota {who} allows" + _WHEN_FREE, _QUOTA)
    # this job alone is over a cap: it can never start as it is
    if scope == "PerNode":
        text = f"it asks for more {what} per node than {who} allows"
    elif scope == "MinutesPerJob":
        text = f"it asks for more {what}-minutes (amount × time limit) than {who} allows one job"
    else:
        text = f"it asks for more {what} than {who} allows one job"
    return _r(code, _Q, text + _NEVER, _RESUBMIT, stuck=True)


def parse_reason(text: str) -> PendingReason | None:
    """squeue's ``%r`` (or sacct's ``Reason``) → PendingReason; ``None``/empty → None.

    Accepts the forms the tools print: ``AssocGrpGRES``, ``(Resources)``,
    ``ReqNodeNotAvail, UnavailableNodes:node1``, ``launch failed requeued held``.
    """
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    if text.lower() in ("", "none", "null", "(null)"):
        return None
    known = _TABLE.get(text.lower())
    if known is not None:
        return known
    code, _, detail = text.partition(",")
    code, detail = code.strip(), detail.strip()
    known = _TABLE.get(code.lower()) or _from_grammar(code)
    if known is None:
        log.info("no explanation for Slurm pending reason %r", text)
        return PendingReason(code, _O, f"Slurm gives the reason {code}", detail=detail)
    return replace(known, detail=detail) if detail else known
