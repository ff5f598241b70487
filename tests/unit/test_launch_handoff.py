"""A job.yaml with ``handoff:``: the training job, then the hand-off job submitted with afterok on it.

The real sbatch/afterok path runs in tests/integration/test_handoff_slurm.py; here a recording
scheduler checks what is submitted, in which order, and that a run is launched whole or not at all.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

import pytest

from hpc.backends import Backend
from hpc.errors import SchedulerCommandFailed
from hpc.launch import plan_launch, submit_plan
from hpc.render.cpu_jobs import handoff_argv, render_handoff_script
from hpc.resources import data_dir
from hpc.scheduler import NO_OPTIONS, SubmitOptions
from hpc.scheduler.commands import submit_args
from hpc.site.load import load_site

SPEC = ("name: hand\ncommand: python train.py\nresources: {nodes: 2, gpus_per_node: 2}\n"
        "handoff: {model: mlp, savedmodel: export}\n")


class RecordingScheduler:
    name = "recording"

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on
        self.submitted: list[tuple[Path, tuple[str, ...]]] = []
        self.cancelled: list[str] = []

    def submit(self, script_path: Path | str, options: SubmitOptions = NO_OPTIONS) -> str:
        self.submitted.append((Path(script_path), options.after_ok))
        if self.fail_on == len(self.submitted):
            raise SchedulerCommandFailed(argv=["sbatch", str(script_path)], returncode=1,
                                         stderr="sbatch: error: invalid partition specified: cpu")
        return str(100 + len(self.submitted))

    def cancel(self, job_ids: Sequence[str]) -> None:
        self.cancelled += job_ids


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("HPC_TF_RUNS_DIR", str(tmp_path / "runs"))
    path = tmp_path / "job.yaml"
    path.write_text(SPEC)
    return path


def test_after_success_args_name_the_dependency_and_never_wait_forever() -> None:
    assert submit_args(SubmitOptions.after_success(["42"])) == ["--dependency=afterok:42", "--kill-on-invalid-dep=yes"]


def test_handoff_job_is_submitted_after_training_with_afterok_and_recorded(spec: Path) -> None:
    scheduler = RecordingScheduler()
    launched = submit_plan(plan_launch(spec, "sandbox"), Backend(scheduler))  # type: ignore[arg-type]
    paths = launched.paths
    assert scheduler.submitted == [(paths.script, ()), (paths.handoff_script, ("101",))]
    assert (launched.job_id, launched.handoff_job_id) == ("101", "102")
    record = json.loads(paths.handoff_submission.read_text())
    assert (record["job_id"], record["after_ok"]) == ("102", "101")
    script = paths.handoff_script.read_text()
    assert "#SBATCH --partition=cpu" in script and f"handoff {paths.root} --model mlp" in script
    assert json.loads(paths.resolved.read_text())["handoff"]["model"] == "mlp"


def test_a_failed_handoff_submit_cancels_training_and_leaves_no_run_dir(spec: Path, tmp_path: Path) -> None:
    scheduler = RecordingScheduler(fail_on=2)
    with pytest.raises(SchedulerCommandFailed, match="invalid partition"):
        submit_plan(plan_launch(spec, "sandbox"), Backend(scheduler))  # type: ignore[arg-type]
    assert scheduler.cancelled == ["101"]
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_job_without_handoff_submits_one_job(spec: Path) -> None:
    spec.write_text(SPEC.split("handoff")[0])
    scheduler = RecordingScheduler()
    launched = submit_plan(plan_launch(spec, "sandbox"), Backend(scheduler))  # type: ignore[arg-type]
    assert len(scheduler.submitted) == 1 and launched.handoff_job_id is None
    assert not launched.paths.handoff_script.exists()


def test_a_site_given_as_a_file_reaches_the_handoff_job_as_that_files_absolute_path(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = load_site("sandbox", environ={"HOME": str(tmp_path)})
    site_file = tmp_path / "sites" / "x.yaml"
    site_file.parent.mkdir()
    site_file.write_text((data_dir("site_configs") / "sandbox.yaml").read_text() + "name: mycluster\n")
    monkeypatch.chdir(tmp_path)
    job = plan_launch(spec, "sites/x.yaml").job  # relative, as a user types it
    argv = handoff_argv(job)
    given = argv[argv.index("--site") + 1]
    assert given == str(site_file)
    exec_line = render_handoff_script(job).splitlines()[-1]
    assert shlex.split(exec_line)[1:] == list(argv)
    monkeypatch.chdir("/")  # the hand-off job starts in the run directory, not here
    assert load_site(given).config.partitions == sandbox.config.partitions


@pytest.mark.parametrize(("backends", "refused"), [(["python"], True), (["onnxruntime", "python"], False),
                                                   (None, False)])
def test_a_handoff_format_the_registered_node_cannot_load_is_refused_at_launch(
    spec: Path, tmp_path: Path, backends: list[str] | None, refused: bool
) -> None:
    """The endpoint as ``serve up`` registers it names the node's Triton backends; an onnx hand-off to a node
    without onnxruntime would fail after the training, so the launch refuses it (a node registered before
    hpc-tf recorded backends is not second-guessed)."""
    from hpc.errors import ConfigError
    from hpc.serving.repository import Repository
    from hpc.serving.server import Endpoint

    repo = Repository.at(tmp_path / "models")
    repo.state_dir.mkdir(parents=True)
    node = Endpoint(host="10.0.0.5", http_port=1, grpc_port=8001, metrics_port=2, pid=1, hostname="cpu1",
                    repository=str(repo.root), log="log", started=0.0, backends=backends)
    repo.endpoint_file.write_text(node.to_json())
    repo.endpoint_file.chmod(0o600)
    overrides = ["serving.format=onnx", f"serving.model_repository={repo.root}"]
    if refused:
        with pytest.raises(ConfigError, match=r"serving format 'onnx' needs Triton's onnxruntime backend, which the "
                           r"serving node at 10\.0\.0\.5:8001 does not have \(its backends: python\): set "
                           r"serving\.format: python in the site config, or handoff\.format: python in job\.yaml"):
            plan_launch(spec, "sandbox", overrides)
    else:
        assert plan_launch(spec, "sandbox", overrides).job.handoff is not None
