"""The error types the node runtime raises.

In the library this is hpc.errors itself, so the CLI maps them to exit codes; in a run
directory ``install_into`` puts a copy of hpc/errors.py (standard library only) here.
"""

from __future__ import annotations

from hpc.errors import HpcTfError as HpcTfError
from hpc.errors import RuntimeSetupError as RuntimeSetupError
