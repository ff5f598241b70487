"""TF_CONFIG for MultiWorkerMirroredStrategy, in Slurm's rank order.

Worker r is rank r (``task.index`` = SLURM_PROCID), at the node where rank r runs
(``layout``), on a port that is

* per job: ``low + (job_id * stride + slot) mod size`` inside ``port_range``,
  with stride = the most tasks sharing one address, so jobs with consecutive ids
  and the same shape get disjoint port blocks on a shared node;
* distinct per task on an address: the slot is the task's place among the tasks at that
  address (its local rank when every node has its own address; consecutive across the
  emulated nodes of ``hpc-tf launch --site local``, which all share 127.0.0.1).

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
    hosts = [address_map.get(step.nodes[p.node_index], step.nodes[p.node_index]) for p in layout]
    # each task's slot among the tasks at its address, in (node, local rank) order
    slots: dict[int, int] = {}
    by_host: dict[str, list[int]] = {}
    for rank, host in enumerate(hosts):
        by_host.setdefault(host, []).append(rank)
    for ranks in by_host.values():
        for slot, rank in enumerate(sorted(ranks, key=lambda r: (layout[r].node_index, layout[r].local_rank))):
            slots[rank] = slot
    stride = max(len(ranks) for ranks in by_host.values())
    addresses = []
    for rank, host in enumerate(hosts):
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 literal
        port = task_port(job_id=step.job_id, local_rank=slots[rank], stride=stride, port_range=port_range)
        addresses.append(f"{host}:{port}")
    return addresses


def tf_config(workers: Sequence[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})
