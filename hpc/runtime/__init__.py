"""The node runtime: how each task of a job becomes a TensorFlow worker.

``node/`` runs on compute nodes (standard library only; copied into every run directory
by ``install_into``). This level is the library side used by render and the CLI.
"""

from __future__ import annotations

from hpc.runtime.install import RUNTIME_PACKAGE, install_into
from hpc.runtime.node_env import node_env

__all__ = ["RUNTIME_PACKAGE", "install_into", "node_env"]
