"""``hpc-tf node-env``: what the bootstrap would export for the current task, without running it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hpc.paths import RunPaths
from hpc.runtime.install import RUNTIME_PACKAGE
from hpc.runtime.node.bootstrap import SITE_DIR
from hpc.runtime.node.settings import RuntimeSettings, load_settings
from hpc.runtime.node.task_env import plan_task


def node_env(environ: Mapping[str, str], resolved: Path | None = None) -> dict[str, str]:
    """The variables and exact values the bootstrap would set, in the order it sets them.

    With ``resolved`` inside a run directory whose runtime is installed, PYTHONPATH names
    that run directory's copy of the hooks, as its bootstrap would; otherwise this hpc-tf's.
    """
    settings = load_settings(resolved) if resolved is not None else RuntimeSettings()
    site_dir = Path(SITE_DIR)
    if resolved is not None:
        installed = RunPaths(resolved.resolve().parent).runtime_dir / RUNTIME_PACKAGE / site_dir.name
        if installed.is_dir():
            site_dir = installed
    return plan_task(environ, settings, site_dir=str(site_dir)).env
