"""Model names: one directory level under the repository and one URL path segment for Triton."""

from __future__ import annotations

import re

from hpc.errors import ModelNameError
from hpc.text import named

# Triton puts the name in URL paths (/v2/models/<name>) and uses it as a directory name: letters,
# digits, '_', '.', '-', starting with a letter or digit (so never '.', '..' or a hidden directory).
# Matched as a whole string (hpc.text.named), so a trailing newline does not pass.
MODEL_NAME_RE = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MODEL_NAME_RULE = ("a model name has up to 64 letters, digits, '_', '.', '-', starts with a letter or digit "
                   "and has no '/' and no '..'")


def check_model_name(name: str) -> str:
    """Return ``name`` if Triton and the repository can use it; raise :class:`ModelNameError` otherwise."""
    try:
        return named(name, MODEL_NAME_RE, MODEL_NAME_RULE)
    except ValueError as err:
        raise ModelNameError(str(err)) from None


def named_model(name: str) -> bool:
    """Whether ``name`` is a model name (a directory of the repository that is a model, not hpc-tf's own)."""
    return MODEL_NAME_RE.fullmatch(name) is not None
