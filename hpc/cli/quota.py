"""``hpc-tf quota``: GPU limits and their use, from Slurm's gres/gpu accounting."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from hpc.cli.console import err, out
from hpc.cli.options import JsonOpt, SetOpt, SiteOpt, print_json
from hpc.quota import QuotaReport, StoredAnswers, current_user, quota_report
from hpc.quota.report import LimitRow
from hpc.site.load import load_site


def quota(
    account: str | None = typer.Option(None, "--account", "-A", metavar="ACCOUNT",
                                       help="Only this account's associations."),
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Your GPU limits (association path and QOS) next to the GPUs and GPU-minutes in use now."""
    config = load_site(site, set_ or ()).config
    if config.launcher != "slurm":  # nothing to ask: no Slurm command runs
        note = (f"site '{config.name}' uses the {config.launcher} launcher: it has no GPU quota (its jobs share this "
                "machine's GPUs); a cluster's quota: hpc-tf quota --site NAME")
        if as_json:
            print_json({"site": config.name, "launcher": config.launcher, "quota": None, "note": note})
        else:
            typer.echo(note)
        return
    # always asks slurmdbd, and leaves its answers for the next launch
    report = quota_report(account, stored=StoredAnswers.for_user(current_user(), reuse=False))
    for warning in report.warnings:
        err().print(Text.assemble(("warning:", "yellow"), f" {warning}"), soft_wrap=True)
    if as_json:
        print_json(report.to_dict())
        return
    render(report)


def _in_use(row: LimitRow) -> str:
    limit = row.limit
    if limit.kind.per_job or limit.used is None:
        return "-"
    if limit.kind.in_minutes:
        text = f"{limit.used} used, {limit.remaining} left" if limit.kind.value == "GrpTRESMins" else f"{limit.used}"
    else:
        text = str(limit.used)
    if row.running:
        text += " (" + ", ".join(str(j.job_id) for j in row.running) + ")"
    return text


def _pending(row: LimitRow) -> str:
    if row.limit.kind.per_job or not row.pending:
        return "-"
    return f"{row.pending_gpus} ({', '.join(str(j.job_id) for j in row.pending)})"


def _table(rows: tuple[LimitRow, ...]) -> Table:
    table = Table("limit", "set on", "allows", "in use", "pending", "reason when reached", box=None)
    for row in rows:
        limit = row.limit
        unit = "GPU-min" if limit.kind.in_minutes else "GPUs"
        table.add_row(
            f"{limit.kind.value} {limit.tres}", str(limit.owner), f"{limit.value} {unit}", _in_use(row),
            _pending(row), limit.reason,
        )  # fmt: skip
    return table


def render(report: QuotaReport) -> None:
    out().print(f"GPU quota of {report.user} on cluster {report.cluster}", style="bold")
    for assoc in report.associations:
        qos = ", ".join(assoc.qos) if assoc.qos is not None else "not known"
        head = Text.assemble("\naccount ", (assoc.account, "bold"), " (default)" if assoc.is_default else "")
        head.append(f"{f', partition {assoc.partition}' if assoc.partition else ''} · QOS {qos}")
        head.append(f" (default {assoc.job_qos})" if assoc.job_qos else "")
        out().print(head)
        path = Table("  association (up to the root)", "GPUs in use", "GPU-min used", box=None)
        for node in assoc.path:
            path.add_row(f"  {node.owner}", str(node.gpus_in_use), str(node.gpu_minutes_used))
        out().print(path)
        if assoc.limits:
            out().print(_table(assoc.limits))
        else:
            out().print("  no GPU limits on this path")
    for qos_quota in report.qos:
        flags = f" (flags {', '.join(qos_quota.flags)})" if qos_quota.flags else ""
        out().print(Text.assemble("\nQOS ", (qos_quota.name, "bold"), flags))
        out().print(_table(qos_quota.limits) if qos_quota.limits else "  no GPU limits")
    if report.jobs:
        out().print("\nGPU jobs in your accounts")
        jobs = Table("job", "user", "account", "qos", "state", "gpus", "reason", box=None)
        for job in report.jobs:
            reason = job.reason if job.state.is_waiting else ""
            cells = (str(job.job_id), job.user, job.account, job.qos, job.state.value, str(job.gpus), reason)
            jobs.add_row(*cells)
        out().print(jobs)
