"""How one value of a metrics table is written, the same in the terminal and in the HTML report."""

from __future__ import annotations

from collections.abc import Mapping

from hpc.units import format_duration


def number(value: float | None, decimals: int | None = None) -> str:
    """``-`` for no value; six significant digits, or a fixed number of ``decimals`` (GPU-hours: 0.25)."""
    if value is None:
        return "-"
    return f"{value:.6g}" if decimals is None else f"{value:.{decimals}f}"


def wall(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(round(seconds))


def of_total(done: int | None, total: int | None) -> str:
    """``3/10``: 1-based, as Keras prints ``Epoch 3/10``."""
    if done is None:
        return "-"
    return f"{done + 1}/{total}" if total is not None else str(done + 1)


def params_text(params: Mapping[str, object]) -> str:
    """``epochs=3 batch_size=64``: a task's parameters as the campaign names them."""
    return " ".join(f"{k}={v}" for k, v in params.items()) or "-"
