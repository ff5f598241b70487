"""sbatch options read the way sbatch reads them (getopt_long over the recorded option tables of every
supported Slurm version): abbreviations and short letters of managed options are refused with the field
to use, others are written in full, and ``#SBATCH`` lines read back through the same parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc.errors import HpcTfError, SpecError
from hpc.local.scheduler import _job_from_script
from hpc.render.directives import directive_lines, read_directives
from hpc.render.script import render_script
from hpc.resolve import resolve
from hpc.scheduler.managed import MANAGED_FLAGS, check_extra_flag
from hpc.scheduler.sbatch_options import (
    SBATCH,
    SUPPORTED_VERSIONS,
    OptionError,
    SbatchOption,
    parse_arguments,
    parse_command_line,
    parse_option,
)
from hpc.site.load import load_site
from hpc.spec import load_spec_text

ALICE = {"HOME": "/home/alice", "USER": "alice"}


def spec_yaml(*entries: str) -> str:
    return f"name: a\ncommand: x\nsbatch_extra: [{', '.join(json.dumps(e) for e in entries)}]\n"


def spec_problem(entry: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec_text(spec_yaml(entry), "job.yaml", Path("/x"))
    (problem,) = info.value.problems
    return str(problem)


def extras(*entries: str) -> list[str]:
    return load_spec_text(spec_yaml(*entries), "job.yaml", Path("/x")).spec.sbatch_extra


# ---- finding 2: managed options written as sbatch would also read them --------------------------

@pytest.mark.parametrize(
    ("entry", "option", "field"),
    [
        ("--partitio=other", "partition", "set resources.partition"),
        ("--gpus-per-nod=8", "gpus-per-node", "set resources.gpus_per_node"),
        ("--arra=0-99", "array", "use a campaign"),
        ("--outpu=/elsewhere", "output", "hpc-tf writes logs into the run directory"),
        ("--dependenc=afterok:1", "dependency", "campaign pipelines chain stages"),
        ("--qo=high", "qos", "set resources.qos"),
        ("--job-n=x", "job-name", "set 'name'"),
        ("--gpus-per-s=8", "gpus-per-socket", "set resources.gpus_per_node"),
        ("--tasks-per-node=8", "tasks-per-node", "set resources.tasks_per_node"),  # an alias, in full
        ("--clusters=other", "clusters", "pick the cluster with --site"),
        ("--partition other", "partition", "set resources.partition"),
        ("-p gpu", "partition", "set resources.partition"),
        ("-pgpu", "partition", "set resources.partition"),
        ("-N 4", "nodes", "set resources.nodes"),
        ("-a0-99", "array", "use a campaign"),
    ],
)
def test_managed_options_are_refused_however_sbatch_would_read_them(entry: str, option: str, field: str) -> None:
    problem = spec_problem(entry)
    assert problem.startswith(f"job.yaml:3: sbatch_extra[0]: '{entry}' is --{option}, which hpc-tf manages: ")
    assert field in problem
    assert "\n" not in problem


def test_a_sites_sbatch_defaults_go_through_the_same_check(tmp_path: Path) -> None:
    site = tmp_path / "mysite.yaml"
    site.write_text("partitions: {gpu: {gpus_per_node: 4}}\nsbatch_defaults: ['--mail-ty=END', '--partitio=gpu']\n")
    with pytest.raises(SpecError) as info:
        load_site(str(site), environ=ALICE)
    assert str(info.value) == (f"{site}:2: sbatch_defaults[1]: '--partitio=gpu' is --partition, which hpc-tf "
                               "manages: set resources.partition")
    site.write_text("partitions: {gpu: {gpus_per_node: 4}}\nsbatch_defaults: ['--mail-ty=END', '-H']\n")
    assert load_site(str(site), environ=ALICE).config.sbatch_defaults == ["--mail-type=END", "--hold"]


# ---- everything else: written in full; ambiguous and unknown names refused ----------------------

def test_other_options_are_accepted_and_written_in_full() -> None:
    assert extras("--mail-ty=END", "--mail-type FAIL", "--hold", "-H", "--comment=a b=c", "--comment=", "-kfoo") == [
        "--mail-type=END", "--mail-type=FAIL", "--hold", "--hold", "--comment=a b=c", "--comment=", "--no-kill=foo"]


def test_the_rendered_script_carries_the_full_names_and_sbatch_reads_them_back() -> None:
    text = "name: a\ncommand: x\nsbatch_extra: ['--mail-ty=END,FAIL', '-H', '--comment two words']\n"
    job = resolve(load_spec_text(text, "job.yaml", Path("/x")), load_site("sandbox", environ=ALICE), "r", ALICE)
    script = render_script(job)
    assert "#SBATCH --mail-type=END,FAIL\n#SBATCH --hold\n#SBATCH --comment=\"two words\"\n" in script
    found = read_directives(script)
    assert (found["mail-type"], found["hold"], found["comment"]) == ("END,FAIL", None, "two words")


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("--mem-per=1G", "'--mem-per=1G' is ambiguous in sbatch 22.05 (it could be --mem-per-cpu, --mem-per-gpu): "
                         "write the option in full"),
        ("--gpus-per=1", "(it could be --gpus-per-node, --gpus-per-socket, --gpus-per-task)"),
        ("--gre=gpu:8", "(it could be --gres, --gres-flags)"),
        ("--partitionx=a", "'--partitionx=a' is not an sbatch option: did you mean --partition?"),
        ("--mail-typo=END", "did you mean --mail-type?"),
        ("--qqqqq", "'--qqqqq' is not an sbatch option: see sbatch --help"),
        ("mail-type=END", "is not an sbatch option (options start with - or --)"),
        # one spec, every supported Slurm: names that differ between the versions are refused
        ("--extra=x", "'--extra=x' is read as --extra-node-info by sbatch 22.05 and --extra by sbatch 25.11"),
        ("--ext=x", "is ambiguous in sbatch 25.11 (it could be --external, --extra, --extra-node-info)"),
        ("--segment=2", "is --segment, which sbatch 22.05 does not have"),
        ("--requeue=x", "takes no value"),  # no value in 22.05, an optional one in 25.11
        # how the value is attached, as getopt_long allows it
        ("--hold=yes", "'--hold=yes' is --hold, which takes no value"),
        ("--hold yes", "'--hold yes': 'yes' is not an sbatch option (--hold before it takes no value)"),
        ("--mail-type", "is --mail-type, which needs a value: write --mail-type=VALUE"),
        ("-HQ", "'-HQ' holds 2 options: write one option per entry"),
        ("-Z", "'-Z' is not a short sbatch option"),
        ("--mail-type=END\u2028--partition=x", "must be one line of printable text; it contains \\u2028"),
    ],
)
def test_ambiguous_unknown_and_malformed_options_are_refused_in_one_line(entry: str, says: str) -> None:
    problem = spec_problem(entry)
    assert problem.startswith("job.yaml:3: sbatch_extra[0]: ")
    assert says in problem
    assert "\n" not in problem and "\u2028" not in problem


# ---- the parser itself, as sbatch applies it to the words of #SBATCH lines ---------------------

def test_words_are_read_as_getopt_long_reads_them() -> None:
    assert parse_arguments(["--partitio", "cpu", "-J", "n", "-Hpcpu", "--comment", "-x", "--mail-type=END"]) == [
        SbatchOption("partition", "cpu"), SbatchOption("job-name", "n"), SbatchOption("hold", None),
        SbatchOption("partition", "cpu"), SbatchOption("comment", "-x"), SbatchOption("mail-type", "END")]
    assert str(parse_option("-t 10")) == "--time=10"
    with pytest.raises(OptionError, match="'stray' is not an sbatch option"):
        parse_arguments(["--hold", "stray"])


def test_an_srun_line_is_read_up_to_its_program_as_srun_reads_it() -> None:
    # srun's options end at the first word that is not one (or after --): the program's own options stay its
    words = ["--cpu-b=cores", "--mpi", "pmi2", "-lun", "2", "python", "-u", "t.py", "--lr", "1"]
    assert parse_command_line(words) == ([SbatchOption("cpu-bind", "cores"), SbatchOption("mpi", "pmi2"),
                                          SbatchOption("label", None), SbatchOption("unbuffered", None),
                                          SbatchOption("ntasks", "2")], 5)
    assert parse_command_line(["-l", "--", "-weird"]) == ([SbatchOption("label", None)], 2)
    with pytest.raises(OptionError, match="'--frobnicate' is not an srun option"):
        parse_command_line(["--frobnicate", "python"])


def test_an_exact_name_wins_over_longer_options() -> None:
    assert "cluster" in SBATCH.long["22.05"] and "clusters" in SBATCH.long["22.05"]
    assert parse_option("--cluster=x").name == "cluster"
    assert parse_option("--mem=1G").name == "mem"  # also a prefix of --mem-bind, --mem-per-cpu, ...


def test_the_recorded_tables_cover_every_supported_version_and_every_managed_name() -> None:
    assert SUPPORTED_VERSIONS == ("22.05", "25.11")
    for version in SUPPORTED_VERSIONS:
        assert SBATCH.short[version]["p"] == "partition"
        assert set(SBATCH.short[version].values()) <= set(SBATCH.long[version])
    known = {name for version in SUPPORTED_VERSIONS for name in SBATCH.long[version]}
    assert set(MANAGED_FLAGS) <= known, "a managed option that sbatch does not have is a typo"


# ---- reading #SBATCH lines back: the same parser, as the local launcher uses it ----------------

def test_sbatch_lines_read_back_as_sbatch_reads_them() -> None:
    script = ("#!/bin/bash\n#SBATCH --partitio=cpu -N 2\n# a comment\n\n#SBATCH --outpu='my log#1' # note\n"
              "#SBATCH --comment=x\u2028#SBATCH --time=5\n#SBATCH -t 10\necho hi\n#SBATCH --hold\n")
    assert read_directives(script) == {
        "partition": "cpu", "nodes": "2", "output": "my log#1",
        "comment": "x\u2028", "time": "10",  # U+2028 is no line break for sbatch: the rest is a comment
    }
    with pytest.raises(ValueError, match="ambiguous"):
        read_directives("#!/bin/bash\n#SBATCH --mem-per=1G\n")


def test_the_local_launcher_reads_abbreviated_options_as_sbatch_would(tmp_path: Path) -> None:
    script = tmp_path / "job.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --job-nam=mine -N 2\n#SBATCH --outpu=/elsewhere/x.out\nhostname\n")
    found = _job_from_script(script, {})
    assert (found.name, found.nodes, found.output) == ("mine", 2, "/elsewhere/x.out")
    script.write_text("#!/bin/bash\n#SBATCH -N 2 --mem-per=1G\nhostname\n")
    with pytest.raises(HpcTfError, match=r"job.sbatch: '--mem-per=1G' is ambiguous in sbatch 22\.05"):
        _job_from_script(script, {})


# ---- property: whatever is accepted is rendered so that sbatch's reading gives back the intended option ----

FREE_OPTIONS = sorted(
    name for name, kind in SBATCH.long["22.05"].items()
    if name not in MANAGED_FLAGS and kind == "required" and SBATCH.long["25.11"].get(name) == "required"
)
# no $: sbatch expands no variable, so a $ is refused (test_site_vars.py)
PRINTABLE = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="$"),
                    max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_accepted_entry_reads_back_as_the_intended_option(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(FREE_OPTIONS))
    prefixes = [name[:n] for n in range(1, len(name) + 1) if _resolves_to(name[:n], name)]
    written = data.draw(st.sampled_from(prefixes))
    value = data.draw(PRINTABLE)
    entry = data.draw(st.sampled_from([f"--{written}={value}", f"--{written} {value}"]))
    job = BASE_JOB.model_copy(update={"sbatch_extra": (check_extra_flag(entry),)})
    script = "#!/bin/bash\n" + "\n".join(directive_lines(job, "log")) + "\ntrue\n"
    assert read_directives(script)[name] == value


def _resolves_to(prefix: str, name: str) -> bool:
    try:
        return parse_option(f"--{prefix}=x").name == name
    except OptionError:
        return False


BASE_JOB = resolve(load_spec_text("name: a\ncommand: x\n", "job.yaml", Path("/x")), load_site("sandbox", environ=ALICE),
                   "r", ALICE)
