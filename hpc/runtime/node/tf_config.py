"""TF_CONFIG for MultiWorkerMirroredStrategy, in Slurm's rank order.

Worker r is rank r (``task.index`` = SLURM_PROCID), at the node where rank r runs
(``layout``), on a port that is

* per job: ``low + (job_id * stride + local_rank) mod size`` inside ``port_range``,
  with stride = the most tasks any node of the step has, so jobs with consecutive ids
  and the same shape get disjoint port blocks on a shared node;
* distinct per task on a node (consecutive local ranks get consecutive ports).

A worker's address is its Slurm node name, which on a cluster is its hostname. Where
node names do not resolve to the right interface (tests on one machine, clusters whose
NodeName differs from the host's DNS name), ``HPC_TF_NODE_ADDRESS_MAP`` maps names to
addresses: ``"node1=10.0.0.1,node2=10.0.0.2"``; unmapped nodes keep their name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .layout import Placement
from .slurm_env import SlurmStep

ADDRESS_MAP_VARIABLE = "HPC_TF_NODE_ADDRESS_MAP"


def task_port(*, job_id: int, local_rank: int, stride: int, port_range: tuple[int, int]) -> int:
    low, high = port_range
    size = high - low + 1
    if stride > size:
        raise ValueError(f"{stride} tasks per node need {stride} ports; port range {low}-{high} has {size}")
    return low + (job_id * stride + local_rank) % size


def parse_address_map(text: str) -> dict[str, str]:
    """``"a=10.0.0.1, b=10.0.0.2"`` → ``{"a": "10.0.0.1", "b": "10.0.0.2"}``."""
    mapping: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        node, sep, address = (part.strip() for part in item.partition("="))
        if not sep or not node or not address:
            raise ValueError(f"{ADDRESS_MAP_VARIABLE}: expected node=address, got {item.strip()!r}")
        mapping[node] = address
    return mapping


def worker_addresses(
    step: SlurmStep,
    layout: Sequence[Placement],
    *,
    port_range: tuple[int, int],
    address_map: dict[str, str],
) -> list[str]:
    """``host:port`` of every rank, index = rank."""
    stride = max(step.tasks_per_node)
    addresses = []
    for placement in layout:
        node = step.nodes[placement.node_index]
        host = address_map.get(node, node)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 literal
        port = task_port(
            job_id=step.job_id, local_rank=placement.local_rank, stride=stride, port_range=port_range
        )
        addresses.append(f"{host}:{port}")
    return addresses


def tf_config(workers: Sequence[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})
