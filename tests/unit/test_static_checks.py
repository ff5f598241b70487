"""The code stays ruff-clean and passes mypy --strict (configuration in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKS = {"ruff": ["ruff", "check", "hpc", "launchers", "tests", "examples"], "mypy": ["mypy"]}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_static_check(name: str) -> None:
    tool, *args = CHECKS[name]
    executable = Path(sys.executable).parent / tool  # installed by the dev extra next to this Python
    assert executable.exists(), f"{tool} is missing: install the dev extra (pip install 'hpc-tf[dev]')"
    result = subprocess.run([str(executable), *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
