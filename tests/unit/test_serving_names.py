from __future__ import annotations

import pytest

from hpc.errors import ModelNameError
from hpc.serving.names import check_model_name


@pytest.mark.parametrize("name", ["mlp", "resnet-50", "a.b_c", "M1", "x" * 64])
def test_accepts_triton_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", [
    "", ".", "..", "../etc", "a/b", "/abs", ".hidden", "-dash", "a b", "a'; echo x", "$(id)", "a\nb", "a\\b",
    "x" * 65, "a..b", "ünï", "mlp\n", "mlp\u2028", "mlp\x85",
])
def test_refuses_traversal_and_odd_characters(name: str) -> None:
    with pytest.raises(ModelNameError, match="is not valid: a model name"):
        check_model_name(name)
