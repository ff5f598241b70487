"""Files hpc-tf writes get the permissions the user's umask allows, never more."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpc.atomic import write_text_atomic
from hpc.resolve import resolve
from hpc.rundir import write_run_dir
from hpc.site.load import load_site
from hpc.spec import load_spec_text


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_private_umask_keeps_run_files_private(tmp_path: Path, umask_077: None) -> None:
    write_text_atomic(tmp_path / "resolved.json", "{}")
    write_text_atomic(tmp_path / "job.sbatch", "#!/bin/bash\n", mode=0o755)
    write_text_atomic(tmp_path / "secret", "x", mode=0o600)
    assert mode_of(tmp_path / "resolved.json") == 0o600
    assert mode_of(tmp_path / "job.sbatch") == 0o700  # still executable for the owner
    assert mode_of(tmp_path / "secret") == 0o600


def test_the_usual_umask_gives_the_usual_modes(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "resolved.json", "{}")
        write_text_atomic(tmp_path / "job.sbatch", "#!/bin/bash\n", mode=0o755)
    finally:
        os.umask(old)
    assert (mode_of(tmp_path / "resolved.json"), mode_of(tmp_path / "job.sbatch")) == (0o644, 0o755)


def test_the_owner_keeps_what_the_caller_needs_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o577)  # even a umask that takes the owner's write and execute bits
    try:
        write_text_atomic(tmp_path / "job.sbatch", "#!/bin/bash\n", mode=0o755)
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "job.sbatch") == 0o700


def test_a_run_directory_written_under_umask_077_is_private(tmp_path: Path, umask_077: None) -> None:
    env = {"HOME": str(tmp_path), "USER": "alice"}
    loaded = load_spec_text("name: a\ncommand: x\n", "job.yaml", tmp_path)
    job = resolve(loaded, load_site("local", [f"runs_dir={tmp_path / 'runs'}"], environ=env), "r", env)
    paths = write_run_dir(job, "#!/bin/bash\n")
    assert (mode_of(paths.script), mode_of(paths.resolved)) == (0o700, 0o600)
    others = [p for p in paths.root.rglob("*") if mode_of(p) & 0o077]
    assert others == [], "readable by group or others under umask 077"
