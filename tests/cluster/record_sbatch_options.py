#!/usr/bin/env python3
"""Record sbatch's or srun's option table for one Slurm version into hpc/scheduler/sbatch_option_table.py.

    tests/cluster/record_sbatch_options.py SOURCE            # add or replace that version's table
    tests/cluster/record_sbatch_options.py --check SOURCE    # exit 1 with a diff if the table differs
    tests/cluster/record_sbatch_options.py --command srun SOURCE   # srun's table (the default: sbatch)

SOURCE is either
* an installed ``sbatch`` or ``srun`` (e.g. /usr/bin/sbatch, or <prefix>/bin/srun of a source build):
  the table is the one the command itself builds, got by calling ``slurm_option_table_create`` in the
  libslurmfull it is linked with, with an options struct whose ``sbatch_opt`` (or ``srun_opt``) is set.
  Needs a readable slurm.conf (SLURM_CONF) whose plugstack loads no SPANK plugin, as on the test
  cluster, or the plugins' options would be recorded as the command's; or
* a Slurm source tarball (slurm-X.Y.Z.tar.xz): the same selection read from ``src/common/slurm_opt.c``
  (the ``common_options[]`` entries with a name and ``.set_func`` or ``.set_func_sbatch``/``_srun``).

Both are what the command hands getopt_long: for sbatch, the options of a command line and of
``#SBATCH`` lines; srun and sbatch share slurm_opt.c, each with its own selection.
Stdlib only, so it runs on a cluster node without the project installed.
"""

from __future__ import annotations

import argparse
import ast
import ctypes
import difflib
import json
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from itertools import takewhile
from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "hpc" / "scheduler" / "sbatch_option_table.py"
# the command -> which pointer of slurm_opt_t selects its options (salloc_opt, sbatch_opt, scron_opt,
# srun_opt come first in the struct, in that order in every supported version)
COMMANDS = {"sbatch": 1, "srun": 3}
ARGUMENT = {0: "none", 1: "required", 2: "optional"}  # getopt.h's no/required/optional_argument
ARGUMENT_NAMES = {"no_argument": "none", "required_argument": "required", "optional_argument": "optional"}

Table = tuple[dict[str, str], dict[str, str]]  # long name -> argument kind, short letter -> long name


def from_installed(program: str, command: str) -> tuple[str, Table]:
    """The table the installed ``sbatch``/``srun`` builds, read from the libslurmfull it is linked with."""
    release = subprocess.run([program, "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    linked = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    found = re.search(r"libslurmfull\.so => (\S+)", linked)
    if found is None:
        sys.exit(f"{program} is not linked with libslurmfull.so (ldd: {linked.strip()})")
    return release, _library_table(found.group(1), command)


def _library_table(path: str, command: str) -> Table:
    class Option(ctypes.Structure):  # struct option from getopt.h
        _fields_ = [("name", ctypes.c_char_p), ("has_arg", ctypes.c_int),
                    ("flag", ctypes.c_void_p), ("val", ctypes.c_int)]

    # RTLD_GLOBAL: the plugins slurm_init loads (auth/munge…) take symbols such as slurm_conf from it, as from sbatch
    lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    lib.slurm_option_table_create.restype = ctypes.POINTER(Option)
    lib.slurm_option_table_create.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)]
    lib.slurm_init(None)
    if lib.spank_init_allocator() != 0:  # sbatch does this first; without it the table comes back NULL
        sys.exit(f"{path}: spank_init_allocator failed")
    # slurm_opt_t starts with the salloc_opt, sbatch_opt, scron_opt, srun_opt pointers: only the
    # command's set selects its options; nothing else in the struct is read.
    opt = (ctypes.c_char * 65536)()
    command_opt = (ctypes.c_char * 65536)()
    pointer = COMMANDS[command] * ctypes.sizeof(ctypes.c_void_p)
    ctypes.c_void_p.from_buffer(opt, pointer).value = ctypes.addressof(command_opt)
    short_string = ctypes.c_char_p()
    table = lib.slurm_option_table_create(ctypes.addressof(opt), ctypes.byref(short_string))
    letters = set(re.sub(r"[^A-Za-z0-9]", "", (short_string.value or b"").decode()))
    long: dict[str, str] = {}
    short: dict[str, str] = {}
    values: dict[str, object] = {}
    i = 0
    while table[i].name:
        name = table[i].name.decode()
        long[name] = ARGUMENT[table[i].has_arg]
        values[name] = table[i].val
        if table[i].val < 128 and chr(table[i].val) in letters:
            short[chr(table[i].val)] = name
        i += 1
    _check_aliases(long, values)
    return long, short


def _check_aliases(long: dict[str, str], values: dict[str, object]) -> None:
    """glibc's getopt_long takes a prefix of two options that share has_arg and val as one option, not
    as ambiguous; hpc-tf's parser assumes no such prefix matches those two alone (true up to 25.11)."""
    for a in long:
        for b in long:
            if a < b and (long[a], values[a]) == (long[b], values[b]):
                # only a prefix both share and no other option has would be read otherwise (srun's
                # --cpu-bind and --cpu_bind: every prefix of both also starts --cpu-freq)
                shared = "".join(x for x, _ in takewhile(lambda pair: pair[0] == pair[1], zip(a, b, strict=False)))
                if shared and {n for n in long if n.startswith(shared)} == {a, b}:
                    sys.exit(f"--{a} and --{b} are one option to getopt_long: teach hpc/scheduler/sbatch_options.py")


def from_source(path: str, command: str) -> tuple[str, Table]:
    with tarfile.open(path) as tar:
        top = tar.getnames()[0].split("/")[0]
        meta = _member(tar, f"{top}/META")
        source = _member(tar, f"{top}/src/common/slurm_opt.c")
    fields = dict(re.findall(r"^\s*(Major|Minor|Micro):\s*(\S+)", meta, re.MULTILINE))
    structs = {}
    for name, body in re.findall(r"^static slurm_cli_opt_t slurm_opt_(\w+) = \{(.*?)^\};", source, re.S | re.M):
        body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
        # a build-time choice (srun's --x11 exists only when built WITH_SLURM_X11, configure's default):
        # the first branch, as a default build compiles it
        body = re.sub(r"^#if.*?\n(.*?)^#else.*?^#endif\n", r"\1", body, flags=re.S | re.M)
        structs[name] = dict(re.findall(r"^\s*\.(\w+)\s*=\s*(.+?),?\s*$", body, re.MULTILINE))
        if "#if" in body and {"set_func", f"set_func_{command}"} & structs[name].keys():
            sys.exit(f"{path}: slurm_opt_{name} has #if inside; read it by hand and extend this script")
    listed = re.search(r"common_options\[\] = \{(.*?)\};", source, re.S)
    if listed is None:
        sys.exit(f"{path}: no common_options[] in slurm_opt.c")
    long: dict[str, str] = {}
    short: dict[str, str] = {}
    values: dict[str, object] = {}
    for entry in re.findall(r"&slurm_opt_(\w+)", listed.group(1)):
        fields_of = structs[entry]
        if fields_of.get("name", "NULL") == "NULL" or not {"set_func", f"set_func_{command}"} & fields_of.keys():
            continue
        name = ast.literal_eval(fields_of["name"])
        long[name] = ARGUMENT_NAMES[fields_of["has_arg"]]
        values[name] = fields_of["val"]
        letter = re.fullmatch(r"'([A-Za-z0-9])'", fields_of["val"])
        if letter:
            short[letter.group(1)] = name
    _check_aliases(long, values)
    return f"{fields['Major']}.{int(fields['Minor']):02d}.{fields['Micro']}", (long, short)


def _member(tar: tarfile.TarFile, name: str) -> str:
    handle = tar.extractfile(name)
    if handle is None:
        sys.exit(f"{name} is missing")
    return handle.read().decode()


Recorded = dict[str, tuple[dict[str, str], dict[str, Table]]]  # command -> (version -> source, version -> table)


def read_module() -> Recorded:
    """The recorded tables of each command, and where each came from."""
    if not MODULE.exists():
        return {}
    tree = ast.parse(MODULE.read_text())
    # only the literal tables: LONG_OPTIONS and SHORT_OPTIONS are built from them when imported
    values = {node.target.id: ast.literal_eval(node.value) for node in tree.body
              if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
              and isinstance(node.value, ast.Dict)}
    return {command: (sources, {
        v: ({**values["COMMON_LONG_OPTIONS"][command], **values["VERSION_LONG_OPTIONS"][command][v]},
            {**values["COMMON_SHORT_OPTIONS"][command], **values["VERSION_SHORT_OPTIONS"][command][v]})
        for v in sources}) for command, sources in values["RECORDED_FROM"].items()}


def split_common(tables: dict[str, dict[str, str]]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The entries every version has alike, and per version the rest (what it adds or has otherwise)."""
    first = next(iter(tables.values()), {})
    common = {key: value for key, value in first.items() if all(t.get(key) == value for t in tables.values())}
    return common, {v: {k: x for k, x in table.items() if k not in common} for v, table in tables.items()}


def render_module(recorded: Recorded) -> str:
    q = json.dumps  # a double-quoted Python string literal for these plain names
    commands = sorted(recorded, key=list(COMMANDS).index)
    split = {c: (split_common({v: t[0] for v, t in sorted(recorded[c][1].items())}),
                 split_common({v: t[1] for v, t in sorted(recorded[c][1].items())})) for c in commands}

    def by_name(table: dict[str, str]) -> list[tuple[str, str]]:
        return sorted(table.items())

    def by_letter(table: dict[str, str]) -> list[tuple[str, str]]:
        return sorted(table.items(), key=lambda item: (item[0].lower(), item[0]))

    def block(table: dict[str, str], order: Callable[[dict[str, str]], list[tuple[str, str]]], indent: str,
              key: str) -> list[str]:
        """``key: {…},`` its entries packed into lines of at most 110 characters (``key: {},`` when empty)."""
        if not table:
            return [f"{indent}{q(key)}: {{}},"]
        lines = [f"{indent}    "]
        for k, v in order(table):
            entry = f"{q(k)}: {q(v)},"
            if len(lines[-1]) + len(entry) + 1 > 110 and lines[-1].strip():
                lines.append(f"{indent}    ")
            lines[-1] += (" " if lines[-1].strip() else "") + entry
        return [f"{indent}{q(key)}: {{", *lines, f"{indent}}},"]

    def per_command(name: str, kind: str, of: Callable[[str], dict[str, str]],
                    order: Callable[[dict[str, str]], list[tuple[str, str]]]) -> list[str]:
        return [f"{name}: dict[str, {kind}] = {{", *(line for c in commands for line in block(of(c), order, "    ", c)),
                "}"]

    def per_version(name: str, of: Callable[[str], dict[str, dict[str, str]]],
                    order: Callable[[dict[str, str]], list[tuple[str, str]]]) -> list[str]:
        lines = [f"{name}: dict[str, dict[str, dict[str, str]]] = {{"]
        for c in commands:
            versions = of(c)
            entries = (line for v in sorted(versions) for line in block(versions[v], order, "        ", v))
            lines += [f"    {q(c)}: {{", *entries, "    },"]
        return [*lines, "}"]

    lines = [
        '"""sbatch\'s and srun\'s options per supported Slurm version, as each hands them to getopt_long.',
        "",
        "Generated by tests/cluster/record_sbatch_options.py (see there how); do not edit by hand.",
        "Each table is stored once for what every version has alike, plus per version the rest.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "# command -> version -> what the table was read from",
        *per_command("RECORDED_FROM", "dict[str, str]", lambda c: recorded[c][0], by_name),
        "# command -> long option -> its argument: 'none', 'required' or 'optional' (only as --name=value)",
        *per_command("COMMON_LONG_OPTIONS", "dict[str, str]", lambda c: split[c][0][0], by_name),
        "# command -> version -> the long options it adds or takes otherwise",
        *per_version("VERSION_LONG_OPTIONS", lambda c: split[c][0][1], by_name),
        "# command -> short option letter -> long option",
        *per_command("COMMON_SHORT_OPTIONS", "dict[str, str]", lambda c: split[c][1][0], by_letter),
        "# command -> version -> the short options it adds or maps otherwise",
        *per_version("VERSION_SHORT_OPTIONS", lambda c: split[c][1][1], by_letter),
        "",
        "# command -> version -> its whole table",
        "LONG_OPTIONS: dict[str, dict[str, dict[str, str]]] = {",
        "    c: {v: {**COMMON_LONG_OPTIONS[c], **VERSION_LONG_OPTIONS[c][v]} for v in versions}",
        "    for c, versions in RECORDED_FROM.items()",
        "}",
        "SHORT_OPTIONS: dict[str, dict[str, dict[str, str]]] = {",
        "    c: {v: {**COMMON_SHORT_OPTIONS[c], **VERSION_SHORT_OPTIONS[c][v]} for v in versions}",
        "    for c, versions in RECORDED_FROM.items()",
        "}",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="an installed sbatch or srun (e.g. /usr/bin/sbatch), or a slurm-X.Y.Z.tar.xz")
    parser.add_argument("--check", action="store_true", help="compare with the recorded table, write nothing")
    parser.add_argument("--command", choices=sorted(COMMANDS), default="sbatch", help="whose options (default: sbatch)")
    args = parser.parse_args()
    command = args.command
    if ".tar" in Path(args.source).name:
        release, table = from_source(args.source, command)
    else:
        release, table = from_installed(args.source, command)
    version = ".".join(release.split(".")[:2])  # options change with major releases only
    recorded = read_module()
    sources, tables = recorded.get(command, ({}, {}))
    if args.check:
        was = render_module({command: ({version: ""}, {version: tables.get(version, ({}, {}))})})
        found = render_module({command: ({version: ""}, {version: table})})
        diff = list(difflib.unified_diff(was.splitlines(), found.splitlines(), "recorded", args.source, lineterm=""))
        print("\n".join(diff) if diff else f"{command} {version}: the recorded table matches {args.source}")
        return 1 if diff else 0
    sources[version] = f"{Path(args.source).name} (Slurm {release})"
    tables[version] = table
    recorded[command] = sources, tables
    text = render_module(recorded)
    temp = MODULE.with_suffix(".tmp")
    temp.write_text(text)
    temp.replace(MODULE)
    print(f"{command} {version}: {len(table[0])} long options, {len(table[1])} short, written to {MODULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
