"""Rendering: golden scripts per (site, job), and hostile values that must reach the job unchanged.

Regenerate the golden files after an intended change with:
    HPC_TF_REGEN_GOLDEN=1 pytest tests/unit/test_render.py
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from _batch_fixtures import install_run_dir

from hpc.errors import SpecError
from hpc.render.cpu_jobs import ServeJob, render_handoff_script, render_router_script, render_serve_script
from hpc.render.directives import read_directives
from hpc.render.quoting import UnsafeValue, sbatch_value, sh
from hpc.render.script import render_script
from hpc.resolve import ResolvedJob, resolve
from hpc.site.load import load_site
from hpc.spec import load_spec, load_spec_text
from hpc.text import expand_run_time, run_time_literal

TESTS = Path(__file__).resolve().parents[1]
SPECS = TESTS / "fixtures" / "specs"
GOLDEN = TESTS / "golden"
ALICE = {"HOME": "/home/alice", "USER": "alice"}
CASES = [
    ("sandbox", "minimal"),
    ("sandbox", "multinode"),
    ("sandbox", "per-task"),
    ("sandbox", "handoff"),
    ("sandbox", "setup-steps"),  # module purge/use, setup lines, a node step, srun_extra
    ("example-apptainer", "apptainer"),
    ("example-plain", "minimal"),
    ("local", "per-task"),  # the local launcher: its srun stand-in, and requeue through its supervisor
]


def resolved(site: str, spec: str, overrides: tuple[str, ...] = ()) -> ResolvedJob:
    loaded = load_spec(SPECS / f"{spec}.yaml")
    return resolve(loaded, load_site(site, overrides, environ=ALICE), f"{spec}-run", environ=ALICE)


def check_golden(script: str, golden: Path) -> None:
    if os.environ.get("HPC_TF_REGEN_GOLDEN"):
        golden.write_text(script)
    assert golden.is_file(), f"missing {golden}; create it with HPC_TF_REGEN_GOLDEN=1 pytest {__file__}"
    assert script == golden.read_text(), (
        f"rendered script differs from {golden.name}; if the change is intended, regenerate with "
        f"HPC_TF_REGEN_GOLDEN=1 pytest tests/unit/test_render.py"
    )
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


@pytest.mark.parametrize(("site", "spec"), CASES)
def test_golden_script(site: str, spec: str) -> None:
    job = resolved(site, spec)
    if job.handoff is not None:  # the dependent hand-off job's script beside the training script
        check_golden(render_handoff_script(job), GOLDEN / f"{site}--{spec}.handoff.sbatch")
    check_golden(render_script(job), GOLDEN / f"{site}--{spec}.sbatch")


# ---- sbatch's reading of "#SBATCH" lines, as its option parser does it --------------------------

def sbatch_arguments(line: str) -> list[str]:
    """Split the text after ``#SBATCH`` like sbatch: backslash escapes, quotes group, unquoted # ends."""
    args: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            break
        arg, quote = "", ""
        while i < n and (quote or not line[i].isspace()):
            ch = line[i]
            if ch == "\\" and i + 1 < n:
                arg += line[i + 1]
                i += 2
                continue
            if quote:
                if ch == quote:
                    quote = ""
                else:
                    arg += ch
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                return [*args, arg] if arg else args
            else:
                arg += ch
            i += 1
        args.append(arg)
    return args


def directives(script: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            (arg,) = sbatch_arguments(line[len("#SBATCH "):])
            key, _, value = arg.partition("=")
            out[key] = value
    return out


@pytest.mark.parametrize(
    "value", ["plain", "two words", 'say "hi"', "it's", "a # b", "back\\slash", "$(x) `y` ;z", "100%", ""]
)
def test_sbatch_value_round_trips(value: str) -> None:
    assert sbatch_arguments(f"--comment={sbatch_value(value)}") == [f"--comment={value}"]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b", "a\u2028b", "a\u2029b", "a\x85b", "a\vb", "a\fb", "a\x1eb"])
def test_every_line_break_refused_by_every_quoting(bad: str) -> None:
    # the same check as the spec's (hpc.text.one_line), for values that do not come from a spec
    with pytest.raises(UnsafeValue, match=r"contains \\"):
        sbatch_value(bad)
    with pytest.raises(UnsafeValue):
        sh(bad)


# ---- hostile values: run the rendered script with a shimmed srun and prove nothing got executed ---

SHIM_SRUN = """#!/bin/bash
# records the argv and the environment the script hands to srun, one NUL-terminated item each
printf '%s\\0' "$@" > "$SHIM_OUT/srun.argv"
printf '%s' "$MSG" > "$SHIM_OUT/msg"
printf '%s' "$COPY" > "$SHIM_OUT/copy"
pwd > "$SHIM_OUT/pwd"
"""
SHIM_RECORD = """#!/bin/bash
printf '%s\\0' "$(basename "$0")" "$@" >> "$SHIM_OUT/calls"
"""


# a variable's value that bash must not read again as code once it has expanded ${HOSTILE}
HOSTILE = "$(touch PWNED); touch PWNED `touch PWNED` ${HOME} '\"\\"


def hostile_job(tmp_path: Path) -> ResolvedJob:
    text = (SPECS / "hostile.yaml").read_text()
    workdir = tmp_path / "dir with spaces" / "it's $(x)"
    workdir.mkdir(parents=True)
    text = text.replace('"/tmp/dir with spaces/it\'s $$(x)"', f'"{run_time_literal(str(workdir))}"')
    loaded = load_spec_text(text, "hostile.yaml", tmp_path)
    site = load_site("sandbox", (f"runs_dir={tmp_path / 'runs %j'}",), environ=ALICE)
    return resolve(loaded, site, "hostile-run", environ=ALICE)


def test_hostile_values_reach_the_job_unchanged_and_run_nothing(tmp_path: Path) -> None:
    job = hostile_job(tmp_path)
    script = render_script(job)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)

    found = directives(script)
    assert found["--comment"] == 'say "hi" # there \\ `touch PWNED` \'q\''
    assert found["--constraint"] == "a&b|c # d"
    assert found["--job-name"] == "hostile-job"
    # the literal '%' of the runs dir is escaped for Slurm's filename patterns, %j is kept
    assert found["--output"] == f"{tmp_path}/runs %%j/hostile-run/logs/batch-%j.out"
    # the local launcher reads the lines back as sbatch does
    assert {f"--{key}": value or "" for key, value in read_directives(script).items()} == found

    shims = tmp_path / "shims"
    shims.mkdir()
    for name, body in (("srun", SHIM_SRUN), ("conda", SHIM_RECORD), ("module", SHIM_RECORD)):
        (shims / name).write_text(body)
        (shims / name).chmod(stat.S_IRWXU)
    out = tmp_path / "out"
    out.mkdir()
    env = {"PATH": f"{shims}:/usr/bin:/bin", "SHIM_OUT": str(out), "HOME": str(tmp_path), "HOSTILE": HOSTILE}
    script_path = tmp_path / "job.sbatch"
    script_path.write_text(script)
    install_run_dir(job)  # the batch driver the script execs, and the resolved job it reads
    subprocess.run(["bash", str(script_path)], env=env, cwd=tmp_path, check=True, timeout=30)

    argv = (out / "srun.argv").read_bytes().decode().split("\0")[:-1]
    assert argv[argv.index("--") + 1:] == [expand_run_time(word, env) for word in job.command]
    # $$ is a literal $; ${HOSTILE} is expanded once and its value stays text
    assert argv[-5:] == ["$HOME", "*", "100%", HOSTILE, f"pre-{HOSTILE}-post"]
    assert (out / "msg").read_text() == "hello; touch PWNED `touch PWNED` $(touch PWNED) 'q' \"d\" # c \\"
    assert (out / "copy").read_text() == HOSTILE
    assert (out / "pwd").read_text().strip() == expand_run_time(job.workdir, env)
    calls = (out / "calls").read_bytes().decode().split("\0")
    assert calls[calls.index("activate") - 1:][:3] == ["conda", "activate", "my env $(touch PWNED)"]
    assert not list(tmp_path.rglob("PWNED")), "a hostile value was executed"


def test_impossible_resources_for_the_site_are_refused_with_the_line() -> None:
    text = "name: a\ncommand: x\nresources:\n  nodes: 3\n  gpus_per_node: 8\n  partition: gpu\n"
    with pytest.raises(SpecError) as info:
        resolve(load_spec_text(text, "job.yaml", Path("/x")), load_site("sandbox", environ=ALICE), "r", ALICE)
    found = [str(p) for p in info.value.problems]
    assert any(p.startswith("job.yaml:5: resources.gpus_per_node: 8 GPUs per node") for p in found)
    assert any(p.startswith("job.yaml:4: resources.nodes:") and "at most 2" in p for p in found)


def test_unknown_partition_lists_the_choices() -> None:
    text = "name: a\ncommand: x\nresources: {partition: gpgpu}\n"
    with pytest.raises(SpecError, match="choose one of: gpu, cpu"):
        resolve(load_spec_text(text, "job.yaml", Path("/x")), load_site("sandbox", environ=ALICE), "r", ALICE)


def test_gpus_on_a_cpu_partition_point_to_the_gpu_partitions() -> None:
    text = "name: a\ncommand: x\nresources: {partition: cpu, gpus_per_node: 1}\n"
    with pytest.raises(SpecError, match="partition 'cpu' has no GPUs; GPU partitions: gpu"):
        resolve(load_spec_text(text, "job.yaml", Path("/x")), load_site("sandbox", environ=ALICE), "r", ALICE)


def test_golden_serve_script() -> None:
    job = ServeJob(site="sandbox", repository="/srv/models/it's 100%", log="/srv/models/it's 100%/.hpc-tf/server/slurm",
                   command=("/venv/bin/python", "-m", "hpc.cli", "serve", "node", "--repository",
                            "/srv/models/it's 100%"),
                   partition="cpu", account="lab", qos=None, time_seconds=3600, cpus=2, mem="3000M",
                   module_init=None, modules=("tf/2.21",))
    script = render_serve_script(job)
    check_golden(script, GOLDEN / "serving-node.sbatch")
    found = directives(script)
    assert found["--output"] == "/srv/models/it's 100%%/.hpc-tf/server/slurm-%j.out"
    assert found["--partition"] == "cpu" and found["--nodes"] == "1" and "--gres" not in found


def test_golden_router_script() -> None:
    job = ServeJob(site="sandbox", repository="/srv/models/it's 100%",
                   log="/srv/models/it's 100%/.hpc-tf/server/router-slurm",
                   command=("/venv/bin/python", "-m", "hpc.cli", "serve", "router-node", "--repository",
                            "/srv/models/it's 100%"),
                   partition="cpu", account="lab", qos=None, time_seconds=3600, cpus=2, mem="3000M",
                   module_init=None, modules=("tf/2.21",), name="hpc-tf-router")
    script = render_router_script(job)
    check_golden(script, GOLDEN / "router.sbatch")
    found = directives(script)
    assert found["--output"] == "/srv/models/it's 100%%/.hpc-tf/server/router-slurm-%j.out"
    assert found["--job-name"] == "hpc-tf-router" and "--exclusive" not in found


def test_handoff_job_has_the_resolved_plan_and_runs_on_the_cpu_partition() -> None:
    job = resolved("sandbox", "handoff")
    assert job.handoff is not None
    assert (job.handoff.partition, job.handoff.format, job.handoff.repository) == (
        "cpu", "python", "/srv/hpc-tf/scratch/alice/model-repository")
    found = directives(render_handoff_script(job))
    assert found["--partition"] == "cpu" and found["--job-name"] == "mlp-handoff-handoff"
    assert "--gres" not in found and "--dependency" not in found  # the dependency is given at submit time
    assert found["--output"] == f"{job.run_dir}/logs/handoff-%j.out"


def test_handoff_without_a_model_repository_is_refused_with_the_line() -> None:
    text = "name: a\ncommand: x\nhandoff:\n  model: m\n"
    site = load_site("sandbox", ("serving.model_repository=",), environ=ALICE)
    with pytest.raises(SpecError, match=r"job\.yaml:3: handoff: site .sandbox. sets no serving\.model_repository"):
        resolve(load_spec_text(text, "job.yaml", Path("/x")), site, "r", ALICE)


@pytest.mark.parametrize(("binding", "expected"), [("task", ("gpus-per-task", "1")), ("node", ("gres", "gpu:2"))])
def test_gpu_binding_node_asks_for_the_nodes_gpus_not_one_per_task(binding: str, expected: tuple[str, str]) -> None:
    # --gpus-per-task makes Slurm bind (and, with device cgroups, fence) one GPU per task; the
    # node mode's tasks must each see all of them, so it asks for them per node
    text = f"name: a\ncommand: x\nresources: {{tasks_per_node: 2, gpus_per_task: 1, gpu_binding: {binding}}}\n"
    job = resolve(load_spec_text(text, "job.yaml", Path("/x")), load_site("sandbox", environ=ALICE), "r", ALICE)
    gpu_options = {key: value for key, value in read_directives(render_script(job)).items()
                   if key in ("gpus-per-task", "gres")}
    assert gpu_options == dict([expected])
    assert job.runtime.gpu_binding == binding
