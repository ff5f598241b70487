"""Submit a training *function* (not a command) with the resources of a job spec, through submitit.

    from hpc.functions import submit_function

    job = submit_function(train, "data/", spec="job.yaml", site="mycluster")
    print(job.result())          # rank 0's return value; job.results() for every task

:mod:`~hpc.functions.plan` turns (spec, site) into what is submitted (submitit's parameters, or the
local launcher's script), :mod:`~hpc.functions.task` is what runs in each task,
:mod:`~hpc.functions.submit` creates the run directory and submits through the launcher's backend,
:mod:`~hpc.functions.job` is the handle it returns (:class:`FunctionJob`).
"""

from __future__ import annotations

from hpc.functions.job import FunctionJob
from hpc.functions.plan import FunctionPlan, plan_function
from hpc.functions.submit import submit_function
from hpc.functions.task import FunctionTask

__all__ = ["FunctionJob", "FunctionPlan", "FunctionTask", "plan_function", "submit_function"]
