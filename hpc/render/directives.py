"""The ``#SBATCH`` lines of a job, in a stable order: managed options, site defaults, the spec's extras."""

from __future__ import annotations

from pathlib import Path

from hpc.errors import HpcTfError
from hpc.render.quoting import sbatch_value, sbatch_words
from hpc.resolve import ResolvedJob
from hpc.scheduler.sbatch_options import parse_arguments
from hpc.units import ALL_MEMORY


def gpu_request(gres_name: str, gpu_type: str | None, count: int) -> str:
    """``gpu:2`` or ``gpu:a100:2``: Slurm's GRES notation."""
    return f"{gres_name}:{gpu_type}:{count}" if gpu_type else f"{gres_name}:{count}"


def gpu_count(value: str) -> tuple[str | None, int]:
    """``[gpu:][TYPE:]N`` (a ``--gpus*`` value or a gres item; a bare ``gpu`` is one) as (TYPE, N), the
    inverse of :func:`gpu_request`; ValueError when N is not one whole number."""
    parts = value.removeprefix("gpu:").split(":") if value != "gpu" else ["1"]
    if len(parts) > 2 or not parts[-1].isdigit() or int(parts[-1]) < 1:
        raise ValueError(f"the GPU request {value!r} is not [TYPE:]N with N a whole number: set it by hand")
    return (parts[0] if len(parts) == 2 else None), int(parts[-1])


def read_gres(value: str) -> tuple[list[tuple[str | None, int]], list[str]]:
    """A ``--gres`` value as its GPU requests (TYPE, N) and the other gres items (``nvme:200``)."""
    items = [item for item in value.split(",") if item]
    gpus = [item for item in items if item.partition(":")[0] == "gpu"]
    return [gpu_count(item) for item in gpus], [item for item in items if item not in gpus]


def sbatch_options(job: ResolvedJob, batch_log: str) -> list[tuple[str, str | None]]:
    """The managed options in a stable order, as (long option, value or None for a bare flag)."""
    opts: list[tuple[str, str | None]] = [
        ("job-name", job.name),
        ("output", batch_log),
        ("nodes", str(job.nodes)),
        ("ntasks-per-node", str(job.tasks_per_node)),
        ("time", job.time_limit),
    ]
    for key, value in (("partition", job.partition), ("account", job.account), ("qos", job.qos)):
        if value:
            opts.append((key, value))
    gres = list(job.gres)
    if job.gpus_per_task:
        opts.append(("gpus-per-task", gpu_request(job.gres_name, job.gpu_type, job.gpus_per_task)
                     .removeprefix(f"{job.gres_name}:")))
    elif job.gpus_per_node:
        gres.insert(0, gpu_request(job.gres_name, job.gpu_type, job.gpus_per_node))
    if gres:  # one --gres line: a second would replace the first
        opts.append(("gres", ",".join(gres)))
    if job.cpus_per_task:
        opts.append(("cpus-per-task", str(job.cpus_per_task)))
    if job.mem:
        opts.append(("mem", "0" if job.mem == ALL_MEMORY else job.mem))  # Slurm's spelling of "all of it"
    for key, value in (("mem-per-gpu", job.mem_per_gpu), ("mem-per-cpu", job.mem_per_cpu)):
        if value:
            opts.append((key, value))
    if job.constraint:
        opts.append(("constraint", job.constraint))
    if job.exclusive:
        opts.append(("exclusive", None))
    if job.container is not None and job.container.runtime == "shifter":
        # the shifter plugin's option (not sbatch's own): the image is made ready before the job starts
        opts.append(("image", job.container.image))
    if job.warning_seconds is not None:
        # B: signal only the batch shell; its trap forwards the warning to the tasks
        opts += [("signal", f"B:USR1@{job.warning_seconds}"), ("requeue", None), ("open-mode", "append")]
    return opts


def directive_lines(job: ResolvedJob, batch_log: str) -> list[str]:
    """Every ``#SBATCH`` line: managed options first, then site defaults and the spec's extras.

    ``batch_log`` is already a Slurm filename pattern (literal parts escaped by the caller).
    """
    lines = []
    for key, value in sbatch_options(job, batch_log):
        lines.append(f"#SBATCH --{key}" if value is None else f"#SBATCH --{key}={sbatch_value(value, key)}")
    for flag in job.sbatch_extra:
        name, sep, value = flag.partition("=")
        lines.append(f"#SBATCH {name}={sbatch_value(value, name)}" if sep else f"#SBATCH {name}")
    return lines


def read_directives(script: str) -> dict[str, str | None]:
    """The options of a script's ``#SBATCH`` lines as sbatch reads them, by full long name (the last
    one wins), None for an option given without a value; the inverse of :func:`directive_lines`.

    Like sbatch: lines end at ``\n`` only, reading stops at the first line that is neither blank nor
    a comment, and every word must be an option (abbreviated and short ones resolved). ValueError,
    one line, where sbatch would refuse the script.
    """
    words: list[str] = []
    for line in script.split("\n"):
        if line.startswith("#SBATCH"):
            words += sbatch_words(line.removeprefix("#SBATCH"))
        elif line.strip(" \t\v\f\r") and not line.lstrip(" \t\v\f\r").startswith("#"):
            break
    return {option.name: option.value for option in parse_arguments(words)}


def script_directives(script: Path) -> dict[str, str | None]:
    """:func:`read_directives` of a batch script file, for a scheduler that reads it instead of sbatch;
    a script sbatch would refuse is an HpcTfError naming the file."""
    try:
        return read_directives(script.read_text(encoding="utf-8"))
    except OSError as err:
        raise HpcTfError(f"cannot read batch script {script}: {err.strerror}") from None
    except ValueError as err:  # what sbatch would refuse, in sbatch's words
        raise HpcTfError(f"batch script {script}: {err}") from None


def step_options(job: ResolvedJob) -> list[str]:
    """srun's options for the job's tasks, wherever an srun line is written (the batch script, submitit's)."""
    options = ["--kill-on-bad-exit=1"]  # one dead worker stops the others at once
    if job.cpus_per_task:
        # Slurm 22.05 and 23.02 steps do not inherit --cpus-per-task from the allocation: each task had one CPU
        options.append(f"--cpus-per-task={job.cpus_per_task}")
    return [*options, *job.srun_extra]  # the spec's srun_extra last: none of them is one of these
