"""Bound MultiWorkerMirroredStrategy's cluster formation and name who is missing.

By default a worker whose peer never starts waits an hour inside the strategy's
constructor (coordination agent register timeout). TF's coordination service can bound
it, but only with ``cluster_register_with_barrier`` set, which
``configure_coordination_service()`` has no parameter for (lab notes §2d). So, just
before the strategy sets up its multi-worker runtime, this configures the service the
way the strategy would (same jobs, same leader) plus the timeout and the barrier flag,
unless the user configured it already. Whatever TensorFlow then raises is turned into
one sentence naming each worker that never joined, its Slurm node and its address.

A C-level faulthandler watchdog (timeout + 60 s) backs this up: a Python thread cannot
fire while the constructor blocks in C++ holding the GIL; faulthandler can.
"""

from __future__ import annotations

import faulthandler
import importlib
import re
import socket
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._errors import RuntimeSetupError

if TYPE_CHECKING:
    from .hook_config import HookConfig

STRATEGY_MODULE = "tensorflow.python.distribute.collective_all_reduce_strategy"

WATCHDOG_MARGIN_S = 60

_TASK_NAME = re.compile(r"/job:worker/replica:\d+/task:(\d+)")


def apply(module: ModuleType, *, config: HookConfig) -> None:
    """Wrap the strategy's multi-worker set-up (a post-import hook)."""
    extended = getattr(module, "CollectiveAllReduceExtended", None)
    original = getattr(extended, "_initialize_multi_worker", None)
    if extended is None or original is None:
        print(
            "hpc-tf: this TensorFlow has no CollectiveAllReduceExtended._initialize_multi_worker; "
            "cluster formation is not bounded by hpc-tf",
            file=sys.stderr,
        )
        return

    def _initialize_multi_worker(self: Any, cluster_resolver: Any) -> Any:
        try:
            _configure_coordination(module, cluster_resolver, config.coordination_timeout_s)
        except Exception as err:  # another TF version's internals: keep training, bounded by the watchdog
            print(
                f"hpc-tf: cannot configure TF's coordination service ({err!r}); "
                f"only the watchdog bounds cluster formation",
                file=sys.stderr,
            )
        faulthandler.dump_traceback_later(config.coordination_timeout_s + WATCHDOG_MARGIN_S, exit=True)
        try:
            return original(self, cluster_resolver)
        except Exception as err:
            if not _is_formation_error(err):
                raise
            workers = list(cluster_resolver.cluster_spec().as_dict().get("worker", []))
            raise RuntimeSetupError(
                formation_failure_message(
                    str(err),
                    workers=workers,
                    nodes=config.worker_nodes,
                    own_index=int(cluster_resolver.task_id),
                    timeout_s=config.coordination_timeout_s,
                ),
                hint="see that rank's output for why it did not start; if workers only start slowly, "
                "raise the job's coordination timeout",
            ) from err
        finally:
            faulthandler.cancel_dump_traceback_later()

    extended._initialize_multi_worker = _initialize_multi_worker


def _configure_coordination(module: ModuleType, cluster_resolver: Any, timeout_s: int) -> None:
    context = module.context.context()
    if context.coordination_service is not None:
        return  # the user configured it; theirs wins
    cluster_spec = cluster_resolver.cluster_spec()
    if cluster_resolver.task_type not in ("chief", "worker"):
        return
    config_pb2 = module.coordination_config_pb2
    jobs = [
        config_pb2.CoordinatedJob(name=job, num_tasks=cluster_spec.num_tasks(job))
        for job in ("chief", "worker")
        if job in cluster_spec.jobs
    ]
    context.configure_coordination_service(
        service_type="standalone",
        service_leader=module.multi_worker_util.coordination_leader(cluster_spec),
        coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=timeout_s * 1000,
    )
    # Without the barrier flag the register timeout has no effect (lab notes §2d).
    service: Any = context.coordination_service
    service.cluster_register_with_barrier = True


def _is_formation_error(err: Exception) -> bool:
    errors = importlib.import_module("tensorflow.python.framework.errors_impl")
    return isinstance(err, (errors.DeadlineExceededError, errors.UnavailableError))


def formation_failure_message(
    tf_message: str, *, workers: Sequence[str], nodes: Sequence[str], own_index: int, timeout_s: int
) -> str:
    """One sentence naming the workers that never joined (from TF's message, else by probing)."""
    missing = _stragglers(tf_message)
    if not missing:
        missing = [
            index for index, address in enumerate(workers) if index != own_index and not _listening(address)
        ]
    head = f"the TensorFlow cluster did not form within {timeout_s} s"
    if not missing:
        return f"{head} (worker {own_index}); TensorFlow said: {tf_message.strip().splitlines()[0]}"
    described = "; ".join(_describe(index, workers, nodes) for index in missing)
    return f"{head}: {described} never joined"


def _stragglers(tf_message: str) -> list[int]:
    """The leader's barrier error lists the missing tasks, one per line, after "timed out task names:"."""
    _, found, rest = tf_message.partition("timed out task names:")
    missing: set[int] = set()
    for line in rest.splitlines()[1:] if found else []:
        match = _TASK_NAME.fullmatch(line.strip())
        if match is None:
            break  # the list ends; what follows (gRPC details) names other tasks
        missing.add(int(match.group(1)))
    return sorted(missing)


def _describe(index: int, workers: Sequence[str], nodes: Sequence[str]) -> str:
    node = nodes[index] if index < len(nodes) else "?"
    address = workers[index] if index < len(workers) else "?"
    return f"worker {index} (Slurm rank {index} on host {node}, address {address})"


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False
