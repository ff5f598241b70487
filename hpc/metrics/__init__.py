"""What training logged: a run's ``metrics.jsonl`` read back (:mod:`hpc.metrics.read`).

The runtime's chief task appends the rows (hpc/runtime); this package only reads. A campaign's
results table is built from it in :mod:`hpc.campaign.results`; :mod:`hpc.metrics.plot` draws runs and
campaigns (matplotlib, imported only to draw) and :mod:`hpc.metrics.report` puts a campaign's table and
figures in one HTML file. Importing runs nothing.
"""

from __future__ import annotations

from hpc.metrics.read import Best, Point, Row, RunMetrics, dedupe, default_mode, read_metrics

__all__ = ["Best", "Point", "Row", "RunMetrics", "dedupe", "default_mode", "read_metrics"]
