"""The serving owner's config directory for one test module: a module that imports ``owner_config`` runs
its hpc-tf commands with their own repository keys (``XDG_CONFIG_HOME``), not the runner's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module", autouse=True)
def owner_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("config")
        patch.setenv("XDG_CONFIG_HOME", str(path))
        yield path
