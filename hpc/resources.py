"""Where the files that live outside ``hpc/`` are: templates, launchers, built-in site configs; and
the user's cache (``$XDG_CACHE_HOME/hpc-tf``), which may be deleted at any time.

In a wheel they are packed under ``hpc/_data/`` (see pyproject.toml); in a source checkout
or an editable install they are the top-level folders of the repository.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

DataDir = Literal["templates", "launchers", "site_configs"]

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: DataDir) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"hpc-tf installation is incomplete: no {name}/ beside {_PACKAGE}")


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hpc-tf`` (``~/.cache/hpc-tf``): what saves work between commands, never
    anything that cannot be made again."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpc-tf"
