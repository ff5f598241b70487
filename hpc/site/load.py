"""Site configuration in layers, each value remembering where it came from.

Order, later wins: built-in defaults < site file < user file < environment (``HPC_TF_*``) < ``--set``.

* site file: ``site_configs/NAME.yaml`` shipped with hpc-tf, or ``~/.config/hpc-tf/sites/NAME.yaml``,
  or a path to a YAML file;
* user file: ``~/.config/hpc-tf/config.yaml`` (``$XDG_CONFIG_HOME`` respected): site keys that apply to
  every site, plus ``site: NAME`` to pick the default site;
* environment: ``HPC_TF_ACCOUNT=lab``, nested keys with a double underscore (``HPC_TF_SERVING__FORMAT``);
  ``HPC_TF_SITE`` picks the site;
* ``--set account=lab --set partitions.gpu.gpus_per_node=8`` on the command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpc.errors import ConfigError, FieldProblem, SpecError
from hpc.modelbase import error_message, validate_document
from hpc.resources import data_dir
from hpc.site.model import SiteConfig
from hpc.text import shown
from hpc.yamlsource import load_scalar, load_yaml_file

DEFAULT_SITE = "local"
ENV_PREFIX = "HPC_TF_"
Flat = dict[str, Any]


@dataclass(frozen=True)
class LoadedSite:
    config: SiteConfig
    provenance: Mapping[str, str]  # dotted key -> where its value came from

    def source_of(self, key: str) -> str:
        return self.provenance.get(key, "built-in default")


def user_config_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "hpc-tf"


def builtin_sites() -> list[str]:
    return sorted(p.stem for p in data_dir("site_configs").glob("*.yaml"))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Flat:
    flat: Flat = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _unflatten(flat: Flat) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        parts = dotted.split(".")
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # a scalar overridden by a nested key: the nested key wins
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return nested


def _merge(flat: Flat, provenance: dict[str, str], layer: Flat, source: str) -> None:
    for key, value in layer.items():
        # a whole sub-mapping replaced by a scalar (or the reverse) drops the old leaves
        for old in [k for k in flat if k.startswith(f"{key}.") or key.startswith(f"{k}.")]:
            del flat[old]
            provenance.pop(old, None)
        flat[key] = value
        provenance[key] = source


def _scalar(text: str) -> Any:
    """``4`` -> 4, ``true`` -> True, ``[a, b]`` -> list; anything else stays a string."""
    try:
        return load_scalar(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def find_site_file(name: str, environ: Mapping[str, str]) -> Path:
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"site config file not found: {path}")
        return path
    for directory in (user_config_dir(environ) / "sites", data_dir("site_configs")):
        path = directory / f"{name}.yaml"
        if path.is_file():
            return path
    raise ConfigError(
        f"unknown site '{name}'",
        hint=f"built-in sites: {', '.join(builtin_sites())}; or pass a path to a site YAML file",
    )


def load_site(
    name: str | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> LoadedSite:
    env = os.environ if environ is None else environ
    user_file = user_config_dir(env) / "config.yaml"
    user_layer: Flat = {}
    user_site: str | None = None
    if user_file.is_file():
        data = load_yaml_file(user_file).data or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{user_file} must be a mapping of site keys")
        user_site = data.pop("site", None)
        user_layer = _flatten(data)

    site_name = name or env.get(f"{ENV_PREFIX}SITE") or user_site or DEFAULT_SITE
    site_path = find_site_file(site_name, env)
    site_doc = load_yaml_file(site_path)
    if isinstance(site_doc.data, dict):
        site_doc.data.setdefault("name", site_path.stem)
    validate_document(SiteConfig, site_doc, what="site config")  # errors with line numbers

    flat: Flat = {}
    provenance: dict[str, str] = {}
    _merge(flat, provenance, _flatten(SiteConfig(name=site_path.stem).model_dump()), "built-in default")
    _merge(flat, provenance, _flatten(site_doc.data), f"site file {site_path}")
    _merge(flat, provenance, user_layer, f"user file {user_file}")
    top_level = set(SiteConfig.model_fields)
    env_layer = {
        key[len(ENV_PREFIX):].lower().replace("__", "."): _scalar(value)
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX):].lower().split("__")[0] in top_level
    }
    for key in sorted(env_layer):
        _merge(flat, provenance, {key: env_layer[key]}, f"environment {ENV_PREFIX}{key.upper().replace('.', '__')}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {shown(item)} must be KEY=VALUE, e.g. --set account=lab")
        _merge(flat, provenance, {key.strip(): _scalar(value)}, f"--set {key.strip()}")

    try:
        config = SiteConfig.model_validate(_unflatten(flat))
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            problems.append(FieldProblem(path=key, message=error_message(SiteConfig, e),
                                         source=provenance.get(key, "site config")))
        raise SpecError(problems) from None
    return LoadedSite(config=config, provenance=provenance)


def describe(site: LoadedSite) -> list[tuple[str, str, str]]:
    """(key, value, source) rows for ``hpc-tf config show``, in a stable order."""
    flat = _flatten(site.config.model_dump())
    return [(key, _show(flat[key]), site.source_of(key)) for key in sorted(flat)]


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "[]"
    return str(value)
