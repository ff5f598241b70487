"""``hpc-tf import``: real-world-style sbatch scripts into job.yaml drafts that load, render, and request
the resources the script requested; what has no place is noted in the draft and on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpc.importer import draft_from_script, read_script
from hpc.importer.draft import NOTE_PREFIX, Draft
from hpc.importer.shell import Unplaceable, split
from hpc.render.directives import gpu_count, gpu_request, read_directives, read_gres
from hpc.render.script import render_script
from hpc.resolve import resolve
from hpc.scheduler.managed import MANAGED_FLAGS
from hpc.site.load import LoadedSite, load_site
from hpc.spec import load_spec_text
from hpc.units import parse_duration, parse_memory_mb
from tests._readme import readme_argv

SCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "sbatch-scripts"
SITE = SCRIPTS / "site.yaml"
ALL = sorted(p.name for p in SCRIPTS.glob("*.sbatch"))
ALICE = {"HOME": "/home/alice", "USER": "alice"}


def test_at_least_ten_scripts() -> None:
    assert len(ALL) >= 10


# ---- the resources a script requests, as sbatch reads its #SBATCH lines ---------------------------

def request(options: dict[str, str | None]) -> dict[str, object]:
    """What a script asks Slurm for, in one comparable form (GPUs per node however they were written)."""
    nodes = int(options.get("nodes") or 1)
    per_node = int(options["ntasks-per-node"] or 1) if "ntasks-per-node" in options else (
        int(options.get("ntasks") or nodes) // nodes)
    gres = [item for item in (options.get("gres") or "").split(",") if item]
    gpus = [g.removeprefix("gpu:") for g in gres if g.startswith("gpu")]
    if options.get("gpus-per-node"):
        gpus.append(options["gpus-per-node"] or "")
    if options.get("gpus-per-task"):
        gpus.append(str(int(options["gpus-per-task"] or 0) * per_node))
    if options.get("gpus"):
        gpus.append(str(int(options["gpus"] or 0) // nodes))
    memory = {key.replace("-", "_"): parse_memory_mb(value) if value != "0" else 0
              for key, value in options.items() if key in ("mem", "mem-per-cpu", "mem-per-gpu") and value}
    wanted: dict[str, object] = {
        "nodes": nodes, "tasks_per_node": per_node, "gpus": gpus, "gres": [g for g in gres if not g.startswith("gpu")],
        "cpus_per_task": options.get("cpus-per-task"), **memory,
        "time": parse_duration(options["time"] or "") if options.get("time") else None,
        "exclusive": "exclusive" in options,
    }
    for key in ("partition", "account", "qos", "constraint"):
        wanted[key] = options.get(key)
    for key, value in options.items():  # what sbatch_extra carries
        if key not in MANAGED_FLAGS and key != "gpu-bind":
            wanted[f"--{key}"] = value
    return wanted


def script_options(text: str) -> dict[str, str | None]:
    # NERSC's --image (the script's, and the one hpc-tf renders for shifter) comes from a Shifter plugin, not
    # from sbatch's own option table
    return read_directives("\n".join(li for li in text.split("\n") if not li.startswith("#SBATCH --image")))


def site(tmp_path: Path) -> LoadedSite:
    (tmp_path / "site.yaml").write_text(SITE.read_text())
    return load_site(str(tmp_path / "site.yaml"), environ=ALICE)


def rendered(draft: Draft, tmp_path: Path) -> str:
    text = draft.yaml_text("script.sbatch")
    loaded = load_spec_text(text, "job.yaml", tmp_path)
    return render_script(resolve(loaded, site(tmp_path), "imported-run", environ=ALICE))


@pytest.mark.parametrize("name", ALL)
def test_draft_renders_to_the_same_request(name: str, tmp_path: Path) -> None:
    text = (SCRIPTS / name).read_text()
    draft = draft_from_script(text, name)
    script = rendered(draft, tmp_path)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    wanted, got = request(script_options(text)), request(script_options(script))
    assert wanted == got  # mem_per_gpu/mem_per_cpu, other gres, the constraint: all in their fields


# ---- where each idiom lands (the spec contract of issue 20, before the fit to this checkout) ------

EXPECTED = {
    "cc-venv-tmpdir.sbatch": {
        ("setup",): ["virtualenv --no-download $SLURM_TMPDIR/env", "source $SLURM_TMPDIR/env/bin/activate",
                     "pip install --no-index --upgrade pip", "pip install --no-index -r requirements.txt",
                     "mkdir -p $SLURM_TMPDIR/data",
                     "tar xf ~/projects/def-someprof/data/cifar.tar -C $SLURM_TMPDIR/data"],
        ("command",): ["python", "train.py", "--data-dir", "${SLURM_TMPDIR}/data", "--epochs", "40"],
        ("resources", "gpu_type"): "v100", ("env",): {"NCCL_BLOCKING_WAIT": "1"},
        ("environment", "venv"): None,  # made by the script itself: activated in setup, after it exists
    },
    "nersc-shifter.sbatch": {
        ("environment", "container"): {"image": "nersc/tensorflow:24.06.01", "runtime": "shifter"},
        ("resources", "constraint"): "gpu", ("command",): ["python", "train.py", "--batch-size", "512"],
        ("srun_extra",): ["--cpu-bind=cores"],  # export SLURM_CPU_BIND: srun reads it as --cpu-bind
    },
    "lumi-rocm.sbatch": {
        ("environment", "module_purge"): True,
        ("environment", "module_use"): ["/appl/local/containers/ai-modules"],
        ("environment", "container"): {"image": "/appl/local/containers/tensorflow-rocm.sif",
                                       "runtime": "singularity", "gpu": "amd",
                                       "binds": ["/scratch/project_465000001"]},
        # the second export names a variable the first (a setup step) sets: both stay setup, in order
        ("setup",): ["export MIOPEN_USER_DB_PATH=/tmp/$(whoami)-miopen-cache-$SLURM_NODEID",
                     "export MIOPEN_CUSTOM_CACHE_DIR=$MIOPEN_USER_DB_PATH"],
    },
    "horovod.sbatch": {("resources", "gpu_binding"): "node", ("srun_extra",): ["--mpi=pmi2"],
                       ("sbatch_extra",): None},
    "ddp-style.sbatch": {
        ("setup",): ["export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)"],
        ("env",): {"MASTER_PORT": "29500", "WORLD_SIZE": "${SLURM_NTASKS}"},
        ("srun_extra",): ["--cpu-bind=cores"], ("resources", "mem"): "all", ("resources", "exclusive"): True,
    },
    "princeton-mem-per-gpu.sbatch": {
        ("resources", "mem_per_gpu"): "16G", ("resources", "gpus_per_task"): 1,
        ("environment", "conda"): "tf2-gpu", ("environment", "module_purge"): True,
        ("sbatch_extra",): ["--mail-type=END,FAIL", "--mail-user=someone@example.edu"],
    },
    "nvme-staging.sbatch": {
        ("resources", "gres"): ["nvme:200"], ("resources", "gpus_per_node"): 4,
        ("setup",): [{"node": "tar xf /scratch/project_2001234/imagenet.tar -C $LOCAL_SCRATCH"}],
        ("sbatch_extra",): ["--reservation=ml_course"],
    },
    "bsc-pmi2.sbatch": {
        ("srun_extra",): ["--mpi=pmi2", "--cpu-bind=cores"], ("resources", "tasks_per_node"): 4,
        ("env",): {"OMP_NUM_THREADS": "${SLURM_CPUS_PER_TASK}"}, ("sbatch_extra",): ["--hint=nomultithread"],
    },
    "label-unbuffered.sbatch": {
        ("srun_extra",): ["--label", "--unbuffered"], ("setup",): ["nvidia-smi"],
        ("command",): ["python", "-u", "train.py", "--steps", "100"], ("sbatch_extra",): ["--licenses=scratch"],
    },
    "conda-single-gpu.sbatch": {
        # conda's shell function comes from the line before: environment is set up before every setup step
        ("setup",): ["source ~/miniconda3/etc/profile.d/conda.sh", "conda activate unet"], ("environment",): None,
        ("workdir",): "${SLURM_SUBMIT_DIR}",
        ("env",): {"PYTHONPATH": "${HOME}/src/unet:${PYTHONPATH}", "TF_CPP_MIN_LOG_LEVEL": "2"},
        # single-quoted in the script: a literal $, written $$ in the spec
        ("command",): ["python", "train_unet.py", "--config", "configs/$$base.yaml"],
    },
    "greene-overlay.sbatch": {
        ("environment", "container"): {
            "image": "docker://nvcr.io/nvidia/tensorflow:24.01-tf2-py3", "runtime": "singularity", "gpu": "nvidia",
            "overlays": ["/scratch/${USER}/overlay-25GB-500K.ext3:ro"]},
        ("command",): ["/bin/bash", "-c", "source /ext3/env.sh; python train.py"],
    },
    "venv-mem-per-cpu.sbatch": {
        ("environment", "venv"): "${HOME}/venvs/tf215", ("resources", "mem_per_cpu"): "4G",
        ("resources", "gpus_per_node"): 4, ("resources", "tasks_per_node"): 4,
        ("command",): ["python", "finetune.py", "--task-id", "${SLURM_ARRAY_TASK_ID}", "--data", "${DATA}"],
    },
}
NOTED = {  # lines with no place, each kept as a note
    "cc-venv-tmpdir.sbatch": ["--output=%x-%j.out"],
    "bsc-pmi2.sbatch": ["--output=tf_%j.out", "--error=tf_%j.err"],
    "label-unbuffered.sbatch": ['echo "finished at $(date)"'],
    "venv-mem-per-cpu.sbatch": ["--array=0-3", "if [ ! -d $DATA ]; then echo"],
}


def test_every_script_has_expectations() -> None:
    assert sorted(EXPECTED) == ALL


@pytest.mark.parametrize("name", ALL)
def test_each_idiom_lands_in_its_field(name: str) -> None:
    draft = draft_from_script((SCRIPTS / name).read_text(), name)  # as written: the fields the spec loads
    notes = [f"{note.text} {note.why}" for note in draft.notes]
    for path, value in EXPECTED[name].items():
        assert draft.get(path) == value, path
    for text in NOTED.get(name, []):
        assert any(text in note for note in notes), (text, notes)
    refused = [note for note in notes if "the spec refuses it" in note]
    assert not refused  # nothing the script says is lost to a field the spec lacks or a value it refuses


@pytest.mark.parametrize("name", ALL)
def test_draft_keeps_every_note_as_a_comment(name: str) -> None:
    draft = draft_from_script((SCRIPTS / name).read_text(), name)
    comments = [line for line in draft.yaml_text(name).splitlines() if line.startswith(NOTE_PREFIX)]
    assert len(comments) == len(draft.notes)


# ---- words read as bash reads them, written as the spec writes run-time text -----------------------

@pytest.mark.parametrize(("line", "argv"), [
    ("python t.py --data $SLURM_TMPDIR/d", ["python", "t.py", "--data", "${SLURM_TMPDIR}/d"]),
    ('python "${DATA}/x y"', ["python", "${DATA}/x y"]),
    ("python '$literal' \\$too", ["python", "$$literal", "$$too"]),
    ("ls ~/data ~x", ["ls", "${HOME}/data", "~x"]),
    ('echo "a\\"b" # comment', ["echo", 'a"b']),
])
def test_words(line: str, argv: list[str]) -> None:
    assert split(line) == argv


@pytest.mark.parametrize("line", ["echo $(date)", "echo `date`", "echo ${X:-y}", "echo $1", "ls *.py",
                                  "python t.py > log", "a && b", "echo 'open"])
def test_words_the_spec_cannot_hold(line: str) -> None:
    with pytest.raises(Unplaceable):
        split(line)


# ---- the command ---------------------------------------------------------------------------------

def run_import(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpc.cli", "import", *args], cwd=cwd, text=True,
                          capture_output=True, check=False)


def test_cli_writes_the_draft_and_lists_the_notes(tmp_path: Path) -> None:
    script = tmp_path / "bsc.sbatch"
    script.write_text((SCRIPTS / "bsc-pmi2.sbatch").read_text())
    done = run_import(str(script), "-o", "job.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "job.yaml").read_text()
    assert "#SBATCH --output=tf_%j.out" in text and "not placed: line 10: #SBATCH --output=tf_%j.out" in done.stderr
    assert load_spec_text(text, "job.yaml", tmp_path).spec.resources.nodes == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bsc.sbatch", "job.yaml"]  # no temp file left


def test_cli_default_output_beside_the_script(tmp_path: Path) -> None:
    script = tmp_path / "train.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --nodes=1\nsrun python train.py\n")
    assert run_import(str(script), cwd=tmp_path).returncode == 0
    assert (tmp_path / "train.yaml").is_file()


def test_cli_refuses_to_overwrite(tmp_path: Path) -> None:
    script = tmp_path / "train.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --nodes=1\nsrun python train.py\n")
    (tmp_path / "job.yaml").write_text("mine\n")
    done = run_import(str(script), "-o", "job.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("hpc-tf: error: ") and "exists" in done.stderr and len(done.stderr.splitlines()) == 1
    assert (tmp_path / "job.yaml").read_text() == "mine\n"


@pytest.mark.parametrize(("content", "problem"), [(b"\x00\x01binary", "NUL"), (b"", "no #SBATCH line")])
def test_cli_not_a_script_is_one_line(tmp_path: Path, content: bytes, problem: str) -> None:
    (tmp_path / "x.sbatch").write_bytes(content)
    done = run_import("x.sbatch", cwd=tmp_path)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1 and problem in done.stderr, done.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_the_readme_import_command_drafts_a_job_that_renders(tmp_path: Path) -> None:
    (tmp_path / "train.sbatch").write_text((SCRIPTS / "horovod.sbatch").read_text())
    argv = readme_argv("hpc-tf import train.sbatch -o job.yaml")
    done = run_import(*argv[2:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    job = resolve(load_spec_text((tmp_path / "job.yaml").read_text(), "job.yaml", tmp_path),
                  site(tmp_path), "imported-run", environ=ALICE)
    assert read_directives(render_script(job))["gres"] == "gpu:4"


def test_srun_lines_around_the_training_command() -> None:
    draft = read_script(
        "#!/bin/bash\n#SBATCH -N 2 --ntasks-per-node=1 --gres=gpu:4\nset -e\n"
        "srun --ntasks-per-node=1 cp -r data $TMPDIR/\n"
        "srun --ntasks-per-node=1 mkdir -p $X && cp a $X\n"  # cp runs in the batch shell, once
        "srun -N $SLURM_NNODES -n $SLURM_NNODES bash -c 'tar xf d.tar -C $TMPDIR'\n"
        "srun --ntasks-per-node=1 python train.py\n"
        "srun --ntasks-per-node=1 rm -rf $TMPDIR/data\n", "t.sbatch")
    assert draft.get(("setup",)) == [{"node": "cp -r data $TMPDIR/"},
                                     "srun --ntasks-per-node=1 mkdir -p $X && cp a $X",
                                     {"node": "bash -c 'tar xf d.tar -C $TMPDIR'"}]
    assert draft.get(("command",)) == ["python", "train.py"]
    assert [(note.line, note.text) for note in draft.notes] == [
        (3, "set -e"), (8, "srun --ntasks-per-node=1 rm -rf $TMPDIR/data")]


def test_another_launcher_is_noted_and_its_python_kept() -> None:
    draft = read_script("#!/bin/bash\n#SBATCH -n 8\nhorovodrun -np 8 -H localhost:8 python train.py --x=1\n", "h")
    assert draft.get(("command",)) == ["python", "train.py", "--x=1"]
    assert "not horovodrun; dropped: horovodrun -np 8 -H localhost:8" in draft.notes[0].why


def test_hostile_lines_stay_comments(tmp_path: Path) -> None:
    # U+2028 is a line break to PyYAML: unescaped, it would end the comment and write YAML into the draft
    script = tmp_path / "evil.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --nodes=1\nsrun python train.py\n"
                      "echo '\u2028command: [rm, -rf, /]' \x1b[31m red\n")
    done = run_import(str(script), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "\u2028" not in done.stderr
    text = (tmp_path / "evil.yaml").read_text()
    assert load_spec_text(text, "evil.yaml", tmp_path).spec.command == ("python", "train.py")


@pytest.mark.parametrize(("written", "name"), [("my job (v2)", "my-job-v2"), ("_x", "x"), ("résumé", "r-sum")])
def test_a_job_name_the_spec_refuses_is_renamed_and_noted(written: str, name: str) -> None:
    draft = draft_from_script(f"#!/bin/bash\n#SBATCH --job-name='{written}'\nsrun python t.py\n", "t.sbatch")
    assert draft.get(("name",)) == name
    assert [note.line for note in draft.notes] == [2]


def test_several_gpu_tasks_per_node_get_the_gpu_binding_hint() -> None:
    ddp = draft_from_script("#!/bin/bash\n#SBATCH --ntasks-per-node=4 --gres=gpu:4\nsrun python t.py\n", "t")
    assert [hint for hint in ddp.hints if "resources.gpu_binding: node" in hint]
    horovod = draft_from_script((SCRIPTS / "horovod.sbatch").read_text(), "horovod.sbatch")  # --gpu-bind=none
    single = draft_from_script("#!/bin/bash\n#SBATCH --ntasks-per-node=1 --gres=gpu:4\nsrun python t.py\n", "t")
    assert horovod.hints == single.hints == []
    assert draft_from_script("#!/bin/bash\n#SBATCH --ntasks-per-node=4 --gres=gpu:4\nsrun python t.py\n",
                             "t").yaml_text("t").count("# hint: ") == 1


def test_a_managed_srun_option_unlike_the_allocation_is_noted() -> None:
    draft = read_script("#!/bin/bash\n#SBATCH -N 1 -n 4 -c 8\nsrun -n 4 -c 2 python t.py\n", "t")
    assert [(note.line, note.text) for note in draft.notes] == [(3, "--cpus-per-task=2")]


def test_srun_options_are_read_as_srun_reads_them_and_checked_as_srun_extra() -> None:
    # abbreviations, clustered short flags and a value in the next word, written in full; srun's managed
    # options (MANAGED_SRUN_FLAGS) noted with the field to use, as srun_extra refuses them
    draft = read_script("#!/bin/bash\n#SBATCH -N 1 -n 2\n"
                        "srun --cpu-b=cores --mpi pmi2 -lu --export=ALL -o log.%t python t.py -l\n", "t")
    assert draft.get(("srun_extra",)) == ["--cpu-bind=cores", "--mpi=pmi2", "--label", "--unbuffered"]
    assert draft.get(("command",)) == ["python", "t.py", "-l"]
    assert [note.text for note in draft.notes] == ["--export=ALL", "--output=log.%t"]
    assert "set variables under env" in draft.notes[0].why and "hpc-tf logs" in draft.notes[1].why


def test_an_srun_line_srun_would_refuse_is_noted_and_its_python_kept() -> None:
    draft = read_script("#!/bin/bash\n#SBATCH -N 1\nsrun --frobnicate python t.py\n", "t")
    assert draft.get(("command",)) == ["python", "t.py"] and draft.get(("srun_extra",)) is None
    assert "srun would refuse '--frobnicate' is not an srun option" in draft.notes[0].why


@pytest.mark.parametrize(("export", "field", "value"), [
    ("export SLURM_CPU_BIND=cores", ("srun_extra",), ["--cpu-bind=cores"]),
    ("export SLURM_MPI_TYPE=pmix", ("srun_extra",), ["--mpi=pmix"]),
    ("export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK", ("srun_extra",), None),  # managed: noted
    ("export SLURM_CPU_BIND=$BIND", ("srun_extra",), None),  # srun_extra is not expanded: noted
])
def test_variables_srun_reads_as_options_go_to_srun_extra(export: str, field: tuple[str, ...],
                                                          value: list[str] | None) -> None:
    draft = read_script(f"#!/bin/bash\n#SBATCH -N 1 -c 4\n{export}\nsrun python t.py\n", "t")
    assert draft.get(field) == value and draft.get(("env",)) is None
    assert [note.line for note in draft.notes] == ([] if value else [3])


def test_an_activation_an_earlier_step_prepares_stays_a_step_after_it() -> None:
    # environment is set up before every setup step: conda's function, a venv made by the script
    draft = read_script("#!/bin/bash\n#SBATCH -N 1\neval \"$(conda shell.bash hook)\"\nconda activate tf\n"
                        "python -m venv env\nsource env/bin/activate\nsrun python t.py\n", "t")
    assert draft.get(("environment",)) is None
    assert draft.get(("setup",)) == ['eval "$(conda shell.bash hook)"', "conda activate tf", "python -m venv env",
                                     "source env/bin/activate"]
    placed = read_script("#!/bin/bash\nmodule load anaconda3\nconda activate tf\nsrun python t.py\n", "t")
    assert placed.get(("environment",)) == {"modules": ["anaconda3"], "conda": "tf"}


def test_gres_reads_back_what_the_renderer_writes() -> None:
    # one reader for the import and the local launcher, the inverse of gpu_request
    assert read_gres(f"{gpu_request('gpu', 'a100', 2)},nvme:200") == ([("a100", 2)], ["nvme:200"])
    assert gpu_count("gpu") == (None, 1) and gpu_count("4") == (None, 4)
    draft = read_script("#!/bin/bash\n#SBATCH --gres=gpu:a:b:2\nsrun python t.py\n", "t")
    assert draft.get(("resources",)) is None and "is not [TYPE:]N" in draft.notes[0].why
