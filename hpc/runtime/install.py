"""Put the node runtime into a run directory, so tasks can start it without hpc-tf installed.

<run_dir>/runtime/
  bootstrap.py                 launchers/bootstrap.py: the srun entry point
  local_step.py                launchers/local_step.py: srun for the local launcher's emulated allocation
  hpc_tf_runtime/              a copy of hpc/runtime/node/ (standard library only)
    _errors.py                 a copy of hpc/errors.py (in the library it re-exports it)
    sitedir/sitecustomize.py   put first on PYTHONPATH for the user's process
"""

from __future__ import annotations

from pathlib import Path

from hpc.atomic import write_text_atomic
from hpc.resources import data_dir

RUNTIME_PACKAGE = "hpc_tf_runtime"
LOCAL_STEP = "local_step.py"

_NODE_DIR = Path(__file__).resolve().parent / "node"
_ERRORS = Path(__file__).resolve().parent.parent / "errors.py"


def install_into(runtime_dir: Path) -> Path:
    """Write the bootstrap and the runtime package into ``runtime_dir``; return the bootstrap's path."""
    package = runtime_dir / RUNTIME_PACKAGE
    for source in sorted(_NODE_DIR.rglob("*.py")):
        relative = source.relative_to(_NODE_DIR)
        origin = _ERRORS if relative == Path("_errors.py") else source
        write_text_atomic(package / relative, origin.read_text(encoding="utf-8"))
    for launcher in ("bootstrap.py", LOCAL_STEP):
        write_text_atomic(runtime_dir / launcher, (data_dir("launchers") / launcher).read_text(encoding="utf-8"))
    return runtime_dir / "bootstrap.py"
