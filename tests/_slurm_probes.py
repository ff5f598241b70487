"""Slurm calls only the cluster tests make (not part of the scheduler interface hpc-tf ships)."""

from __future__ import annotations

from hpc.scheduler import SlurmCli, commands
from hpc.scheduler.parse import Diagnostics, parse_scontrol_show_job, parse_sdiag


def show_job(cli: SlurmCli, job_id: str) -> list[dict[str, str]]:
    """``scontrol show job -o``: the controller's full record (one per array record)."""
    return parse_scontrol_show_job(cli.run(commands.scontrol_show_job(job_id)).stdout)


def diagnostics(cli: SlurmCli) -> Diagnostics:
    """``sdiag``: controller RPC counters, e.g. to prove a status call costs one query."""
    return parse_sdiag(cli.run(commands.sdiag()).stdout)
