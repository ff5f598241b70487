"""How the pyslurm scheduler submits: sbatch's options as ``pyslurm.JobSubmitDescription`` attributes.

:class:`~hpc.scheduler.libslurm.PyslurmScheduler` reads a script's ``#SBATCH`` lines and the typed
options into sbatch's long option names; each maps to an attribute in :data:`_SUBMIT_ATTRIBUTES`
(with a conversion of its value); one that has none is refused by name, never dropped. The job's
environment is the one sbatch would export (:func:`environment`). Nothing here imports pyslurm.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hpc.errors import HpcTfError


def environment() -> dict[str, str]:
    """What sbatch exports by default (--export=ALL): this process's environment, plus what sbatch
    adds to it: the umask (applied to the job by slurmstepd), the submit directory and host, the
    nice value."""
    mask = os.umask(0)
    os.umask(mask)
    return {**os.environ, "SLURM_UMASK": f"{mask:04o}", "SLURM_SUBMIT_DIR": os.getcwd(),
            "SLURM_SUBMIT_HOST": socket.gethostname(), "SLURM_PRIO_PROCESS": str(os.getpriority(os.PRIO_PROCESS, 0))}


def _keep(value: str | None) -> str | None:
    return value


def _flag(value: str | None) -> bool:
    return True


def _number(value: str | None) -> int | None:
    return None if value is None else int(value)


def _hold(value: str | None) -> int:
    return 0  # a priority of 0 is Slurm's hold


def _time(value: str | None) -> str | int | None:
    """pyslurm passes a bare number of minutes through as it is: it must be an int."""
    return int(value) if value is not None and value.isdigit() else value


def _memory(value: str | None) -> str | None:
    """pyslurm reads ``0`` (all of each node's memory) as "not set": refused rather than dropped."""
    if value is not None and re.fullmatch(r"0+[KMGT]?", value.strip(), re.IGNORECASE):
        raise HpcTfError("the pyslurm scheduler cannot ask for all of a node's memory (--mem=0)",
                         hint="ask for an amount (resources.mem), or set scheduler: cli")
    return value


def _yes(value: str | None) -> bool:
    return value is None or value.lower() in ("yes", "y", "true", "1")


# sbatch's long option → (JobSubmitDescription attribute, conversion of the option's value).
_SUBMIT_ATTRIBUTES: dict[str, tuple[str, Callable[[str | None], Any]]] = {
    "account": ("account", _keep),
    "array": ("array", _keep),
    "chdir": ("working_directory", _keep),
    "comment": ("comment", _keep),
    "constraint": ("constraints", _keep),
    "cpus-per-gpu": ("cpus_per_gpu", _keep),
    "cpus-per-task": ("cpus_per_task", _number),
    "dependency": ("dependencies", _keep),
    "error": ("standard_error", _keep),
    "exclude": ("excluded_nodes", _keep),
    "exclusive": ("resource_sharing", lambda value: "no" if value is None else value),
    "gpus": ("gpus", _keep),
    "gpus-per-node": ("gres_per_node", lambda value: None if value is None else f"gpu:{value}"),
    "gpus-per-task": ("gpus_per_task", _keep),
    "gres": ("gres_per_node", _keep),
    "hold": ("priority", _hold),
    "job-name": ("name", _keep),
    "kill-on-invalid-dep": ("kill_on_invalid_dependency", _yes),
    "mail-type": ("mail_types", _keep),
    "mail-user": ("mail_user", _keep),
    "mem": ("memory_per_node", _memory),
    "mem-per-cpu": ("memory_per_cpu", _memory),
    "mem-per-gpu": ("memory_per_gpu", _memory),
    "nodelist": ("required_nodes", _keep),
    "nodes": ("nodes", _keep),
    "ntasks": ("ntasks", _number),
    "ntasks-per-node": ("ntasks_per_node", _number),
    "open-mode": ("log_files_open_mode", _keep),
    "output": ("standard_output", _keep),
    "partition": ("partitions", _keep),
    "qos": ("qos", _keep),
    "requeue": ("is_requeueable", _flag),
    "no-requeue": ("is_requeueable", lambda value: False),
    "reservation": ("reservations", _keep),
    "signal": ("signal", _keep),
    "time": ("time_limit", _time),
    "wckey": ("wckey", _keep),
}


def submit_attributes(options: Mapping[str, str | None], script: Path | str) -> dict[str, Any]:
    """sbatch options (long name → value, as :func:`~hpc.render.directives.read_directives` gives them)
    → JobSubmitDescription attributes. An option without one is refused, naming it.

    Like sbatch, ``--ntasks-per-node`` without ``--ntasks`` asks for that many tasks on each node
    (pyslurm would otherwise ask for one task).
    """
    attributes: dict[str, Any] = {}
    for option, value in options.items():
        attribute = _SUBMIT_ATTRIBUTES.get(option)
        if attribute is None:
            raise HpcTfError(f"the pyslurm scheduler cannot pass --{option} (in {script}) to Slurm",
                             hint="set scheduler: cli in the site configuration (sbatch takes every option)")
        name, convert = attribute
        attributes[name] = convert(value)
    if "ntasks" not in attributes and attributes.get("ntasks_per_node"):
        min_nodes = int(str(attributes.get("nodes") or 1).split("-", 1)[0])
        attributes["ntasks"] = min_nodes * attributes["ntasks_per_node"]
    return attributes


__all__ = ["environment", "submit_attributes"]
