"""``hpc-tf serve up|down|status``: the Triton serving node of the site's model repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from hpc.cli.console import err
from hpc.cli.options import JsonOpt, SetOpt, SiteOpt, plain_typer, print_json
from hpc.serving.canary import (
    DEFAULT_MAX_ERROR_RATE,
    DEFAULT_MIN_REQUESTS,
    DEFAULT_STEP_TIME,
    DEFAULT_STEPS,
    canary_settings,
)

serve_app = plain_typer(help="Start, stop and inspect the Triton serving node.", no_args_is_help=True)

RepoOpt = Annotated[
    Path | None,
    typer.Option("--repository", "-r", metavar="DIR",
                 help="Model repository (default: the site's serving.model_repository)."),
]


@serve_app.command("up", short_help="Start the serving node (local, or a Slurm job).")
def up(
    repository: RepoOpt = None,
    host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS", help="Address a local server listens on."),
    slurm: bool | None = typer.Option(
        None, "--slurm/--local", show_default=False,
        help="Run the node as a Slurm job on the site's serving partition, or as a local process "
             "(default: Slurm on a Slurm site that sets serving.partition, else local)."),
    time_limit: str | None = typer.Option(None, "--time", metavar="TIME",
                                          help="Time limit of the serving-node job (default: site's)."),
    inference_token: bool | None = typer.Option(
        None, "--inference-token/--open-inference", show_default=False,
        help="Answer inference only with the owner's inference token, or to anyone who reaches the node "
             "(default: the site's serving.inference_token). Model control always needs the owner's key."),
    router: bool = typer.Option(
        False, "--router",
        help="Start the service: the router in front of the node (the node kept if it already runs), both as "
             "Slurm jobs or both local. It routes by the splits recorded in serving.json."),
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Start a Triton serving node (the tritonserver bundled in nvidia-pytriton); it loads the versions
    recorded as serving before it registers. Print its endpoint (with --json: the endpoint record, host,
    ports, pid, job id, what was restored; with --router also the router's, under "router")."""
    from hpc.serving.service import serve_up

    def submitted(job_id: str, script: Path) -> None:
        what = "router" if script.name == "router.sbatch" else "serving-node"
        err().print(Text.assemble(f"submitted {what} job ", (job_id, "bold"),
                                  f" ({script}); waiting until it is ready"))

    up = serve_up(site, set_ or (), repository, slurm=slurm, host=host, time_limit=time_limit,
                  inference_token=inference_token, on_submitted=submitted, router=router)
    endpoint = up.endpoint
    if up.readers:
        typer.echo(f"hpc-tf: warning: {up.readers} other user(s) have processes on this host and can read "
                   "tritonserver's command line, which holds the node's control secret (/proc has no hidepid): "
                   "on a shared login node, run the serving node as a Slurm job (hpc-tf serve up --slurm)", err=True)
    for line in endpoint.restored_lines():
        typer.echo(f"hpc-tf: {line}", err=True)
    from hpc.serving.config import backend_formats

    for backend, why in endpoint.missing_backends.items():
        typer.echo(f"hpc-tf: note: format {backend_formats(backend)} cannot serve on this node, it has no {backend} "
                   f"backend: {why}", err=True)
    if as_json:
        print_json({**endpoint.to_dict(), **({"router": up.router.to_dict()} if up.router is not None else {})})
    else:
        typer.echo(f"serving node {'already ' if up.reused else ''}up: grpc {endpoint.grpc_url}, "
                   f"http {endpoint.http_url}, {up.where}")
        if up.router is not None:
            where = f"job {up.router.job_id} on {up.router.hostname}" if up.router.job_id else f"pid {up.router.pid}"
            typer.echo(f"router up: grpc {up.router.grpc_url}, http {up.router.http_url}, {where}")
    from hpc.serving import secret

    if secret.load(Path(endpoint.repository)).inference is not None:
        typer.echo(f"inference needs the token: header {secret.INFERENCE_HEADER} (gRPC "
                   f"{secret.GRPC_HEADER_PREFIX}{secret.INFERENCE_HEADER}), value 'inference' in "
                   f"{secret.key_file(Path(endpoint.repository))}", err=True)


@serve_app.command("node", hidden=True)
def node(
    repository: Annotated[Path, typer.Option("--repository", "-r", metavar="DIR", help="Model repository to serve.")],
    host: str | None = typer.Option(None, "--host", help="Listen address (default: this node's address)."),
    replica: str | None = typer.Option(None, "--replica", metavar="NAME",
                                       help="Run as the router's replica NAME (its own endpoint file)."),
) -> None:
    """Inside a serving-node job: run tritonserver on this node until the job is cancelled."""
    from hpc.serving.slurm_node import run_node

    raise typer.Exit(run_node(repository, host, replica))


@serve_app.command("router-node", hidden=True)
def router_node(
    repository: Annotated[Path, typer.Option("--repository", "-r", metavar="DIR", help="Model repository.")],
    host: str | None = typer.Option(None, "--host", help="Listen address (default: in a job, this node's address)."),
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Inside the router's job (or its local process from serve up --router): route until signalled."""
    from hpc.serving.router.service import run_router_service

    raise typer.Exit(run_router_service(repository, host, site, set_ or ()))


@serve_app.command("down", short_help="Stop the serving node (and the router).")
def down(repository: RepoOpt = None, site: SiteOpt = None, set_: SetOpt = None) -> None:
    """Stop the repository's router, if it has one, then its serving node: cancel their Slurm jobs, or stop
    the local processes by their pids. What was serving stays recorded: serve up loads it again."""
    from hpc.serving.service import serve_down

    stopped = serve_down(site, set_ or (), repository)
    for what, endpoint in (("router", stopped.router), ("serving node", stopped.node)):
        if endpoint is not None:
            err().print(f"{what} stopped (Slurm job {endpoint.job_id} cancelled)" if endpoint.job_id is not None
                        else f"{what} stopped (pid {endpoint.pid})")


@serve_app.command("status", short_help="Node health and every model version's state.")
def status(repository: RepoOpt = None, as_json: JsonOpt = False, site: SiteOpt = None, set_: SetOpt = None) -> None:
    """Health of the serving node and the state of every model version."""
    from hpc.serving.service import node_status, serving_target

    info = node_status(serving_target(site, set_ or (), repository).repository)
    if as_json:
        print_json(info)
        return
    endpoint = info["endpoint"]
    if endpoint is not None:
        typer.echo(f"serving node {endpoint['grpc_url']} (pid {endpoint['pid']} on {endpoint['hostname']}): "
                   f"{'ready' if info['ready'] else 'NOT READY'}")
    for line in ("error", "recorded_error"):
        if line in info:
            typer.echo(info[line], err=True)  # one line, however narrow the terminal
    for model in info["models"]:
        reason = f"  {model['reason']}" if model["reason"] else ""
        typer.echo(f"  {model['name']}  v{model['version'] or '-'}  {model['state']}{reason}")
    if info["recorded"]:
        typer.echo("recorded as serving (every node that starts loads these):")
    for entry in info["recorded"]:
        problem = "" if entry["state"] == "READY" else f"  {entry['state']}: {entry['reason']}"
        typer.echo(f"  {entry['model']}  v{entry['version']}  by {entry['by']} {entry['updated']}{problem}")
    for line in info["canaries"]:
        typer.echo(line)
    for gone in info["rolled_back"]:
        typer.echo(f"  {gone['model']}  v{gone['version']} was rolled back, not served: its hand-off failed at "
                   f"stage '{gone['failed_stage']}' (record {gone['record']})")
    if "router" in info:
        from hpc.serving.router.service import router_lines

        router = info["router"]
        if "error" in router:
            typer.echo(router["error"], err=True)
        else:
            where = (f"job {router['endpoint']['job_id']}" if router["endpoint"]["job_id"]
                     else f"pid {router['endpoint']['pid']}")
            typer.echo(f"router {router['endpoint']['http_url']} grpc {router['endpoint']['grpc_url']} ({where} on "
                       f"{router['endpoint']['hostname']}):")
            for line in router_lines(router):
                typer.echo(line)


@serve_app.command("predict", short_help="A served prediction beside the trained model's.")
def predict(
    model: Annotated[str, typer.Argument(help="Model name in the repository.", show_default=False)],
    rows: int = typer.Option(1, "--rows", min=1, metavar="N", help="How many of the model's parity samples to send."),
    repository: RepoOpt = None,
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Ask the serving node for a prediction on the model's parity samples; show it beside the trained model's."""
    from hpc.serving.predict import predict_samples
    from hpc.serving.service import serving_target

    answer = predict_samples(serving_target(site, set_ or (), repository).repository, model, rows)
    if as_json:
        print_json(answer.to_dict())
        return
    typer.echo(f"{answer.model} version {answer.version} at {answer.server}:")
    for label, arrays in (("input", answer.inputs), ("served by Triton", answer.served),
                          ("trained model", answer.trained)):
        for name, array in arrays.items():
            typer.echo(f"  {label:<17} {name} = {_short(array)}")
    same = "identical" if answer.max_abs_diff == 0 else f"max |difference| {answer.max_abs_diff:g}"
    typer.echo(f"  parity: {same}")


def _short(array: object, limit: int = 6) -> str:
    """A few values of an array, rounded, for a terminal line."""
    import numpy as np

    values = np.asarray(array).reshape(-1)
    shown = ", ".join(f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v) for v in values[:limit])
    return f"[{shown}{', ...' if values.size > limit else ''}] (shape {list(np.asarray(array).shape)})"


@serve_app.command("router", short_help="Run the router in front of the replicas (foreground).")
def router(
    repository: RepoOpt = None,
    replicas: Annotated[list[str] | None, typer.Option(
        "--replica", metavar="HOST:HTTP:GRPC",
        help="A Triton replica (repeat for more; default: the repository's serving node).")] = None,
    host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS", help="Address the router listens on."),
    http_port: int = typer.Option(0, "--http-port", min=0, max=65535, help="HTTP port (default: a free one)."),
    grpc_port: int = typer.Option(0, "--grpc-port", min=0, max=65535, help="gRPC port (default: a free one)."),
    count: int | None = typer.Option(
        None, "--replicas", min=0, metavar="N",
        help="Keep N Triton replicas it starts itself (Slurm jobs on the site's serving partition, else local "
             "processes); recorded, so a router started again keeps N (default: the recorded count, if any)."),
    replica_time: str | None = typer.Option(None, "--replica-time", metavar="TIME",
                                            help="Time limit of each replica's Slurm job (default: site's)."),
    margin: float | None = typer.Option(
        None, "--replace-margin", min=0, metavar="SECONDS", show_default=False,
        help="Start a replacement for a replica job with less time left than this (it drains once the "
             "replacement takes traffic; default: 3 minutes)."),
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """One endpoint (HTTP and gRPC) for the repository's replicas: least-outstanding requests among healthy
    ones, traffic splits (hpc-tf serve split), Prometheus /metrics. Runs until SIGTERM or Ctrl-C; its
    endpoint is in <repository>/.hpc-tf/router.json."""
    from hpc.serving.router.run import run_router
    from hpc.serving.router.service import router_targets
    from hpc.serving.service import serving_target
    from hpc.serving.state import update_state

    repo = serving_target(site, set_ or (), repository).repository
    if count is not None:
        update_state(repo, lambda state: state.with_service(count))
    pool, replicas_by = router_targets(repo, replicas or (), site, set_ or (), replica_time, margin)
    raise typer.Exit(run_router(repo, pool, host=host, ports=(http_port, grpc_port), replicas_by=replicas_by))


@serve_app.command("scale", short_help="Set how many Triton replicas the router keeps.")
def scale(
    count: int = typer.Option(..., "--replicas", min=0, metavar="N", help="The number of replicas to keep."),
    repository: RepoOpt = None,
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Scale the repository's service to N replicas (the owner only): new ones take traffic once ready, with
    the recorded versions loaded and the parity check passed; removed ones drain before they stop."""
    from hpc.serving.router.client import scale as scale_call
    from hpc.serving.service import serving_target

    repo = serving_target(site, set_ or (), repository).repository
    state = scale_call(repo, count)
    if as_json:
        print_json(state)
        return
    typer.echo(f"replicas: {count} wanted, {len(state['managed'])} managed"
               + (f"; refused: {state['refused']}" if state["refused"] else ""))
    if state.get("autoscale"):
        bounds = state["autoscale"]
        typer.echo(f"note: autoscaling is on: its next decision sets the count again, between "
                   f"{bounds['min_replicas']} and {bounds['max_replicas']} (serving.autoscale.min_replicas and "
                   "max_replicas in the site config; restart the router to change them)")


@serve_app.command("split", short_help="Split a public model name's traffic between models or versions.")
def split(
    name: Annotated[str, typer.Argument(help="The model name clients use.", show_default=False)],
    variants: Annotated[list[str], typer.Argument(metavar="MODEL[:VERSION]=WEIGHT...", show_default=False,
                                                  help="Where its requests go, e.g. mlp:1=90 mlp:2=10.")],
    sticky_header: str | None = typer.Option(None, "--sticky-header", metavar="HEADER",
                                             help="Requests with the same value of this header go to one variant."),
    repository: RepoOpt = None,
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Set the traffic split of NAME on the repository's router (the owner only)."""
    from hpc.serving.router.client import set_split
    from hpc.serving.router.split import variant_from_spec
    from hpc.serving.service import serving_target

    repo = serving_target(site, set_ or (), repository).repository
    state = set_split(repo, name, {"variants": [variant_from_spec(v) for v in variants],
                                   "sticky_header": sticky_header})
    if as_json:
        print_json(state["splits"][name])
        return
    shares = ", ".join(f"{v['model']}:{v['version'] or 'served'} {v['weight']}"
                       for v in state["splits"][name]["variants"])
    typer.echo(f"{name}: {shares}" + (f" (sticky by {sticky_header})" if sticky_header else ""))


@serve_app.command("canary", short_help="Roll a new version out in steps, rolled back when a gate fails.")
def canary(
    model: Annotated[str, typer.Argument(help="The model (serving one version now).", show_default=False)],
    version: Annotated[int, typer.Argument(help="The new version (published by a hand-off).", show_default=False)],
    steps: str = typer.Option(DEFAULT_STEPS, "--steps", metavar="P,P,...",
                              help="Percent of the model's requests the new version takes at each step."),
    step_time: str = typer.Option(DEFAULT_STEP_TIME, "--step-time", metavar="DURATION",
                                  help="How long each step lasts."),
    max_error_rate: str = typer.Option(DEFAULT_MAX_ERROR_RATE, "--max-error-rate", metavar="RATE",
                                       help="Gate: the new version's error rate in a step at most this."),
    max_p99_ms: float | None = typer.Option(None, "--max-p99-ms", metavar="MS",
                                            help="Gate: the new version's p99 latency in a step at most this."),
    min_requests: int = typer.Option(DEFAULT_MIN_REQUESTS, "--min-requests", metavar="N",
                                     help="Requests the new version must answer in a step to judge it."),
    repository: RepoOpt = None,
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Start a canary of MODEL VERSION in the repository's router (the owner only): the router moves traffic
    step by step and, when a gate fails, back to the version serving now, by itself. hpc-tf serve status
    follows it."""
    from hpc.serving.router.client import start_canary
    from hpc.serving.service import serving_target

    repo = serving_target(site, set_ or (), repository).repository
    started = start_canary(repo, model, {**canary_settings(steps, step_time, max_error_rate, max_p99_ms,
                                                           min_requests), "version": version})
    if as_json:
        print_json(started)
        return
    typer.echo(f"canary {model} v{started['old']} -> v{started['new']} started: steps "
               f"{','.join(map(str, started['steps']))} % every {started['step_s']:g} s "
               "(hpc-tf serve status follows it)")


@serve_app.command("bench", short_help="A short load test: throughput and latency percentiles.")
def bench(
    model: Annotated[str, typer.Argument(help="Model name clients use (a model, or a split's name).",
                                         show_default=False)],
    concurrency: str = typer.Option("1,8", "--concurrency", metavar="N,N,...",
                                    help="Concurrent clients, measured one count after the other."),
    duration: str = typer.Option("10s", "--duration", metavar="DURATION", help="How long each count is measured."),
    protocol: str = typer.Option("grpc", "--protocol", metavar="grpc|http", help="The protocol to measure."),
    batch: int = typer.Option(1, "--batch", min=1, metavar="N", help="Rows in each request."),
    max_requests: int = typer.Option(100_000, "--max-requests", min=1, metavar="N",
                                     help="At most this many requests per count."),
    url: str | None = typer.Option(None, "--url", metavar="HOST:PORT",
                                   help="Measure this endpoint (default: the router if one is registered, else "
                                        "the serving node)."),
    repository: RepoOpt = None,
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Closed-loop load on MODEL: N clients each send the next request when the previous one answered. Prints
    throughput, p50/p90/p99 latency and failed requests per concurrency, and which endpoint it measured.
    Inputs: the newest hand-off's samples, else random data of the model's input shapes. Ctrl-C stops it and
    prints what it measured."""
    from hpc.serving.loadtest import bench_settings, report_lines, run_bench
    from hpc.serving.service import serving_target

    settings = bench_settings(concurrency, duration, protocol, batch, max_requests)
    repo = serving_target(site, set_ or (), repository).repository
    report = run_bench(repo, model, settings, url)
    if as_json:
        print_json(report.to_dict())
    else:
        for line in report_lines(report):
            typer.echo(line)
    if report.interrupted:
        raise typer.Exit(130)  # the shell's code for Ctrl-C, after what was measured is printed
