"""Model names: one directory level under the repository and one URL path segment for Triton."""

from __future__ import annotations

import re

from hpc.errors import ModelNameError

# Triton puts the name in URL paths (/v2/models/<name>) and uses it as a directory name: letters,
# digits, '_', '.', '-', starting with a letter or digit (so never '.', '..' or a hidden directory).
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_model_name(name: str) -> str:
    """Return ``name`` if Triton and the repository can use it; raise :class:`ModelNameError` otherwise."""
    if not MODEL_NAME_RE.match(name) or ".." in name:
        raise ModelNameError(
            f"'{name}' is not a model name: use up to 64 letters, digits, '_', '.', '-', "
            "starting with a letter or digit (no '/', no '..')"
        )
    return name
