"""hpc-tf's start-up hook for the user's Python process (see hooks.py).

The bootstrap puts this directory first on PYTHONPATH of every task, so Python's ``site``
imports this file as ``sitecustomize`` at start-up. It loads the runtime package as
``hpc_tf_runtime`` (so a job's code can import it, e.g. ``Resumable``), installs the lazy
hooks described by HPC_TF_HOOKS, if any (importing nothing heavy), then runs the
sitecustomize it shadows, if any, so a venv's or distribution's own start-up code still runs.

``site`` swallows exceptions from sitecustomize with a one-line notice, so a failure
here is reported on stderr in full and the user's program still starts.
"""

from __future__ import annotations


def _install_hpc_tf_hooks() -> None:
    import importlib.machinery
    import importlib.util
    import os
    import sys
    import traceback
    from pathlib import Path

    here = Path(__file__).resolve().parent
    package_dir = here.parent
    try:
        package = sys.modules.get("hpc_tf_runtime")
        if package is None:
            spec = importlib.util.spec_from_file_location(
                "hpc_tf_runtime", package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
            )
            if spec is None or spec.loader is None:
                raise ImportError(f"no hpc-tf runtime package at {package_dir}")
            package = importlib.util.module_from_spec(spec)
            sys.modules["hpc_tf_runtime"] = package
            spec.loader.exec_module(package)
        hooks = importlib.import_module("hpc_tf_runtime.hooks")
        hooks.install_from_environ(os.environ)
    except Exception:
        print("hpc-tf: could not install the runtime hooks:", file=sys.stderr)
        traceback.print_exc()

    # Chain to the sitecustomize this one shadows (e.g. Debian's /etc/python3.X one).
    others = [entry for entry in sys.path if Path(entry or os.curdir).resolve() != here]
    shadowed = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if shadowed is not None and shadowed.loader is not None:
        module = importlib.util.module_from_spec(shadowed)
        sys.modules["sitecustomize"] = module
        shadowed.loader.exec_module(module)


_install_hpc_tf_hooks()
del _install_hpc_tf_hooks
