"""Containers in a job: where the image comes from, overlays, the GPU driver inside, and Shifter."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from hpc.errors import SpecError
from hpc.render.script import render_script
from hpc.resolve import ContainerPlan, ResolvedJob, resolve
from hpc.site.load import load_site
from hpc.spec import load_spec_text

ALICE = {"HOME": "/home/alice", "USER": "alice"}
SPEC_DIR = Path("/home/alice/project")


def job(container: str, *, resources: str = "{gpus_per_node: 2}", site: str = "sandbox",
        overrides: tuple[str, ...] = ()) -> ResolvedJob:
    text = f"name: c\ncommand: python3 train.py\nresources: {resources}\nenvironment:\n  container: {container}\n"
    loaded = load_spec_text(text, "job.yaml", SPEC_DIR)
    return resolve(loaded, load_site(site, overrides, environ=ALICE), "c-run", environ=ALICE)


def refusal(container: str, **kw: object) -> str:
    with pytest.raises(SpecError) as info:
        job(container, **kw)  # type: ignore[arg-type]
    (problem,) = info.value.problems
    return str(problem)


def task_line(script: str) -> str:
    """The line that starts each task: what runs the bootstrap (inside the container)."""
    (line,) = [line for line in script.splitlines() if "bootstrap.py" in line]
    return line.strip()


@pytest.mark.parametrize("image", ["docker://nvcr.io/nvidia/tensorflow:24.01-tf2-py3", "oras://ghcr.io/lab/tf:1",
                                   "library://lab/default/tf:latest", "docker-daemon:tf:latest"])
def test_an_image_uri_is_pulled_as_written_never_a_path_under_the_spec_directory(image: str) -> None:
    resolved = job(f"{{image: '{image}'}}")
    assert resolved.container is not None and resolved.container.image == image
    assert f",/home/alice/project {image} /opt/hpc-tf/venv/bin/python -S " in task_line(render_script(resolved))


def test_a_local_image_file_is_relative_to_the_spec_directory() -> None:
    resolved = job("{image: images/tf.sif, overlays: [overlay.img, /scratch/alice/data.sqsh]}")
    assert resolved.container is not None
    assert resolved.container.image == "/home/alice/project/images/tf.sif"
    assert ("--overlay /home/alice/project/overlay.img --overlay /scratch/alice/data.sqsh --bind "
            in task_line(render_script(resolved)))


def test_an_unknown_image_source_is_refused_with_the_ones_there_are() -> None:
    assert refusal("{image: 'dockr://tf:latest'}") == (
        "job.yaml:5: environment.container.image: 'dockr://' is not an image source apptainer pulls from: write "
        "docker://, oras://, library://, shub://, http://, https://, a .sif path or a Shifter image")


@pytest.mark.parametrize(("setting", "flags"), [
    ("gpu: nvidia", ["--nv"]), ("gpu: amd", ["--rocm"]), ("gpu: none", []),
    ("gpu: auto", ["--nv"]),  # the sandbox site's GPUs: NVIDIA, the default vendor
])
def test_the_gpu_setting_gives_the_runtime_its_driver_flag(setting: str, flags: list[str]) -> None:
    line = task_line(render_script(job(f"{{image: tf.sif, {setting}}}")))
    words = line.split(" --bind ")[0].split()
    assert words[words.index("apptainer") + 2:] == flags


def test_auto_follows_the_vendor_of_the_partition_then_the_site() -> None:
    amd_partition = ("partitions.gpu.gpu_vendor=amd",)
    assert job("{image: tf.sif}", overrides=amd_partition).container.gpu == "amd"  # type: ignore[union-attr]
    assert job("{image: tf.sif}", overrides=("gpu_vendor=amd",)).container.gpu == "amd"  # type: ignore[union-attr]
    both = ("gpu_vendor=amd", "partitions.gpu.gpu_vendor=nvidia")
    assert job("{image: tf.sif}", overrides=both).container.gpu == "nvidia"  # type: ignore[union-attr]
    # a CPU job gets no driver flag (apptainer warns on a node without the driver)
    cpu = job("{image: tf.sif}", resources="{partition: cpu}")
    assert cpu.container is not None and cpu.container.gpu == "none"


def test_nv_is_still_read_with_a_deprecation_note(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert job("{image: tf.sif, nv: false}").container.gpu == "none"  # type: ignore[union-attr]
    assert "job.yaml:5: environment.container.nv: deprecated: write gpu: none" in caplog.text
    assert job("{image: tf.sif, nv: true}", resources="{partition: cpu}").container.gpu == "nvidia"  # type: ignore[union-attr]
    assert refusal("{image: tf.sif, nv: true, gpu: amd}") == (
        "job.yaml:5: environment.container: set gpu (nv is its deprecated spelling), not both")


SHIFTER_SITE = ("container_runtime=[shifter]",)


def test_shifter_runs_each_task_in_the_image_and_asks_for_it_in_the_batch_script() -> None:
    resolved = job("{image: 'docker:nersc/tf:24.06', binds: [/pscratch/alice/data:/data, /global/common]}",
                   overrides=SHIFTER_SITE)
    script = render_script(resolved)
    # as NERSC writes it: the shifter plugin's option, which sbatch has only where the site installed it
    assert "\n#SBATCH --image=docker:nersc/tf:24.06\n# Generated by hpc-tf" in script
    assert task_line(script).startswith(
        "shifter --image=docker:nersc/tf:24.06 --module=gpu '--volume=/pscratch/alice/data:/data;/global/common:"
        "/global/common' /opt/hpc-tf/venv/bin/python -S ")
    assert "command -v shifter >/dev/null || setup_failed" in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True, timeout=30)


def test_shifter_only_where_the_site_declares_it() -> None:
    assert refusal("{image: 'docker:nersc/tf:24.06', runtime: shifter}") == (
        "job.yaml:5: environment.container.runtime: site 'sandbox' has no shifter (its container_runtime: "
        "apptainer, singularity); choose one of those")
    for site, overrides in (("local", SHIFTER_SITE), ("sandbox", (*SHIFTER_SITE, "scheduler=pyslurm"))):
        assert refusal("{image: 'docker:nersc/tf:24.06', runtime: shifter}", site=site, overrides=overrides) == (
            "job.yaml:5: environment.container.runtime: Shifter images start through sbatch's shifter plugin "
            "(#SBATCH --image): use a Slurm site with scheduler: cli, or apptainer")
    assert refusal("{image: x, runtime: shifter, overlays: [o.img]}", overrides=SHIFTER_SITE) == (
        "job.yaml:5: environment.container: Shifter takes no overlays: use apptainer or singularity, or bind a "
        "directory")


def test_the_site_runtime_is_the_default_and_its_list_is_kept() -> None:
    resolved = job("{image: tf.sif}", overrides=("container_runtime=[singularity, apptainer]",))
    assert task_line(render_script(resolved)).startswith("singularity exec --nv ")
    assert refusal("{image: tf.sif, runtime: apptainer}", overrides=("container_runtime=[singularity]",)) == (
        "job.yaml:5: environment.container.runtime: site 'sandbox' has no apptainer (its container_runtime: "
        "singularity); choose one of those")


def test_the_batch_script_names_a_missing_runtime_before_any_task_starts(tmp_path: Path) -> None:
    """Run the script's check line with a PATH that has no apptainer: one line, the runtime and image named."""
    script = render_script(job("{image: 'docker://tensorflow/tensorflow:2.16.1'}"))
    helper = next(line for line in script.splitlines() if line.startswith("setup_failed()"))
    check = next(line for line in script.splitlines() if line.startswith("command -v apptainer"))
    done = subprocess.run(["/bin/bash", "-c", f"{helper}\n{check}\necho tasks started"], text=True, timeout=30,
                          capture_output=True, env={"PATH": str(tmp_path), "HOSTNAME": "node7"}, check=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("hpc-tf: setup failed: no apptainer on node7 to run the container image "
                           "docker://tensorflow/tensorflow:2.16.1: load it with "
                                "environment.modules in job.yaml (or modules in the site config), or set "
                                "environment.container.runtime to one the site has\n")


def test_a_resolved_job_written_with_nv_still_loads() -> None:
    """resolved.json of a campaign launched before `gpu` replaced `nv`: resubmitting it still works."""
    old = {"runtime": "apptainer", "image": "/images/tf.sif", "binds": [], "nv": True}
    assert ContainerPlan.model_validate(old).gpu == "nvidia"
    assert ContainerPlan.model_validate({**old, "nv": False}).gpu == "none"
