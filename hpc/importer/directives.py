"""``#SBATCH`` lines into spec fields: each option to its field, an unmanaged one to ``sbatch_extra``,
a managed one with no field (``--output``, ``--array``) to a note naming what hpc-tf does instead."""

from __future__ import annotations

import re
from collections.abc import Callable

from hpc.importer.draft import Draft
from hpc.importer.shell import Line
from hpc.render.directives import gpu_count, read_gres
from hpc.render.quoting import sbatch_words
from hpc.scheduler.managed import MANAGED_FLAGS
from hpc.scheduler.sbatch_options import OptionError, SbatchOption, parse_arguments
from hpc.spec.model import NAME_RE
from hpc.units import ALL_MEMORY

# options of site plugins that sbatch's own table lacks: NERSC's Shifter (--image, --module)
SHIFTER_OPTIONS = ("--image=", "--image ", "--module=", "--module ")


def header_lines(lines: list[Line]) -> tuple[list[Line], list[Line]]:
    """The ``#SBATCH`` lines sbatch reads (up to the first command) and the rest of the script."""
    for index, line in enumerate(lines):
        if not line.text.startswith("#"):
            return [li for li in lines[:index] if li.text.startswith("#SBATCH")], lines[index:]
    return [li for li in lines if li.text.startswith("#SBATCH")], []


def read_header(draft: Draft, header: list[Line]) -> dict[str, str | None]:
    """Place every option of ``header`` in ``draft``; the options as read, for the body's reader."""
    seen: dict[str, str | None] = {}
    placed: list[tuple[Line, SbatchOption]] = []
    for line in header:
        rest = line.text.removeprefix("#SBATCH").strip()
        if rest.startswith(SHIFTER_OPTIONS):
            name, _, value = rest[2:].replace(" ", "=", 1).partition("=")
            seen[name] = value.strip()
            if name == "module":
                draft.note(line.number, line.text, "Shifter modules: add them with sbatch_extra at your site")
            continue
        try:
            options = parse_arguments(sbatch_words(rest))
        except (OptionError, ValueError) as err:
            draft.note(line.number, line.text, f"sbatch would refuse it: {err}")
            continue
        for option in options:
            seen[option.name] = option.value
            placed.append((line, option))
    for line, option in placed:
        draft.reading = line.number
        _place(draft, line, option, seen)
    return seen


def _place(draft: Draft, line: Line, option: SbatchOption, seen: dict[str, str | None]) -> None:
    name, value = option.name, option.value or ""
    if name in _FIELDS:
        try:
            _FIELDS[name](draft, value, seen)
        except ValueError as err:
            draft.note(line.number, line.text, str(err))
    elif name == "gpu-bind":
        # every task sees the node's GPUs (it picks by local rank): the spec's node mode; else Slurm's binding
        draft.set(("resources", "gpu_binding"), "node" if value == "none" else "slurm")
        if value != "none":
            draft.add(("sbatch_extra",), str(option))
    elif name in MANAGED_FLAGS:
        draft.note(line.number, line.text, f"--{name}: {MANAGED_FLAGS[name]}")
    else:
        draft.add(("sbatch_extra",), str(option))


def job_name(text: str) -> str:
    """A job name the spec takes (letters, digits, '_', '.', '-'): the rest of ``text`` as '-'."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")[:64] or "job"
    return name if NAME_RE.fullmatch(name) else f"job-{name}"[:64]


def _name(draft: Draft, value: str, seen: dict[str, str | None]) -> None:
    draft.set(("name",), job_name(value))
    if draft.get(("name",)) != value:
        draft.note(draft.reading, f"--job-name={value}", f"a job name is letters, digits, '_', '.', '-': "
                                                         f"named {draft.get(('name',))}")


def _count(value: str, what: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{what} {value!r} is not one whole number: set it by hand")
    return int(value)


def _set_gpus(draft: Draft, key: str, gpus: tuple[str | None, int]) -> None:
    gpu_type, count = gpus
    draft.set(("resources", key), count)
    if gpu_type:
        draft.set(("resources", "gpu_type"), gpu_type)


def _gres(draft: Draft, value: str, seen: dict[str, str | None]) -> None:
    gpus, others = read_gres(value)
    for request in gpus:
        _set_gpus(draft, "gpus_per_node", request)
    for item in others:
        draft.add(("resources", "gres"), item)


def _total_gpus(draft: Draft, value: str, seen: dict[str, str | None]) -> None:
    gpu_type, count = gpu_count(value)
    nodes = _count(seen.get("nodes") or "1", "--nodes")
    if count % nodes:
        raise ValueError(f"--gpus={value} does not split evenly over {nodes} nodes: set resources.gpus_per_node")
    _set_gpus(draft, "gpus_per_node", (gpu_type, count // nodes))


def _ntasks(draft: Draft, value: str, seen: dict[str, str | None]) -> None:
    if "ntasks-per-node" in seen:
        return  # the per-node count says it already
    tasks = _count(value, "--ntasks")
    nodes = _count(seen.get("nodes") or "1", "--nodes")
    if tasks % nodes:
        raise ValueError(f"{tasks} tasks do not split evenly over {nodes} nodes: set resources.tasks_per_node")
    draft.set(("resources", "tasks_per_node"), tasks // nodes)


def _mem(draft: Draft, value: str, seen: dict[str, str | None]) -> None:
    draft.set(("resources", "mem"), ALL_MEMORY if value == "0" else value)


def _field(*path: str, convert: Callable[[str], object] = str) -> Callable[[Draft, str, dict[str, str | None]], None]:
    def place(draft: Draft, value: str, seen: dict[str, str | None]) -> None:
        draft.set(path, convert(value))
    return place


def _integer(what: str) -> Callable[[str], object]:
    return lambda value: _count(value, what)


# sbatch long option -> how it lands in the draft
_FIELDS: dict[str, Callable[[Draft, str, dict[str, str | None]], None]] = {
    "job-name": _name,
    "nodes": _field("resources", "nodes", convert=_integer("--nodes")),
    "ntasks-per-node": _field("resources", "tasks_per_node", convert=_integer("--ntasks-per-node")),
    "ntasks": _ntasks,
    "cpus-per-task": _field("resources", "cpus_per_task", convert=_integer("--cpus-per-task")),
    "gres": _gres,
    "gpus-per-node": lambda draft, value, seen: _set_gpus(draft, "gpus_per_node", gpu_count(value)),
    "gpus-per-task": lambda draft, value, seen: _set_gpus(draft, "gpus_per_task", gpu_count(value)),
    "gpus": _total_gpus,
    "mem": _mem,
    "mem-per-cpu": _field("resources", "mem_per_cpu"),
    "mem-per-gpu": _field("resources", "mem_per_gpu"),
    "time": _field("resources", "time"),
    "partition": _field("resources", "partition"),
    "account": _field("resources", "account"),
    "qos": _field("resources", "qos"),
    "constraint": _field("resources", "constraint"),
    "exclusive": lambda draft, value, seen: draft.set(("resources", "exclusive"), True),
    "chdir": _field("workdir"),
}
