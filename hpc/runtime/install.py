"""Put the node runtime into a run directory, so tasks can start it without hpc-tf installed.

<run_dir>/runtime/
  bootstrap.py                 launchers/bootstrap.py: the srun entry point
  local_step.py                launchers/local_step.py: srun for the local launcher's emulated allocation
  batch.py                     launchers/batch.py: the batch script's driver (step, warning, requeue)
  hpc_tf_runtime/              a copy of hpc/runtime/node/ (standard library only)
    _errors.py                 a copy of hpc/errors.py (in the library it re-exports it)
    sitedir/sitecustomize.py   put first on PYTHONPATH for the user's process
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hpc.resources import data_dir

RUNTIME_PACKAGE = "hpc_tf_runtime"
LOCAL_STEP = "local_step.py"

_NODE_DIR = Path(__file__).resolve().parent / "node"
_ERRORS = Path(__file__).resolve().parent.parent / "errors.py"


def install_into(runtime_dir: Path) -> Path:
    """Copy the bootstrap and the runtime package into ``runtime_dir``; return the bootstrap's path.

    ``runtime_dir`` is inside a staging directory that the caller renames into place, so plain
    copies suffice: nobody sees the files before the whole directory appears."""
    package = runtime_dir / RUNTIME_PACKAGE
    for source in sorted(_NODE_DIR.rglob("*.py")):
        relative = source.relative_to(_NODE_DIR)
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_ERRORS if relative == Path("_errors.py") else source, package / relative)
    for launcher in ("bootstrap.py", LOCAL_STEP, "batch.py"):
        shutil.copyfile(data_dir("launchers") / launcher, runtime_dir / launcher)
    return runtime_dir / "bootstrap.py"
