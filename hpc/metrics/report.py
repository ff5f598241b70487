"""A campaign's results as ONE self-contained HTML file: the ranked table and the figures inside it.

The figures are PNGs in ``data:`` URIs, the style sheet is inline, there is no script: the file opens
in any browser, offline, and can be mailed or attached as it is. Every string that came from a user
(campaign name, parameter names and values, states, notes, paths) goes through :func:`html.escape`:
a parameter value is user input and must not become markup.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hpc.metrics.cells import number, of_total, params_text

if TYPE_CHECKING:
    from hpc.campaign.results import CampaignResults

CAPTIONS = {
    "curves": "Learning curves: the metric at each epoch, one line per task; the best task thick and red, tasks "
              "that did not complete dotted.",
    "by_param": "Each task's best value against each parameter; the best task ringed in red.",
    "parallel": "Parallel coordinates: one line per task through its parameters to its best value.",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.best { background: #fde8e8; font-weight: bold; }
figure { margin: 1.5em 0; }
img { max-width: 100%; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: 0.9em; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: object) -> str:
    """A number's cell, right-aligned."""
    return f'<td class="n">{_e(value)}</td>'


def report_html(found: CampaignResults, images: Mapping[str, bytes]) -> str:
    """The report: a summary line, one table row per task (as ``campaign results`` ranks them), then each
    PNG of ``images`` (file stem → bytes) with its caption."""
    header, cells = found.table()
    # the task number and the results after ``state`` are numbers, the parameters and the note text
    params = range(1, len(found.param_names) + 2)
    numeric = [k not in params and k != len(header) - 1 for k in range(len(header))]
    best = found.best
    rows = []
    for t, row in zip(found.tasks, cells, strict=True):
        tds = "".join(_n(cell) if right else f"<td>{_e(cell)}</td>" for right, cell in zip(numeric, row, strict=True))
        marked = ' class="best"' if t is best else ""
        rows.append(f'<tr{marked} data-task="{t.task_id}">{tds}</tr>')
    if best is not None:
        summary = (f"Best: <strong>task {best.task_id}</strong> ({_e(params_text(best.params))}): {_e(found.metric)} "
                   f"{number(best.best)} at epoch {of_total(best.best_epoch, None)}.")
    else:
        summary = f"No completed task logged {_e(found.metric)}: no best configuration yet."
    figures = [f'<figure id="{_e(stem)}"><img alt="{_e(CAPTIONS.get(stem, stem))}" '
               f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'
               f"<figcaption>{_e(CAPTIONS.get(stem, stem))}</figcaption></figure>"
               for stem, data in images.items()]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>hpc-tf campaign {_e(found.id)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        f"<h1>Campaign {_e(found.id)}</h1>",
        f'<p class="note">{_e(found.root)} · stage {_e(found.stage)} · ranked by {_e(found.metric)} '
        f"({'lower' if found.mode == 'min' else 'higher'} is better) · {len(found.tasks)} task(s)</p>",
        f'<p id="best">{summary}</p>',
        '<table id="results">', "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead>",
        "<tbody>", *rows, "</tbody>", "</table>", *figures, "</body>", "</html>", ""])
