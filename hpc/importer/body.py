"""The shell body of a batch script into the spec: environment, env, setup steps and the command.

The training command is the last line that starts tasks (``srun``, ``mpirun``…) running python or a
container, else the last that starts tasks, else the last that runs python. Lines before it are the
job's setup: module and activation lines become ``environment``, plain exports ``env``,
one-task-per-node ``srun`` lines node steps, anything else a setup step (bash runs it as written).
Lines after it, and blocks (``if``/``for``…), become notes.
"""

from __future__ import annotations

import re
from typing import get_args

from hpc.importer.draft import Draft
from hpc.importer.shell import BLOCK_OPENERS, Line, Unplaceable, Word, split, words
from hpc.scheduler.managed import MANAGED_SRUN_FLAGS, check_srun_flag
from hpc.scheduler.sbatch_options import OptionError, SbatchOption, parse_command_line
from hpc.spec.container import ContainerRuntime
from hpc.spec.model import MANAGED_ENV, MANAGED_ENV_PREFIXES, srun_env_option

LAUNCHERS = ("srun", "mpirun", "mpiexec", "horovodrun")
_PYTHON = re.compile(r"(.*/)?python[0-9.]*")
EXEC_RUNTIMES = tuple(r for r in get_args(ContainerRuntime) if r != "shifter")  # `RUNTIME exec IMAGE …`
# managed srun options the tasks' srun gets from the allocation anyway: dropped unless #SBATCH said otherwise
_ALLOCATION = {"nodes", "ntasks", "ntasks-per-node", "tasks-per-node", "cpus-per-task", "gres", "gpus", "gpus-per-node",
               "gpus-per-task", "partition", "account", "qos", "kill-on-bad-exit"}
_PER_NODE_COUNTS = ("${SLURM_NNODES}", "${SLURM_JOB_NUM_NODES}")
_ASSIGNMENT = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=")


def read_body(draft: Draft, body: list[Line], header: dict[str, str | None]) -> None:
    """Place the lines of ``body`` (everything after the ``#SBATCH`` header) in ``draft``."""
    lines, blocks = _simple_lines(body)
    for line in blocks:
        draft.note(line.number, line.text, "a compound command: make it a setup step or a script of its own")
    main = _main_command(lines)
    if main is None:
        draft.note(None, "", "no training command found: set command by hand")
        draft.set(("command",), ["python", "train.py"])
    for index, line in enumerate(lines):
        draft.reading = line.number
        if line.text.startswith("#"):
            if line.text.startswith("#SBATCH"):
                draft.note(line.number, line.text, "sbatch ignores #SBATCH after the first command")
            continue
        if main is None or index < main:
            _setup_line(draft, line, lines[:index])
        elif index == main:
            _command(draft, line, header)
        else:
            draft.note(line.number, line.text, "runs after the training command: hpc-tf's job ends with its tasks")


def _simple_lines(body: list[Line]) -> tuple[list[Line], list[Line]]:
    """Lines outside compound commands, and each compound command's lines joined into one."""
    simple: list[Line] = []
    blocks: list[Line] = []
    closer: list[str] = []
    for line in body:
        first = line.text.split()[0]
        if closer or first in BLOCK_OPENERS or line.text.endswith("{"):
            if not closer:
                blocks.append(line)
            else:
                joiner = " " if blocks[-1].text.endswith(("then", "do", "else", "{")) else "; "
                blocks[-1] = Line(blocks[-1].number, f"{blocks[-1].text}{joiner}{line.text}")
            if first in BLOCK_OPENERS:
                closer.append(BLOCK_OPENERS[first])
            elif line.text.endswith("{"):
                closer.append("}")
            if closer and (first == closer[-1] or line.text.endswith(f" {closer[-1]}")):
                closer.pop()
            continue
        simple.append(line)
    return simple, blocks


def _program(line: Line) -> str:
    head = line.text.split()
    while head and "=" in head[0] and not head[0].startswith("-"):  # VAR=value prefixes
        head = head[1:]
    return head[0] if head else ""


def _main_command(lines: list[Line]) -> int | None:
    """The training command: the last line that starts tasks and runs python (or a container), else the
    last that starts tasks, else the last that runs python."""
    def runs_python(line: Line) -> bool:
        return any(_PYTHON.fullmatch(w) or w in get_args(ContainerRuntime) for w in line.text.split())

    launches = [i for i, line in enumerate(lines) if _program(line) in LAUNCHERS]
    for found in ([i for i in launches if runs_python(lines[i])], launches,
                  [i for i, line in enumerate(lines) if runs_python(line) and not line.text.startswith("#")]):
        if found:
            return found[-1]
    return None


def _node_step(line: Line) -> str | None:
    """The command of an ``srun`` line that runs one task on each node (staging), as written; else None.
    A line that goes on after the srun (``&& …``, ``| …``) is not one: bash runs the rest in the batch shell."""
    if _program(line) != "srun":
        return None
    try:
        items = list(words(line.text))
    except Unplaceable as err:
        if err.operator:
            return None
        items = []
    if not items:  # a $(…) or pattern somewhere: the options may still be read word by word
        items = _leading(line.text)
    try:  # read as srun reads them, as srun_extra is checked
        options, at = parse_command_line([item.text for item in items[1:]])
    except OptionError:
        return None  # srun would refuse the line: it stays shell code, as written
    given = {option.name: option.value for option in options}
    one_per_node = (given.get("ntasks-per-node") == "1"
                    or (given.get("ntasks") is not None and given.get("ntasks") == given.get("nodes"))
                    or given.get("ntasks") in _PER_NODE_COUNTS)
    if not one_per_node or 1 + at >= len(items):
        return None
    return line.text[items[1 + at].start:]


def _leading(text: str) -> list[Word]:
    """The words before the first one the spec cannot hold."""
    found: list[Word] = []
    try:
        for word in words(text):
            found.append(word)
    except Unplaceable:
        pass
    return found


def _setup_line(draft: Draft, line: Line, before: list[Line]) -> None:
    text = line.text
    node = _node_step(line)
    if node is not None:
        draft.add(("setup",), {"node": node})
        return
    try:
        argv = split(text)
    except Unplaceable:
        argv = []
    if argv and _environment(draft, argv):
        return
    if len(argv) == 2 and argv[0] == "cd":
        draft.set(("workdir",), argv[1])
        return
    if argv[:1] == ["set"]:
        draft.note(line.number, text, "hpc-tf checks every setup step itself and stops the job on the first failure")
        return
    if argv[:1] == ["export"] and len(argv) == 2 and "=" in argv[1] and _export(draft, line, argv[1], before):
        return
    draft.add(("setup",), text)


def _environment(draft: Draft, argv: list[str]) -> bool:
    """``module``/``ml``, ``conda activate``, ``source …/bin/activate`` into environment; whether placed."""
    if argv[0] in ("module", "ml"):
        sub = [a for a in argv[1:] if not a.startswith("-")]
        if argv[0] == "ml" and sub and sub[0] not in ("purge", "use", "load", "add"):
            sub = ["load", *sub]
        if sub[:1] == ["purge"]:
            draft.set(("environment", "module_purge"), True)
        elif sub[:1] == ["use"] and len(sub) > 1:
            for path in sub[1:]:
                draft.add(("environment", "module_use"), path)
        elif sub[:1] in (["load"], ["add"]):
            for module in sub[1:]:
                draft.add(("environment", "modules"), module)
        else:
            return False
        return True
    # environment is set up before every setup step: an activation that an earlier step prepares (`source
    # …/conda.sh`, `conda create`, `virtualenv`) stays a step after it
    steps = " ".join(step if isinstance(step, str) else step["node"] for step in draft.get(("setup",)) or [])
    if argv[:2] == ["conda", "activate"] or argv[:2] in (["source", "activate"], [".", "activate"]):
        if len(argv) == 3 and "conda" not in steps:
            draft.set(("environment", "conda"), argv[2])
            return True
        return False
    activate = argv[1] if argv[0] in ("source", ".") and len(argv) == 2 else ""
    if activate.endswith("/bin/activate") and not any(tool in steps for tool in ("venv", "virtualenv")):
        draft.set(("environment", "venv"), activate.removesuffix("/bin/activate"))
        return True
    return False


def _export(draft: Draft, line: Line, assignment: str, before: list[Line]) -> bool:
    """``export KEY=value`` into env (or srun_extra); False to keep it a setup step: env is exported
    before the setup steps run, so a value naming a variable the script set itself stays in order there."""
    key, _, value = assignment.partition("=")
    assigned = {m.group(1) for li in before if (m := _ASSIGNMENT.match(li.text))}
    if any("${" + name + "}" in value for name in assigned):
        return False
    if option := srun_env_option(key):  # srun reads it as this option
        _srun_option(draft, line, f"--{option}={value}")
        return True
    if key in MANAGED_ENV or key.startswith(MANAGED_ENV_PREFIXES):
        draft.note(line.number, line.text, f"{key} is set by hpc-tf or Slurm for each task (see srun_extra)")
        return True
    draft.set(("env", key), value)
    return True


def _command(draft: Draft, line: Line, header: dict[str, str | None]) -> None:
    try:
        argv = split(line.text)
    except Unplaceable as err:
        draft.note(line.number, line.text, f"the command holds {err}: write it as a script and run that")
        draft.set(("command",), ["python", "train.py"])
        return
    while argv and "=" in argv[0] and not argv[0].startswith("-"):
        key, _, value = argv.pop(0).partition("=")
        draft.set(("env", key), value)
    launcher = argv[0] if argv and argv[0] in LAUNCHERS else None
    if launcher == "srun":
        try:
            options, at = parse_command_line(argv[1:])
        except OptionError as err:
            draft.note(line.number, line.text, f"srun would refuse {err}")
        else:
            _srun_extra(draft, line, options, header)
            argv, launcher = argv[1 + at:], None
    if launcher is not None:
        at = next((i for i, a in enumerate(argv) if _PYTHON.fullmatch(a)), len(argv))
        draft.note(line.number, line.text, f"hpc-tf starts one task per worker with srun, not {launcher}; "
                                           f"dropped: {' '.join(argv[:at])} (srun_extra takes srun's options)")
        argv = argv[at:]
    argv = _container(draft, line, argv, header)
    if not argv:
        draft.note(line.number, line.text, "no program left to run: set command by hand")
        argv = ["python", "train.py"]
    draft.set(("command",), argv)


def _srun_extra(draft: Draft, line: Line, options: list[SbatchOption], header: dict[str, str | None]) -> None:
    for option in options:
        name, value = option.name, option.value
        if name == "gpu-bind":
            draft.set(("resources", "gpu_binding"), "node" if value == "none" else "slurm")
            if value == "none":
                continue
        if name not in MANAGED_SRUN_FLAGS:
            _srun_option(draft, line, str(option))
        elif header.get(name, value) != value or name not in _ALLOCATION:
            # the tasks' srun gets it from the spec: say so where the script asked for something else
            draft.note(line.number, str(option), f"--{name}: {MANAGED_SRUN_FLAGS[name]}")


def _srun_option(draft: Draft, line: Line, option: str) -> None:
    """``option`` into srun_extra, checked as the spec checks it; srun_extra reaches srun as written, so a
    value naming a variable stays a note."""
    try:
        checked = check_srun_flag(option)
    except ValueError as err:
        draft.note(line.number, option, str(err))
        return
    if "$" in checked:
        draft.note(line.number, checked, "srun_extra reaches srun as written (no ${NAME} expanded there): "
                                         "write the value by hand")
        return
    draft.add(("srun_extra",), checked)


def _container(draft: Draft, line: Line, argv: list[str], header: dict[str, str | None]) -> list[str]:
    """``apptainer exec [opts] IMAGE cmd…`` and ``shifter [--image=X] cmd…`` into environment.container."""
    if argv[:1] == ["shifter"]:
        rest = argv[1:]
        image = header.get("image")
        while rest and rest[0].startswith("-"):
            name, _, value = rest.pop(0)[2:].partition("=")
            if name == "image":
                image = value
        if image:
            draft.set(("environment", "container"), {"image": image, "runtime": "shifter"})
        else:
            draft.note(line.number, line.text, "shifter without an image: set environment.container.image")
        return rest
    if argv[:1] and argv[0] in EXEC_RUNTIMES and argv[1:2] == ["exec"]:
        container: dict[str, object] = {"runtime": argv[0]}
        rest = argv[2:]
        while rest and rest[0].startswith("-"):
            option = rest.pop(0)
            name, sep, value = option.lstrip("-").partition("=")
            if name in ("nv", "rocm"):
                container["gpu"] = "nvidia" if name == "nv" else "amd"
                continue
            if not sep and rest:
                value = rest.pop(0)
            if name in ("B", "bind"):
                container.setdefault("binds", []).extend(value.split(","))  # type: ignore[attr-defined]
            elif name == "overlay":
                container.setdefault("overlays", []).append(value)  # type: ignore[attr-defined]
            else:
                draft.note(line.number, f"{option} {value}".strip(), f"{argv[0]} option not placed: set it by hand")
        if not rest:
            return rest
        container["image"] = rest.pop(0)
        container.setdefault("gpu", "none")
        draft.set(("environment", "container"), container)
        return rest
    return argv
