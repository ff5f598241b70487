"""A rendered batch script runs only beside what it execs: the run directory's runtime and resolved job."""

from __future__ import annotations

from hpc.paths import RunPaths
from hpc.resolve import ResolvedJob
from hpc.runtime import install_into


def install_run_dir(job: ResolvedJob) -> RunPaths:
    """Put the node runtime (batch driver, bootstrap) and resolved.json into ``job``'s run directory."""
    paths = RunPaths.at(job.run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    install_into(paths.runtime_dir)
    paths.resolved.write_text(job.to_json(), encoding="utf-8")
    return paths
