"""Campaigns: parameter sweeps as Slurm job arrays, pipelines of stages wired with dependencies.

    campaign.yaml ─load─▶ CampaignSpec + each stage's JobSpec      (model, load)
    parameters ─expand─▶ tasks with stable ids                      (expand)
    (campaign, site, MaxArraySize, GPU quota) ─plan─▶ CampaignPlan  (plan, throttle: pure)
    CampaignPlan ─submit─▶ campaign dir + one sbatch per array chunk (submit) ─▶ manifest.json
    manifest ─one batched query─▶ states, failures, blocked tasks   (status)

On the node, an array task's parameters come from ``tasks/<id>/task.json`` (node_task.py, stdlib
only). :mod:`hpc.campaign.api` holds the one call each CLI command makes. Importing runs nothing.
"""

from __future__ import annotations

from hpc.campaign.api import find_campaign, max_array_size, plan_from_file, run, status
from hpc.campaign.load import LoadedCampaign, load_campaign
from hpc.campaign.manifest import Manifest, read_manifest
from hpc.campaign.model import CampaignSpec
from hpc.campaign.paths import CampaignPaths
from hpc.campaign.plan import CampaignPlan, plan_campaign
from hpc.campaign.status import CampaignView
from hpc.campaign.submit import cancel_campaign, resubmit_failed, submit_campaign
from hpc.campaign.throttle import GpuLimit, quota_gpu_limit

__all__ = [
    "CampaignPaths",
    "CampaignPlan",
    "CampaignSpec",
    "CampaignView",
    "GpuLimit",
    "LoadedCampaign",
    "Manifest",
    "cancel_campaign",
    "find_campaign",
    "load_campaign",
    "max_array_size",
    "plan_campaign",
    "plan_from_file",
    "quota_gpu_limit",
    "read_manifest",
    "resubmit_failed",
    "run",
    "status",
    "submit_campaign",
]
