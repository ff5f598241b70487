"""The CLI: thin commands, errors become exit codes, and no TensorFlow on the command path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpc import errors
from hpc.backends import Backend
from hpc.cli import app
from hpc.errors import SchedulerCommandFailed
from hpc.launch import plan_launch, submit_plan

SPEC = "name: cli-test\ncommand: python train.py\nresources: {nodes: 2, gpus_per_node: 2}\n"


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("HPC_TF_RUNS_DIR", str(tmp_path / "runs"))
    path = tmp_path / "job.yaml"
    path.write_text(SPEC)
    return path


def modules_after(argv: list[str], spec: Path) -> tuple[object, list[str]]:
    """Run ``hpc-tf ARGV`` in a new interpreter: (exit code, every module it imported)."""
    probe = (
        "import sys, json\n"
        "from hpc.cli import app\n"
        "try:\n"
        f"    app({[a.replace('{spec}', str(spec)) for a in argv]!r}, prog_name='hpc-tf')\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], report["modules"]


@pytest.mark.parametrize("argv", [["--help"], ["render", "{spec}", "--site", "sandbox"], ["launch", "--help"]])
def test_cli_path_never_imports_tensorflow(spec: Path, argv: list[str]) -> None:
    code, modules = modules_after(argv, spec)
    assert code == 0
    assert [m for m in modules if m.split(".")[0] in ("tensorflow", "keras", "numpy")] == []


@pytest.mark.parametrize(
    ("argv", "commands"),
    [
        (["--version"], []),
        (["launch", "{spec}", "--site", "sandbox", "--dry-run"], ["hpc.cli.launch"]),
        (["config", "show", "--site", "sandbox"], ["hpc.cli.config"]),
    ],
)
def test_a_command_imports_only_what_it_runs(spec: Path, argv: list[str], commands: list[str]) -> None:
    code, modules = modules_after(argv, spec)
    assert code == 0
    shared = {"hpc.cli", "hpc.cli.app", "hpc.cli.options", "hpc.cli.console"}
    assert [m for m in modules if m.startswith("hpc.cli.") and m not in shared] == commands
    if commands == ["hpc.cli.launch"]:  # a launch is mostly start-up: no tables, no campaigns, no serving
        others = ("rich", "hpc.campaign", "hpc.serving.handoff", "hpc.serving.server")
        assert [m for m in modules if m.startswith(others)] == []


def test_dry_run_prints_the_script_and_writes_nothing(spec: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["launch", str(spec), "--site", "sandbox", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "#SBATCH --gres=gpu:2" in result.stdout
    assert "nothing submitted" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_spec_error_is_exit_code_2_with_the_line(tmp_path: Path, spec: Path) -> None:
    spec.write_text(SPEC + "sbatch_extra: ['--nodes=4']\n")
    result = subprocess.run([sys.executable, "-m", "hpc.cli", "render", str(spec), "--site", "sandbox"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    says = "sbatch_extra[0]: '--nodes=4' is --nodes, which hpc-tf manages: set resources.nodes"
    assert f"{spec}:4: {says}" in result.stderr


def test_every_input_error_is_exit_code_2_and_each_kind_keeps_its_own() -> None:
    # exit code 2 means "fix what you gave and run again", declared once (InputError)
    for kind in (errors.SpecError, errors.ConfigError, errors.RecordError, errors.ModelNameError):
        assert issubclass(kind, errors.InputError) and kind.exit_code == 2
    assert issubclass(errors.ModelNameError, errors.ServingError)
    codes = {kind: kind.exit_code for kind in (errors.HpcTfError, errors.QuotaRefused, errors.RuntimeSetupError,
                                                errors.ServingError, errors.SchedulerCommandFailed)}
    assert list(codes.values()) == [1, 3, 4, 5, 1]


class RecordingScheduler:
    """Stands in for Slurm in these unit tests only; the real one is exercised in tests/integration."""

    name = "recording"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.submitted: list[Path] = []

    def submit(self, script_path: Path | str, extra_args: object = ()) -> str:
        self.submitted.append(Path(script_path))
        if self.fail:
            raise SchedulerCommandFailed(argv=["sbatch", str(script_path)], returncode=1,
                                         stderr="sbatch: error: Batch job submission failed: Invalid account")
        return "4242"


def test_launch_writes_a_complete_run_dir_then_submits_it(spec: Path) -> None:
    scheduler = RecordingScheduler()
    launched = submit_plan(plan_launch(spec, "sandbox"), Backend(scheduler))  # type: ignore[arg-type]
    assert scheduler.submitted == [launched.paths.script]
    root = launched.paths.root
    expected = ["job.sbatch", "logs", "resolved.json", "runtime", "submission.json"]
    assert sorted(p.name for p in root.iterdir()) == expected
    assert json.loads(launched.paths.submission.read_text())["job_id"] == "4242"
    assert json.loads(launched.paths.resolved.read_text())["runtime"]["strategy"] == "multi_worker_mirrored"
    assert launched.paths.bootstrap.is_file()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")], "staging directory left behind"


def test_a_failed_submit_leaves_no_run_dir(spec: Path, tmp_path: Path) -> None:
    with pytest.raises(SchedulerCommandFailed, match="Invalid account"):
        submit_plan(plan_launch(spec, "sandbox"), Backend(RecordingScheduler(fail=True)))  # type: ignore[arg-type]
    assert list((tmp_path / "runs").iterdir()) == []
