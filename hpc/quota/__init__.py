"""GPU quota from Slurm's gres/gpu accounting: see it, check a job against it, explain waits.

* :func:`quota_report` — every GPU limit on the user's path (user → account → parents, and the QOS)
  with its live use: ``hpc-tf quota``.
* :func:`preflight` / :func:`check_launch` — before ``sbatch``: never fits (refuse, exit 3), must
  wait (warn, name the jobs holding the GPUs and the pending reason Slurm will show), ok, or
  unknown (Slurm slow or down: warn and go on). A few calls, each with a short timeout; slurmdbd's
  answers are reused for a few minutes (:class:`StoredAnswers`).
* :func:`explain_waits` — ``hpc-tf status``: a job pending on a GPU limit, in a sentence with numbers.
* :func:`concurrent_gpus` / :func:`gpu_ceiling` — how many GPUs a user's jobs may hold at once
  (campaign array throttles).

Importing this package runs nothing.
"""

from __future__ import annotations

from hpc.quota.ceiling import concurrent_gpus
from hpc.quota.explain import QuotaSnapshot, explain_wait, explain_waits, quota_snapshot, waits_on_gpu_quota
from hpc.quota.facts import PREFLIGHT_BUDGET_S, PREFLIGHT_TIMEOUT_S, QuotaFacts, current_user, quick_cli
from hpc.quota.limits import GpuCeiling, gpu_ceiling, job_limits
from hpc.quota.model import GpuLimit, GpuRequest, LimitKind, Owner
from hpc.quota.preflight import QuotaVerdict, QuotaWarning, VerdictKind, check_launch, judge, notices, preflight
from hpc.quota.report import QuotaReport, quota_report
from hpc.quota.stored import StoredAnswers

__all__ = [
    "PREFLIGHT_BUDGET_S",
    "PREFLIGHT_TIMEOUT_S",
    "GpuCeiling",
    "GpuLimit",
    "GpuRequest",
    "LimitKind",
    "Owner",
    "QuotaFacts",
    "QuotaReport",
    "QuotaSnapshot",
    "QuotaVerdict",
    "QuotaWarning",
    "StoredAnswers",
    "VerdictKind",
    "check_launch",
    "concurrent_gpus",
    "current_user",
    "explain_wait",
    "explain_waits",
    "gpu_ceiling",
    "job_limits",
    "judge",
    "notices",
    "preflight",
    "quick_cli",
    "quota_report",
    "quota_snapshot",
    "waits_on_gpu_quota",
]
