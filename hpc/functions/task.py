"""What submitit runs in every task: hpc-tf's node runtime set-up, then the user's function.

submitit pickles a :class:`FunctionTask` (by reference: this module is installed on the compute
nodes, in the job's venv) and calls it in each task's own Python process. The call does in-process
what the bootstrap does before it execs a command, with the same code (:mod:`hpc.runtime.node`):

1. under submitit's LocalExecutor, turn its ``SUBMITIT_LOCAL_*`` variables into the Slurm step view
   the runtime reads (:func:`local_step_env`): one node, ``localhost`` at 127.0.0.1;
2. the spec's ``env``, ``HPC_TF_RUN_DIR``, ``HPC_TF_OUTPUT_DIR``;
3. :func:`~hpc.runtime.node.task_env.plan_task`: the task's GPU slice (CUDA_VISIBLE_DEVICES,
   CUDA_DEVICE_ORDER), TF_CONFIG, the hook settings, applied to ``os.environ``;
4. the hooks the command path installs from sitecustomize (Keras multi-worker ``fit`` fix, bounded
   cluster formation, checkpoints and Slurm's preemption warning), installed here directly;
5. the working directory, then ``fn(*args, **kwargs)``.

TensorFlow reads CUDA_VISIBLE_DEVICES when it first touches a GPU and TF_CONFIG when the strategy is
made, so a function that imports TensorFlow inside its body (or whose module does, at unpickling)
still gets both, provided nothing ran on a GPU before the call.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from hpc.runtime.node import bootstrap, hooks
from hpc.runtime.node.settings import settings_from_mapping
from hpc.runtime.node.task_env import TaskPlan, plan_task
from hpc.runtime.node.tf_config import ADDRESS_MAP_VARIABLE

LOCAL_NODE = "localhost"
LOCAL_ADDRESS = "127.0.0.1"
# the library's copy of the start-up hook: Python subprocesses of the function get the hooks too
SITE_DIR = Path(bootstrap.__file__).resolve().parent / "sitedir"


def local_step_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The Slurm step variables of a LocalExecutor task (submitit sets ``SUBMITIT_LOCAL_*`` only).

    Every task runs on this machine: one node, ``localhost``, mapped to 127.0.0.1 so the workers'
    addresses (TF_CONFIG) are local; ranks are submitit's, the job id is its controller's pid.
    """
    try:
        tasks = environ["SUBMITIT_LOCAL_NTASKS"]
        rank = environ["SUBMITIT_LOCAL_GLOBALID"]
        local_rank = environ["SUBMITIT_LOCAL_LOCALID"]
        job_id = environ["SUBMITIT_LOCAL_JOB_ID"]
    except KeyError as err:
        raise RuntimeError(f"{err.args[0]} is not set: not a task of submitit's LocalExecutor") from None
    return {
        "SLURM_JOB_ID": job_id,
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": rank,
        "SLURM_LOCALID": local_rank,
        "SLURM_NODEID": "0",
        "SLURM_NTASKS": tasks,
        "SLURM_STEP_NODELIST": LOCAL_NODE,
        "SLURM_STEP_NUM_NODES": "1",
        "SLURM_STEP_NUM_TASKS": tasks,
        "SLURM_STEP_TASKS_PER_NODE": tasks,
        "SLURMD_NODENAME": LOCAL_NODE,
        ADDRESS_MAP_VARIABLE: f"{LOCAL_NODE}={LOCAL_ADDRESS}",
    }


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
    ) -> None:
        self.fn = fn
        self.runtime = dict(runtime)
        self.env = tuple(env)
        self.run_dir = run_dir
        self.output_dir = output_dir
        self.workdir = workdir
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        plan = self.set_up(os.environ)
        record = bootstrap.task_record(plan, [self.name])
        print(bootstrap.RECORD_PREFIX + json.dumps(record), file=sys.stderr, flush=True)
        if "tensorflow" in sys.modules:
            print("hpc-tf: TensorFlow was imported before the task was set up; import it inside the "
                  "function so GPU options apply before it touches a GPU", file=sys.stderr, flush=True)
        hooks.install_from_environ(plan.env)
        Path(self.output_dir).mkdir(parents=True, exist_ok=True)
        os.chdir(self.workdir)
        return self.fn(*args, **kwargs)

    def set_up(self, environ: MutableMapping[str, str]) -> TaskPlan:
        """Steps 1-3 of the module docstring: the task's variables, set in ``environ``."""
        if environ.get("SUBMITIT_EXECUTOR") == "local":
            for key in [key for key in environ if key.startswith(("SLURM_", "SLURMD_"))]:
                del environ[key]  # a session started inside a Slurm job must not leak its step
            environ.update(local_step_env(environ))
        environ.update(dict(self.env))
        environ["HPC_TF_RUN_DIR"] = self.run_dir
        environ["HPC_TF_OUTPUT_DIR"] = self.output_dir
        settings = settings_from_mapping(self.runtime, source=f"{self.run_dir}/resolved.json")
        plan = plan_task(environ, settings, site_dir=str(SITE_DIR))
        environ.update(plan.env)
        return plan

    def __repr__(self) -> str:
        return f"FunctionTask({self.name})"
