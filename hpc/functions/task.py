"""What submitit runs in every task: hpc-tf's node runtime set-up, then the user's function.

submitit pickles a :class:`FunctionTask` (by reference: this module is installed on the compute
nodes, in the job's venv) and calls it in each task's own Python process. Under the local launcher
the bootstrap has set the task up before it started submitit's entry point, as for any command, and
the call only enters the working directory and calls the function. Under submitit's SlurmExecutor
the call does in-process what the bootstrap does before it execs a command, with the same code
(:mod:`hpc.runtime.node`):

1. the spec's ``env``, ``HPC_TF_RUN_DIR``, ``HPC_TF_OUTPUT_DIR``, ``HPC_TF_CHECKPOINT_DIR`` (``${NAME}``
   references expanded here, in order, as the batch script of a command job expands them);
2. :func:`~hpc.runtime.node.task_env.plan_task`: the task's GPU slice (CUDA_VISIBLE_DEVICES,
   CUDA_DEVICE_ORDER), TF_CONFIG, the hook settings, applied to ``os.environ``;
3. the hooks the command path installs from sitecustomize (Keras multi-worker ``fit`` fix, bounded
   cluster formation, checkpoints and Slurm's preemption warning), installed here directly, and
   ``hpc_tf_runtime`` made importable as the very modules they were installed from (so
   ``hpc_tf_runtime.preemption.Resumable`` sees the job's checkpoint settings);
4. the working directory, then ``fn(*args, **kwargs)``.

TensorFlow reads CUDA_VISIBLE_DEVICES when it first touches a GPU and TF_CONFIG when the strategy is
made, so a function that imports TensorFlow inside its body (or whose module does, at unpickling)
still gets both, provided nothing ran on a GPU before the call.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import hpc.runtime.node
from hpc.runtime import RUNTIME_PACKAGE
from hpc.runtime.node import bootstrap, hooks
from hpc.runtime.node.hook_config import CHECKPOINT_DIR_VARIABLE
from hpc.runtime.node.settings import settings_from_mapping
from hpc.runtime.node.task_env import TaskPlan, plan_task
from hpc.text import expand_run_time

# the library's copy of the start-up hook: Python subprocesses of the function get the hooks too
SITE_DIR = Path(bootstrap.__file__).resolve().parent / "sitedir"


def expose_runtime_package() -> None:
    """Make ``hpc_tf_runtime`` (the name a job's code imports the node runtime by, as in a command job)
    this process's :mod:`hpc.runtime.node` and its modules, not a second copy with settings of its own.

    Every module is registered under both names; a fresh import under the new name would run its
    code again, with the hooks' state (the preemption settings, the warning flag) left unset.
    """
    package = hpc.runtime.node
    if RUNTIME_PACKAGE in sys.modules:  # loaded by the job's sitecustomize: that copy has the hooks
        return
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    prefix = package.__name__
    for name, module in list(sys.modules.items()):
        if name == prefix or name.startswith(prefix + "."):
            sys.modules[RUNTIME_PACKAGE + name[len(prefix):]] = module


class FunctionTask:
    """``fn`` wrapped with the runtime set-up of a resolved job; picklable if ``fn`` is.

    Built by :func:`hpc.functions.submit_function`; ``runtime`` is the resolved job's ``runtime``
    part (as in resolved.json), ``env`` the spec's variables.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        runtime: Mapping[str, object],
        env: Sequence[tuple[str, str]],
        run_dir: str,
        output_dir: str,
        workdir: str,
        name: str,
        set_up_by_bootstrap: bool = False,
    ) -> None:
        self.fn = fn
        self.set_up_by_bootstrap = set_up_by_bootstrap  # the local launcher's tasks start through the bootstrap
        self.runtime = dict(runtime)
        self.env = tuple(env)
        self.run_dir = run_dir
        self.output_dir = output_dir
        self.workdir = workdir
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.set_up_by_bootstrap:
            plan = self.set_up(os.environ)
            record = bootstrap.task_record(plan, [self.name])
            print(bootstrap.RECORD_PREFIX + json.dumps(record), file=sys.stderr, flush=True)
            if "tensorflow" in sys.modules:
                print("hpc-tf: TensorFlow was imported before the task was set up; import it inside the "
                      "function so GPU options apply before it touches a GPU", file=sys.stderr, flush=True)
            hooks.install_from_environ(plan.env)
            expose_runtime_package()
        Path(expand_run_time(self.output_dir, os.environ)).mkdir(parents=True, exist_ok=True)
        os.chdir(expand_run_time(self.workdir, os.environ))
        return self.fn(*args, **kwargs)

    def set_up(self, environ: MutableMapping[str, str]) -> TaskPlan:
        """Steps 1-2 of the module docstring: the task's variables, set in ``environ``."""
        for key, value in self.env:
            environ[key] = expand_run_time(value, environ)
        environ["HPC_TF_RUN_DIR"] = self.run_dir
        environ["HPC_TF_OUTPUT_DIR"] = expand_run_time(self.output_dir, environ)
        settings = settings_from_mapping(self.runtime, source=f"{self.run_dir}/resolved.json")
        if settings.checkpoint_dir is not None:
            environ[CHECKPOINT_DIR_VARIABLE] = expand_run_time(settings.checkpoint_dir, environ)
        plan = plan_task(environ, settings, site_dir=str(SITE_DIR))
        environ.update(plan.env)
        return plan

    def __repr__(self) -> str:
        return f"FunctionTask({self.name})"
