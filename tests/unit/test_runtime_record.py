"""Record: the equality, hashing and repr the runtime's plain classes have instead of dataclasses."""

from __future__ import annotations

import importlib
import json
import pkgutil

import hpc.runtime.node
from hpc.runtime.node.hook_config import HookConfig, MetricsConfig, PreemptionConfig
from hpc.runtime.node.layout import Placement
from hpc.runtime.node.record import Record


def test_records_compare_and_hash_by_value() -> None:
    assert Placement(1, 0) == Placement(node_index=1, local_rank=0)
    assert Placement(1, 0) != Placement(0, 1)
    assert len({Placement(1, 0), Placement(1, 0), Placement(0, 1)}) == 2
    config = PreemptionConfig("/c", None, 3, True)
    assert hash(HookConfig(5, True, ("n1",), config)) == hash(HookConfig(5, True, ("n1",), config))
    assert repr(Placement(1, 0)) == "Placement(local_rank=0, node_index=1)"


def test_a_record_is_a_dict_of_its_slots_and_hooks_travel_as_json_of_them() -> None:
    assert Placement(1, 0).to_dict() == {"local_rank": 0, "node_index": 1}
    config = PreemptionConfig("/c", None, 3, True)
    hooks = HookConfig(5, True, ("n1", "n2"), config, MetricsConfig("/run/metrics.jsonl", 10))
    wire = json.loads(hooks.to_json())
    assert wire == {"coordination_timeout_s": 5, "keras_mwms_fix": True, "worker_nodes": ["n1", "n2"],
                    "preemption": {"checkpoint_dir": "/c", "every_steps": None, "handle_signals": True, "keep": 3},
                    "metrics": {"path": "/run/metrics.jsonl", "every_steps": 10, "tensorboard": False}}
    assert HookConfig.from_json(hooks.to_json()) == hooks


def test_records_of_different_classes_are_never_equal() -> None:
    class Other(Record):
        __slots__ = ("local_rank", "node_index")

        def __init__(self, node_index: int, local_rank: int) -> None:
            self.node_index = node_index
            self.local_rank = local_rank

    assert Other(1, 0) != Placement(1, 0)
    assert Placement(1, 0) != (1, 0)


def test_every_record_names_its_own_slots() -> None:
    # without its own __slots__ a class would inherit Record's empty one: all its instances equal
    for info in pkgutil.walk_packages(hpc.runtime.node.__path__, "hpc.runtime.node."):
        importlib.import_module(info.name)
    records = Record.__subclasses__()
    assert {cls.__name__ for cls in records} >= {"RuntimeSettings", "SlurmStep", "TaskPlan", "HookConfig"}
    for cls in records:
        assert cls.__dict__.get("__slots__"), cls
