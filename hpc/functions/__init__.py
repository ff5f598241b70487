"""Submit a training *function* (not a command) with the resources of a job spec, through submitit.

    from hpc.functions import submit_function

    job = submit_function(train, "data/", spec="job.yaml", site="mycluster")
    print(job.state, job.result())

:mod:`~hpc.functions.plan` turns (spec, site) into submitit's parameters, :mod:`~hpc.functions.task`
is what runs in each task, :mod:`~hpc.functions.submit` creates the run directory and submits.
"""

from __future__ import annotations

from hpc.functions.plan import FunctionPlan, plan_function
from hpc.functions.submit import submit_function
from hpc.functions.task import FunctionTask

__all__ = ["FunctionPlan", "FunctionTask", "plan_function", "submit_function"]
