"""Site configuration in layers, each value remembering where it came from.

Order, later wins: built-in defaults < site file < user file < environment (``HPC_TF_*``) < ``--set``.

* site file: ``site_configs/NAME.yaml`` shipped with hpc-tf, or ``~/.config/hpc-tf/sites/NAME.yaml``
  (where ``hpc-tf site add FILE`` installs one), or a path to a YAML file;
* user file: ``~/.config/hpc-tf/config.yaml`` (``$XDG_CONFIG_HOME`` respected): site keys that apply to
  every site, plus ``site: NAME`` to pick the default site;
* environment: ``HPC_TF_ACCOUNT=lab``, nested keys with a double underscore (``HPC_TF_SERVING__FORMAT``);
  ``HPC_TF_SITE`` picks the site; any other ``HPC_TF_*`` name that is not one of hpc-tf's own variables
  is an error, as an unknown key in a file is: a misspelt ``HPC_TF_ACOUNT`` would otherwise charge the
  job to another account without a word;
* ``--set account=lab --set partitions.gpu.gpus_per_node=8`` on the command line.
"""

from __future__ import annotations

import difflib
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
from hpc.spec.model import NAME_RE, TOKEN_RE
from hpc.text import forbidden_character, shown
from hpc.yamlsource import YamlDocument, load_scalar, load_yaml_file

DEFAULT_SITE = "local"
ENV_PREFIX = "HPC_TF_"
Flat = dict[str, Any]
# HPC_TF_* variables that are not site keys. hpc-tf sets most of them for jobs and tasks, and a command in
# a job (the hand-off, a campaign task) inherits them and may run hpc-tf again; the others are read by
# its scripts and tests. tests/unit/test_site.py checks that every HPC_TF_ name in the code is here or a
# site key.
NOT_SITE_VARIABLES = frozenset({
    "HPC_TF_SITE",  # picks the site (not a key of it)
    # the job and its tasks (templates, runtime, local launcher, campaigns, functions)
    "HPC_TF_RUN_DIR", "HPC_TF_OUTPUT_DIR", "HPC_TF_CHECKPOINT_DIR", "HPC_TF_HOOKS", "HPC_TF_NODE_ADDRESS_MAP",
    "HPC_TF_REQUEUED_JOB",
    "HPC_TF_LOCAL_REQUEUE_FILE", "HPC_TF_CAMPAIGN_DIR", "HPC_TF_TASK_ID", "HPC_TF_TASK_DIR", "HPC_TF_TASK_OFFSET",
    "HPC_TF_PARAMS", "HPC_TF_METRICS_FILE",
    # the CLI, install and example scripts, the test cluster and the test suite
    "HPC_TF_DEBUG", "HPC_TF_VENV", "HPC_TF_EXTRAS", "HPC_TF_QUICKSTART_DIR", "HPC_TF_CGROUP", "HPC_TF_CPUS",
    "HPC_TF_REQUIRE_CLUSTER", "HPC_TF_REQUIRE_INSTALLED", "HPC_TF_REGEN_GOLDEN", "HPC_TF_RECORD_CAMPAIGN_FIXTURES",
    "HPC_TF_RECORD_QUOTA_FIXTURES", "HPC_TF_RECORD_SCHEDULER_FIXTURES",
    "HPC_TF_SLURM", "HPC_TF_SLURM_TARBALL", "HPC_TF_SLURM_VERSIONS", "HPC_TF_AGAIN_MARKERS",
})
NOT_SITE_PREFIXES = ("HPC_TF_PARAM_",)  # a campaign task's parameters, one variable each


@dataclass(frozen=True)
class LoadedSite:
    config: SiteConfig
    provenance: Mapping[str, str]  # dotted key -> where its value came from
    # what ``--site`` takes to load this site again from anywhere (a job's hand-off): the name as
    # given, or the absolute path of the site file given as a path
    ref: str = DEFAULT_SITE

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
    if forbidden_character(text) is not None:
        return text  # as written, for the site model to refuse by its key (YAML would fold a U+0085 to a space)
    try:
        return load_scalar(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def env_site_key(name: str) -> str | None:
    """The dotted site key an ``HPC_TF_*`` variable sets (``HPC_TF_SERVING__FORMAT`` -> ``serving.format``),
    or None for one of hpc-tf's own variables; any other name is a ConfigError with the nearest name."""
    if name in NOT_SITE_VARIABLES or name.startswith(NOT_SITE_PREFIXES):
        return None
    key = name[len(ENV_PREFIX):].lower().replace("__", ".")
    if key.split(".")[0] in SiteConfig.model_fields:
        return key
    # the top-level key compared without the common prefix, which would make every name look alike
    top, sep, rest = name[len(ENV_PREFIX):].partition("__")
    near = difflib.get_close_matches(top, [*(field.upper() for field in SiteConfig.model_fields), "SITE"], n=1)
    raise ConfigError(
        f"environment variable {name} is not a site setting"
        + (f" (did you mean {ENV_PREFIX}{near[0]}{sep}{rest}?)" if near else ""),
        hint=f"unset it, or name a site key: {ENV_PREFIX}ACCOUNT, {ENV_PREFIX}SERVING__FORMAT (hpc-tf config show)",
    )


def _is_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or os.sep in name


def find_site_file(name: str, environ: Mapping[str, str]) -> Path:
    if _is_path(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"site config file not found: {path}")
        return path
    for directory in (user_config_dir(environ) / "sites", data_dir("site_configs")):
        path = directory / f"{name}.yaml"
        if path.is_file():
            return path
    raise ConfigError(
        f"unknown site {shown(name)}",
        hint=f"built-in sites: {', '.join(builtin_sites())}; install yours with: hpc-tf site add FILE --name "
             f"{name if NAME_RE.fullmatch(name) else 'NAME'}; or pass a path to a site YAML file",
    )


def check_site_document(doc: YamlDocument, name: str) -> YamlDocument:
    """``doc`` checked as a site file on its own, named ``name`` unless it names itself; errors with lines."""
    if isinstance(doc.data, dict):
        doc.data.setdefault("name", name)
    validate_document(SiteConfig, doc, what="site config")
    return doc


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
        if user_site is not None and (not isinstance(user_site, str) or forbidden_character(user_site) or
                                      not user_site.strip()):
            raise ConfigError(f"{user_file}: site: {shown(user_site)} is not a site name or a site file's path",
                              hint=f"write e.g. site: mycluster (built-in sites: {', '.join(builtin_sites())})")
        user_layer = _flatten(data)

    site_name = name or env.get(f"{ENV_PREFIX}SITE") or user_site or DEFAULT_SITE
    site_path = find_site_file(site_name, env)
    site_doc = check_site_document(load_yaml_file(site_path), site_path.stem)

    flat: Flat = {}
    provenance: dict[str, str] = {}
    _merge(flat, provenance, _flatten(SiteConfig(name=site_path.stem).model_dump()), "built-in default")
    _merge(flat, provenance, _flatten(site_doc.data), f"site file {site_path}")
    _merge(flat, provenance, user_layer, f"user file {user_file}")
    env_keys = {name: env_site_key(name) for name in env if name.startswith(ENV_PREFIX)}
    env_layer = {key: _scalar(env[name]) for name, key in env_keys.items() if key is not None}
    for key in sorted(env_layer):
        _merge(flat, provenance, {key: env_layer[key]}, f"environment {ENV_PREFIX}{key.upper().replace('.', '__')}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {shown(item)} must be KEY=VALUE, e.g. --set account=lab")
        if not all(TOKEN_RE.fullmatch(part) for part in key.strip().split(".")):
            raise ConfigError(f"--set {shown(key)}: not a site key; keys are dotted names such as account, "
                              "serving.format or partitions.gpu.max_time")
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
    ref = str(site_path.resolve()) if _is_path(site_name) else site_name
    return LoadedSite(config=config, provenance=provenance, ref=ref)


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
