"""What training logged: a run's ``metrics.jsonl`` read back (:mod:`hpc.metrics.read`).

The runtime's chief task appends the rows (hpc/runtime); this package only reads. A campaign's
results table is built from it in :mod:`hpc.campaign.results`. Importing runs nothing.
"""

from __future__ import annotations

from hpc.metrics.read import Best, Point, Row, RunMetrics, dedupe, default_mode, read_metrics

__all__ = ["Best", "Point", "Row", "RunMetrics", "dedupe", "default_mode", "read_metrics"]
