"""``${NAME}`` in paths, env values and arguments: expanded on the node by the batch script, ``$$`` a
literal ``$``, any other ``$`` refused at load time with one line (hpc.text.RunTimeText)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc.campaign.load import load_campaign_text
from hpc.campaign.plan import plan_campaign
from hpc.errors import ServingError, SpecError
from hpc.render.cpu_jobs import render_handoff_script
from hpc.render.quoting import UnsafeValue, sh_run_time, sh_run_time_words
from hpc.render.script import render_script
from hpc.resolve import resolve
from hpc.serving.handoff import find_savedmodel
from hpc.serving.signature import SAVED_MODEL_PB
from hpc.site.load import load_site
from hpc.spec import load_spec_text
from hpc.text import expand_run_time, run_time_literal

ALICE = {"HOME": "/home/alice", "USER": "alice"}
BASE = Path("/home/alice/project")

# every field whose value the batch script expands: (YAML with %s for the value, the field's path)
RUN_TIME_FIELDS = [
    ("env: {DATA: %s}", "env.DATA"),
    ("workdir: %s", "workdir"),
    ("output_dir: %s", "output_dir"),
    ("checkpoint: {dir: %s}", "checkpoint.dir"),
    ("environment: {venv: %s}", "environment.venv"),
    ("environment: {conda: %s}", "environment.conda"),
    ("environment: {python: %s}", "environment.python"),
    ("environment: {module_use: [%s]}", "environment.module_use[0]"),
    ("environment: {container: {image: %s}}", "environment.container.image"),
    ("environment: {container: {image: i.sif, binds: [%s]}}", "environment.container.binds[0]"),
    ("environment: {container: {image: i.sif, overlays: [%s]}}", "environment.container.overlays[0]"),
    ("command: [python, train.py, %s]", "command[2]"),
]
# (value as written, the part the message names, the fix it proposes)
BARE = [
    ("$HOME/data", "$HOME", "write ${HOME} to expand it on the node"),
    ("$SLURM_TMPDIR", "$SLURM_TMPDIR", "write ${SLURM_TMPDIR} to expand it on the node"),
    ("$(touch PWNED)", "$(", "write ${NAME} to expand a variable on the node"),
    ("${X:-y}", "${X", "write ${X} to expand it on the node"),
    ("price$", "$", "write ${NAME} to expand a variable on the node"),
]


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "job.yaml", BASE)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(("value", "part", "fix"), BARE)
@pytest.mark.parametrize(("field", "path"), RUN_TIME_FIELDS)
def test_every_run_time_field_refuses_a_dollar_that_is_no_reference(
    field: str, path: str, value: str, part: str, fix: str
) -> None:
    spec = "name: a\n" + ("" if field.startswith("command") else "command: x\n") + field % f"'{value}'" + "\n"
    (message,) = problems(spec)
    assert message == (f"job.yaml:{spec.count(chr(10))}: {path}: '{value}' holds '{part}', which hpc-tf does "
                       f"not expand: {fix}, or $$ for a literal $")


def test_a_command_string_is_checked_word_by_word() -> None:
    (message,) = problems("name: a\ncommand: python train.py --data $SLURM_TMPDIR/data\n")
    assert message.startswith("job.yaml:2: command[3]: '$SLURM_TMPDIR/data' holds '$SLURM_TMPDIR'")


def job_of(text: str, environ: dict[str, str] = ALICE, base: Path = BASE):  # type: ignore[no-untyped-def]
    site = load_site("sandbox", environ=environ)
    return resolve(load_spec_text("name: a\ncommand: x\n" + text, "job.yaml", base), site, "r", environ)


def test_a_path_that_starts_with_a_reference_is_not_anchored_to_the_spec_directory() -> None:
    job = job_of("workdir: ${SLURM_TMPDIR}/w\noutput_dir: ${SCRATCH}/out\n"
                 "environment: {venv: '${SLURM_TMPDIR}/env', container: {image: '${IMAGES}/tf.sif'}}\n")
    assert (job.workdir, job.output_dir) == ("${SLURM_TMPDIR}/w", "${SCRATCH}/out")
    assert job.runtime.checkpoint_dir == "${SCRATCH}/out/checkpoints"
    assert job.venv == "${SLURM_TMPDIR}/env"
    assert job.container is not None and job.container.image == "${IMAGES}/tf.sif"


def test_references_are_left_for_the_node_not_expanded_where_the_job_is_submitted() -> None:
    """``${HOME}`` is the node's (and ``~`` this user's home); a relative path, even one that holds a
    reference, is anchored at the spec directory."""
    job = job_of("workdir: '${HOME}/w'\noutput_dir: runs/${SLURM_JOB_ID}\ncheckpoint: {dir: ~/ckpt}\n")
    assert job.workdir == "${HOME}/w"
    assert job.output_dir == "/home/alice/project/runs/${SLURM_JOB_ID}"
    assert job.runtime.checkpoint_dir == "/home/alice/ckpt"


def test_directories_hpc_tf_chooses_stay_literal(tmp_path: Path) -> None:
    """A spec directory or home whose name holds a ``$`` is written with ``$$``: the node gets it as it is."""
    base = tmp_path / "it's $(x) ${HOME}"
    assert expand_run_time(job_of("", ALICE, base).workdir, {}) == str(base)
    assert expand_run_time(job_of("workdir: data\n", ALICE, base).workdir, {}) == f"{base}/data"
    home = job_of("workdir: ~/w\n", {**ALICE, "HOME": "/h/$USER"})
    assert expand_run_time(home.workdir, {}) == "/h/$USER/w"


def test_the_script_expands_each_reference_once_and_runs_nothing(tmp_path: Path) -> None:
    job = job_of("workdir: '${WORK}'\nenv: {DATA: '${HOSTILE}/d', PRICE: '5 $$'}\n"
                 "environment: {module_use: ['${PROJECT}/modulefiles'], modules: [x]}\n")
    script = render_script(job)
    assert "cd \"${WORK}\" ||" in script
    assert "module use \"${PROJECT}\"/modulefiles ||" in script
    assert "export DATA=\"${HOSTILE}\"/d\n" in script
    assert "export PRICE='5 $'\n" in script


@pytest.mark.parametrize(
    ("value", "word"),
    [("${A}", '"${A}"'), ("x${A}y", 'x"${A}"y'), ("$$", "'$'"), ("", "''"), ("a b", "'a b'"),
     ("${A}${B}", '"${A}""${B}"'), ("it's", "'it'\"'\"'s'")],
)
def test_run_time_text_is_one_bash_word(value: str, word: str) -> None:
    assert sh_run_time(value) == word


def test_quoting_refuses_what_the_spec_refuses() -> None:
    with pytest.raises(UnsafeValue, match=r"^workdir: '\$HOME' holds '\$HOME'"):
        sh_run_time("$HOME", "workdir")
    with pytest.raises(UnsafeValue, match="one line"):
        sh_run_time("${A}\n", "workdir")


def test_an_unset_variable_is_named_where_python_expands() -> None:
    with pytest.raises(ValueError, match=r"\$\{SCRATCH\} is not set on the node"):
        expand_run_time("${SCRATCH}/out", {})


NAMES = st.sampled_from(["A", "B", "HOSTILE"])
LITERAL = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8).map(run_time_literal)
VALUES = {"A": "", "B": "two words", "HOSTILE": "$(touch PWNED) `touch PWNED`; ${HOME} '\"\\ *"}


@settings(max_examples=20, deadline=None)
@given(st.lists(st.lists(st.one_of(LITERAL, NAMES.map(lambda n: "${" + n + "}")), max_size=5).map("".join),
                min_size=1, max_size=20))
def test_bash_reads_each_word_as_python_expands_it(tmp_path_factory: pytest.TempPathFactory, words: list[str]) -> None:
    """The rendered words, read by bash with hostile values in the environment, are exactly the
    values :func:`expand_run_time` gives: one word each, nothing executed, nothing globbed."""
    cwd = tmp_path_factory.mktemp("bash")
    (cwd / "glob-me").touch()
    out = subprocess.run(["bash", "-c", "set -u; printf '%s\\0' " + sh_run_time_words(words)], cwd=cwd,
                         env={**VALUES, "PATH": "/usr/bin:/bin", "HOME": "/home/alice"},
                         capture_output=True, text=True, check=True).stdout
    assert out.split("\0")[:-1] == [expand_run_time(w, VALUES) for w in words]
    assert not (cwd / "PWNED").exists()


def test_a_hand_off_refuses_an_output_dir_named_by_the_training_job_alone() -> None:
    site = load_site("sandbox", environ=ALICE)
    text = ("name: a\ncommand: x\noutput_dir: '${SCRATCH}/out-${SLURM_JOB_ID}'\nhandoff: {model: mlp}\n")
    with pytest.raises(SpecError) as info:
        resolve(load_spec_text(text, "job.yaml", BASE), site, "r", ALICE)
    assert [str(p) for p in info.value.problems] == [
        "job.yaml:3: output_dir: ${SLURM_JOB_ID} is another value in the hand-off job, which reads output_dir too: "
        "use a variable both jobs share (e.g. ${SCRATCH})"]


def test_the_hand_off_finds_the_savedmodel_where_the_references_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "resolved.json").write_text(json.dumps({"output_dir": "${SCRATCH}/out $$1"}))
    export = tmp_path / "scratch" / "out $1" / "export"
    export.mkdir(parents=True)
    (export / SAVED_MODEL_PB).write_bytes(b"")
    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    assert find_savedmodel(run) == export
    monkeypatch.delenv("SCRATCH")
    with pytest.raises(ServingError, match=r"output_dir '\$\{SCRATCH\}/out \$\$1': \$\{SCRATCH\} is not set"):
        find_savedmodel(run)


CAMPAIGN = """\
name: c
job: {command: [python3, train.py], resources: {nodes: 1, time: "5:00"}}
parameters:
  zip: {lr: [0.1]}
args: ARGS
env: {COST: "$$5-{lr}"}
"""


def campaign_problem(args: list[str]) -> str:
    with pytest.raises(SpecError) as info:
        load_campaign_text(CAMPAIGN.replace("ARGS", json.dumps(args)), Path("/p/campaign.yaml"))
    (problem,) = info.value.problems
    return str(problem)


def test_campaign_templates_refuse_a_bare_dollar_and_a_reference_they_cannot_expand() -> None:
    assert "'--data=$SCRATCH' holds '$SCRATCH', which hpc-tf does not expand: write ${SCRATCH}" in \
        campaign_problem(["--data=$SCRATCH"])
    assert campaign_problem(["--data=${SCRATCH}"]).endswith(
        "args: '--data=${SCRATCH}': ${...} is not expanded in a campaign's templates: set the variable in the "
        "job's env (job.yaml), which the batch script expands, or write $$ for a literal $")


def test_a_campaign_task_gets_a_literal_dollar_for_dollar_dollar(tmp_path: Path) -> None:
    """A task's arguments and variables reach it from task.json, with no shell: ``$$`` is ``$`` there
    too, and a parameter's ``$`` stays as it is."""
    text = CAMPAIGN.replace("ARGS", '["--price=5$$", "--lr={lr}"]').replace("[0.1]", '["$1"]')
    env = {"HOME": str(tmp_path), "USER": "alice"}
    site = load_site("sandbox", [f"runs_dir={tmp_path / 'runs'}"], environ=env)
    plan = plan_campaign(load_campaign_text(text, tmp_path / "campaign.yaml"), site, "c-1", environ=env,
                         gpu_limit=4, max_array_size=1001)
    (task,) = plan.tasks
    stage = plan.stages[0].name
    assert plan.task_command(stage, task)[-2:] == ["--price=5$", "--lr=$1"]
    assert plan.task_document(task)["stages"][stage]["env"]["COST"] == "$5-$1"  # type: ignore[index]


def test_the_hand_off_job_starts_the_python_the_training_job_names() -> None:
    job = job_of("environment: {python: '${VENV}/bin/python'}\nhandoff: {model: mlp}\n")
    script = render_handoff_script(job)
    assert '\nexec "${VENV}"/bin/python -m hpc.cli handoff ' in script


def test_a_reference_to_a_variable_the_node_lacks_stops_the_job_before_the_tasks(tmp_path: Path) -> None:
    """The batch script runs with ``set -u``: bash names the variable and exits 1 (the job FAILED), and
    srun never starts the tasks."""
    site = load_site("sandbox", (f"runs_dir={tmp_path / 'runs'}",), environ=ALICE)
    job = resolve(load_spec_text("name: a\ncommand: x\nworkdir: '${NOT_ON_THE_NODE}/w'\n", "job.yaml", tmp_path),
                  site, "r", ALICE)
    (tmp_path / "srun").write_text("#!/bin/sh\ntouch \"$0.ran\"\n")
    (tmp_path / "srun").chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(render_script(job))
    result = subprocess.run(["bash", str(script)], env={"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": str(tmp_path)},
                            cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "NOT_ON_THE_NODE: unbound variable" in result.stderr
    assert not (tmp_path / "srun.ran").exists()


def test_container_references_expand_where_the_container_starts(tmp_path: Path) -> None:
    job = job_of("environment: {container: {image: 'docker://${REGISTRY}/tf:24', binds: ['${SCRATCH}:/data'], "
                 "overlays: ['${SLURM_TMPDIR}/o.img']}}\n")
    script = render_script(job)
    assert ' --overlay "${SLURM_TMPDIR}"/o.img --bind "${SCRATCH}":/data,' in script
    assert ' docker://"${REGISTRY}"/tf:24 ' in script


def test_a_shifter_image_has_no_dollar_since_sbatch_reads_it() -> None:
    site = load_site("sandbox", ("container_runtime=[shifter]",), environ=ALICE)
    spec = load_spec_text("name: a\ncommand: x\nenvironment: {container: {image: 'tf:$${TAG}', runtime: shifter}}\n",
                          "job.yaml", BASE)
    with pytest.raises(SpecError) as info:
        resolve(spec, site, "r", ALICE)
    assert [str(p) for p in info.value.problems] == [
        "job.yaml:3: environment.container.image: sbatch reads a Shifter image (#SBATCH --image) before the node "
        "expands anything: write the image's name without $"]


def test_env_values_are_set_in_the_order_written_so_a_value_can_use_one_above_it(tmp_path: Path) -> None:
    """As in a shell script: ``ZDATA`` is exported before ``APATH`` uses it, and a value that names a key
    written below it gets the node's own value (sorting the keys would export ``APATH`` first)."""
    site = load_site("sandbox", (f"runs_dir={tmp_path / 'runs'}",), environ=ALICE)
    spec = (f"name: a\ncommand: x\nenvironment: {{python: {tmp_path / 'python'}}}\n"
            "env: {ZDATA: '/scratch/d', APATH: '${ZDATA}/train', BEFORE: '${MODE}', MODE: job}\n")
    job = resolve(load_spec_text(spec, "job.yaml", tmp_path), site, "r", ALICE)
    (tmp_path / "python").write_text('#!/bin/sh\nprintf "%s|%s|%s" "$APATH" "$BEFORE" "$MODE" > "$0.env"\n')
    (tmp_path / "python").chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(render_script(job))
    result = subprocess.run(["bash", str(script)], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MODE": "node"},
                            cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
    assert (tmp_path / "python.env").read_text() == "/scratch/d/train|node|job", result.stderr
