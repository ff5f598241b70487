"""hpc-tf: unmodified TensorFlow training scripts on Slurm clusters.

Importing this package has no side effects: no scheduler call, no TensorFlow import.
``hpc.submit_function`` (see :mod:`hpc.functions`) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hpc.functions import submit_function as submit_function


def __getattr__(name: str) -> Any:
    if name == "submit_function":
        from hpc.functions import submit_function

        return submit_function
    raise AttributeError(f"module 'hpc' has no attribute {name!r}")
