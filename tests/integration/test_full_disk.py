"""A full filesystem during ``hpc-tf launch``: one line naming the directory, the cause and the fix,
and nothing left behind.

The filesystem is really full: a 64 KiB tmpfs mounted in a temporary directory and filled to the last
block, then given to ``launch`` as its runs_dir. Mounting needs root: CI runs as root, and under CI
(or HPC_TF_REQUIRE_CLUSTER=1) a run without root fails this test instead of skipping it.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import _strict


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A mounted tmpfs with no free block left (directories and empty files can still be made)."""
    if os.geteuid() != 0:
        problem = "mounting a tmpfs needs root"
        if _strict():
            pytest.fail(f"{problem} (CI: this test must not be skipped)", pytrace=False)
        pytest.skip(problem)
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mount)], check=True)
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_launch_onto_a_full_filesystem_is_one_line_and_leaves_nothing(tmp_path: Path, full_disk: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"name": "full", "command": ["true"],
                                    "resources": {"nodes": 1, "tasks_per_node": 1, "time": "1:00"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_TF_", "SLURM_"))}
    result = subprocess.run(
        [sys.executable, "-m", "hpc.cli", "launch", str(spec), "--site", "local", "--set", f"runs_dir={full_disk}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (f"hpc-tf: error: no space left on '{full_disk}' (runs_dir): "
                        "free space there or set runs_dir to another directory")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no staged run directory, no temp file
