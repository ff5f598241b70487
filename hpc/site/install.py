"""``hpc-tf site add``: a site file checked, copied into the user's sites directory, optionally made the default.

The copy is the file as written (comments kept), under ``~/.config/hpc-tf/sites/NAME.yaml`` (0600, in a
0700 directory: a site file names the user's account and paths); ``--default`` sets ``site: NAME`` in
``~/.config/hpc-tf/config.yaml``, changing that one line and keeping everything else in the file. Both
are written whole or not at all.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hpc.atomic import write_text_atomic
from hpc.errors import ConfigError, SpecError
from hpc.site.load import builtin_sites, check_site_document, user_config_dir
from hpc.spec.model import NAME_RE, NAME_RULE
from hpc.text import shown
from hpc.yamlsource import load_scalar, parse_yaml, read_yaml_text

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


@dataclass(frozen=True)
class AddedSite:
    name: str
    path: Path  # the installed copy
    config_file: Path | None = None  # the user file that now names it the default (with --default)
    previous_default: str | None = None  # the default it replaced


def sites_dir(environ: Mapping[str, str]) -> Path:
    return user_config_dir(environ) / "sites"


def add_site(source: Path, name: str | None = None, *, make_default: bool = False, replace: bool = False,
             environ: Mapping[str, str] | None = None) -> AddedSite:
    """Check ``source`` as a site config, copy it to the user's sites directory as ``name`` (default: the
    file's stem) and, with ``make_default``, make it the site every command uses."""
    env = os.environ if environ is None else environ
    name = name if name is not None else source.stem
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"site name {shown(name)} is not valid: {NAME_RULE}", hint="pass --name NAME")
    if name in builtin_sites():
        raise ConfigError(f"site name '{name}' is a built-in site, which a site of yours by that name would hide",
                          hint="pass --name NAME with another name, e.g. --name mycluster")
    text = read_yaml_text(source)
    doc = check_site_document(parse_yaml(text, str(source)), name)
    if doc.data["name"] != name:
        raise ConfigError(f"{source} names itself '{doc.data['name']}' (name:), not '{name}'",
                          hint=f"remove its name: line, or pass --name {doc.data['name']}")
    target = sites_dir(env) / f"{name}.yaml"
    if target.exists() and not replace:
        raise ConfigError(f"you have a site '{name}' already: {target}",
                          hint="pass --replace to overwrite it, or --name NAME for another name")
    edit = default_site_edit(name, env) if make_default else None  # refused before anything is written
    _make_private(user_config_dir(env), target.parent)
    write_text_atomic(target, text, mode=PRIVATE_FILE)
    if edit is None:
        return AddedSite(name, target)
    edit.write()
    return AddedSite(name, target, edit.path, edit.previous)


@dataclass(frozen=True)
class UserFileEdit:
    """The user file with ``site: NAME`` in it, ready to be written."""

    path: Path
    text: str
    mode: int
    previous: str | None  # the default site it named before

    def write(self) -> None:
        _make_private(self.path.parent)
        write_text_atomic(self.path, self.text, mode=self.mode)


def default_site_edit(name: str, environ: Mapping[str, str]) -> UserFileEdit:
    """``~/.config/hpc-tf/config.yaml`` with ``site: NAME``: its ``site:`` line replaced, or one appended; every
    other line kept as it is."""
    path = user_config_dir(environ) / "config.yaml"
    if path.is_symlink():  # a dotfile managed elsewhere: change the file it points to, keep the link
        path = path.resolve()
    exists = path.exists()
    old_text = read_yaml_text(path) if exists else ""
    old = parse_yaml(old_text, str(path))
    data = old.data if old.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping of site keys", hint="fix it, or move it away and run this again")
    value = name if load_scalar(name) == name else json.dumps(name)  # quoted if YAML would read another type
    line = old.lines.get(("site",))
    if line is None:
        separator = "\n" if old_text and not old_text.endswith("\n") else ""
        new_text = f"{old_text}{separator}site: {value}\n"
    else:
        lines = old_text.splitlines(keepends=True)
        lines[line - 1] = f"site: {value}\n"
        new_text = "".join(lines)
    try:
        changed = parse_yaml(new_text, str(path)).data == {**data, "site": name}
    except SpecError:
        changed = False
    if not changed:  # a layout a line edit cannot change (a flow mapping, a value over several lines)
        raise ConfigError(f"cannot set the default site in {path} by changing one line",
                          hint=f"write 'site: {name}' into it yourself")
    previous = data.get("site")
    return UserFileEdit(path, new_text, stat.S_IMODE(path.stat().st_mode) if exists else PRIVATE_FILE,
                        previous if isinstance(previous, str) else None)


def _make_private(*directories: Path) -> None:
    """Each directory, created for the user alone when missing (an existing one is left as it is)."""
    for directory in directories:
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=PRIVATE_DIR, exist_ok=True)
