"""The runtime settings read from resolved.json (hpc.runtime.node.settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from hpc.errors import RuntimeSetupError
from hpc.resolve import RuntimePlan, resolve
from hpc.runtime.node.settings import RuntimeSettings, load_settings, settings_from_mapping
from hpc.site.load import load_site
from hpc.spec import load_spec_text
from hpc.spec.model import TFOptions


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "resolved.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_full_runtime_object_is_read(tmp_path: Path) -> None:
    runtime = {
        "gpus_per_task": 1,
        "gpus_per_node": 2,
        "port_range": [31000, 31999],
        "coordination_timeout_s": 45,
        "memory_growth": True,
        "gpu_allocator": "cuda_malloc_async",
        "strategy": "mirrored",
        "keras_mwms_fix": False,
        "gpu_binding": "node",
    }
    settings = load_settings(write(tmp_path, {"name": "job", "runtime": runtime}))
    assert settings == RuntimeSettings(
        gpus_per_task=1,
        gpus_per_node=2,
        port_range=(31000, 31999),
        coordination_timeout_s=45,
        memory_growth=True,
        gpu_allocator="cuda_malloc_async",
        strategy="mirrored",
        keras_mwms_fix=False,
        gpu_binding="node",
    )


def test_missing_keys_take_defaults_and_unknown_keys_are_ignored(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, {"runtime": {"gpus_per_node": 4, "added_in_a_later_version": [1]}})
    )
    assert settings == RuntimeSettings(gpus_per_node=4)
    assert load_settings(write(tmp_path, {"spec": {}})) == RuntimeSettings()
    assert RuntimeSettings().keras_mwms_fix is True


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gpus_per_task", True),
        ("gpus_per_task", -1),
        ("gpus_per_task", "2"),
        ("gpus_per_node", 1.5),
        ("port_range", [30000]),
        ("port_range", [30001, 30000]),
        ("port_range", [80, 90]),
        ("port_range", [30000, 70000]),
        ("port_range", [True, 30000]),
        ("coordination_timeout_s", 0),
        ("memory_growth", "yes"),
        ("gpu_allocator", ""),
        ("gpu_allocator", "a\nb"),
        ("strategy", "parameter_server"),
        ("gpu_binding", "socket"),
        ("keras_mwms_fix", 1),
    ],
)
def test_wrong_values_are_errors_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(RuntimeSetupError, match=rf"runtime\.{key}: expected"):
        settings_from_mapping({key: value})


def test_unreadable_files_are_setup_errors(tmp_path: Path) -> None:
    with pytest.raises(RuntimeSetupError, match="cannot read"):
        load_settings(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(RuntimeSetupError, match="not valid JSON"):
        load_settings(broken)
    with pytest.raises(RuntimeSetupError, match="not a JSON object"):
        load_settings(write(tmp_path, [1, 2]))
    with pytest.raises(RuntimeSetupError, match="runtime: expected an object"):
        load_settings(write(tmp_path, {"runtime": []}))


# ---------------------------------------------------------------- one declaration: spec, resolve, runtime

# decided by resolve from the resources and the run directory, not defaults
DERIVED = {"strategy", "gpus_per_task", "gpus_per_node", "checkpoint_dir"}


def test_resolve_writes_exactly_the_runtime_settings() -> None:
    assert set(RuntimePlan.model_fields) == set(RuntimeSettings.__slots__)


def test_a_spec_that_sets_nothing_reaches_the_node_with_the_runtimes_defaults() -> None:
    environ = {"HOME": "/home/alice", "USER": "alice"}
    spec = load_spec_text("name: d\ncommand: python t.py\n", "job.yaml", Path("/home/alice/d"))
    job = resolve(spec, load_site("sandbox", (), environ), "d-run", environ)
    written = json.loads(job.to_json())["runtime"]
    assert set(written) == set(RuntimeSettings.__slots__)
    read, defaults = settings_from_mapping(written), RuntimeSettings()
    differ = {name: (getattr(read, name), getattr(defaults, name)) for name in RuntimeSettings.__slots__
              if name not in DERIVED and getattr(read, name) != getattr(defaults, name)}
    assert differ == {}, "spec/resolve default vs the runtime's (hpc/runtime/node/settings.py)"


@pytest.mark.parametrize("ports", [(20000, 29999), (31000, 31000), (1024, 65535), (30001, 30000), (80, 90),
                                   (30000, 70000), (1023, 2000)])
def test_the_spec_accepts_exactly_the_port_ranges_the_runtime_reads(ports: tuple[int, int]) -> None:
    try:
        settings_from_mapping({"port_range": list(ports)})
        runtime_reads = True
    except RuntimeSetupError:
        runtime_reads = False
    try:
        TFOptions.model_validate({"port_range": list(ports)})
        spec_accepts = True
    except ValidationError:
        spec_accepts = False
    assert spec_accepts is runtime_reads
