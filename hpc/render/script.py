"""ResolvedJob -> the batch script text (Jinja2, StrictUndefined; values enter only through quoting filters)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import jinja2

from hpc import __version__
from hpc.paths import RunPaths
from hpc.render.directives import directive_lines, step_options
from hpc.render.quoting import sh, sh_words, slurm_filename
from hpc.resolve import ResolvedJob
from hpc.resources import data_dir, user_cache_dir

log = logging.getLogger(__name__)


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # shell, not HTML: quoting is explicit, through the filters below
        keep_trailing_newline=True,
        bytecode_cache=_compiled_templates(),
    )
    env.filters["sh"] = sh
    env.filters["sh_words"] = sh_words
    return env


def _compiled_templates() -> jinja2.BytecodeCache | None:
    """Compiled templates kept in the user's cache: compiling job.sbatch.j2 costs ~10 ms of every
    launch. Jinja2 checks each entry against the template's source, and writes by rename.

    Compiled templates are code that runs here, so the cache is used only if no other user can
    change it: the cache's ``hpc-tf`` directory and its ``templates`` directory both this user's and
    not writable by group or others (the directories above are the user's own ``$XDG_CACHE_HOME``)."""
    root = user_cache_dir()
    directory = root / "templates"
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        private = all(_only_mine(d) for d in (root, directory))
    except OSError:
        return None
    if not private:
        log.debug("not caching compiled templates: %s is not private to this user", directory)
        return None
    return jinja2.FileSystemBytecodeCache(str(directory)) if os.access(directory, os.W_OK) else None


def _only_mine(directory: Path) -> bool:
    info = directory.lstat()  # a symlink put in its place is not followed
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


# the host GPU driver inside an apptainer/singularity image, and Shifter's module for NVIDIA's
GPU_FLAGS = {"nvidia": ["--nv"], "amd": ["--rocm"], "none": []}
SHIFTER_GPU_FLAGS = {"nvidia": ["--module=gpu"], "amd": [], "none": []}  # resolve refuses amd


def container_prefix(job: ResolvedJob) -> str:
    """``apptainer exec --nv --bind … IMAGE `` or ``shifter --image=… `` so the bootstrap and the command
    run inside the image."""
    if job.container is None:
        return ""
    c = job.container
    if c.runtime == "shifter":
        # Shifter mounts the site's shared filesystems (where run directories live) by itself, and
        # refuses volumes over some of them: only the binds asked for, each SRC:DST
        volumes = ";".join(b if ":" in b else f"{b}:{b}" for b in dict.fromkeys(c.binds))
        words = ["shifter", f"--image={c.image}", *SHIFTER_GPU_FLAGS[c.gpu],
                 *([f"--volume={volumes}"] if volumes else [])]
        return sh_words(words) + " "
    # the run directory and workdir must be visible inside the container
    binds = ",".join(dict.fromkeys((*c.binds, job.run_dir, job.workdir)))
    overlays = [word for overlay in c.overlays for word in ("--overlay", overlay)]
    words = [c.runtime, "exec", *GPU_FLAGS[c.gpu], *overlays, "--bind", binds, c.image]
    return sh_words(words) + " "


def driver_python(job: ResolvedJob) -> str:
    """The python that runs the batch driver in the batch shell: the job's, or the node's python3 when
    the job's python lives inside a container image."""
    return "python3" if job.container is not None else job.python


def log_pattern(paths: RunPaths, name_pattern: str) -> str:
    """The logs directory taken literally (``%`` escaped), then Slurm's ``%j``/``%t`` pattern."""
    return f"{slurm_filename(str(paths.logs_dir))}/{name_pattern}"


def render_script(job: ResolvedJob) -> str:
    paths = RunPaths.at(job.run_dir)
    template = template_environment().get_template("job.sbatch.j2")
    return template.render(
        job=job,
        version=__version__,
        directives=directive_lines(job, log_pattern(paths, RunPaths.BATCH_LOG_PATTERN)),
        task_log=log_pattern(paths, RunPaths.TASK_LOG_PATTERN),
        step_options=step_options(job),
        restart_log=log_pattern(paths, RunPaths.RESTART_LOG_PATTERN),
        task_prefix=container_prefix(job),
        bootstrap=str(paths.bootstrap),
        driver_python=driver_python(job),
        batch_driver=str(paths.batch_driver),
        resolved=str(paths.resolved),
        local=job.launcher == "local",
        local_step=str(paths.local_step),
    )
