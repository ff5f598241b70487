"""``hpc-tf campaign plot``, ``campaign report`` and ``metrics --plot`` on the quickstart's 3 x 4 grid, each
task's metrics.jsonl written by the runtime's own writer (hpc/runtime/node/metrics.py): the figures have one
line per task with the best highlighted and labelled by its parameters, the PNGs are real images (size, not
blank, the best's red drawn), the report holds every task and escapes what users wrote. The report in a real
browser: tests/integration/test_report_browser.py."""

from __future__ import annotations

import html
import io
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image  # matplotlib's own dependency (the plots extra)
from typer.testing import CliRunner

from hpc.campaign import api
from hpc.campaign.manifest import Attempt, read_manifest, write_manifest
from hpc.campaign.paths import CampaignPaths
from hpc.campaign.results import CampaignResults, TaskResult, results
from hpc.campaign.submit import write_campaign_dir
from hpc.cli import app
from hpc.metrics import read_metrics
from hpc.metrics.plot import (
    BEST,
    MISSING,
    by_param_figure,
    curves_figure,
    parallel_figure,
    png,
    run_figure,
    task_runs,
)
from hpc.metrics.report import report_html
from hpc.runtime.node.metrics import MetricsWriter
from tests._readme import readme_argv
from tests.unit.test_cli import modules_after

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart" / "campaign.yaml"
HOSTILE = "<img src=x onerror=alert(1)>&\"'"


@pytest.fixture(autouse=True)
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("HPC_TF_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm"))  # any scheduler query would fail the test


def loss_of(epochs: int, batch_size: int, epoch: int) -> float:
    """A distinct curve per grid point: lower with more epochs and smaller batches."""
    return round(1.0 / (epoch + 1) + batch_size / 2_000 + (3 - epochs) / 20, 6)


def write_run(path: Path, epochs: int, batch_size: int, logged: int, *, attempt: int = 0) -> None:
    """What the runtime's Keras hook writes for ``logged`` epochs of a run of ``epochs``."""
    writer = MetricsWriter(str(path), attempt=attempt, job="500")
    for epoch in range(logged):
        loss = loss_of(epochs, batch_size, epoch)
        writer.write("epoch", {"loss": loss, "val_loss": round(loss * 1.1, 6), "accuracy": round(1 - loss / 2, 6),
                               "val_accuracy": round(1 - loss / 1.8, 6), "learning_rate": 0.001},
                     epoch=epoch, step=(epoch + 1) * 10, epochs=epochs, steps=epochs * 10, sync=True)


def quickstart_campaign(tmp_path: Path) -> CampaignPaths:
    """The quickstart grid as array 500: tasks 0-8 completed, 9 failed after one epoch, 10 running (one epoch
    logged), 11 pending (nothing logged)."""
    plan = api.plan_from_file(QUICKSTART, "sandbox", [f"runs_dir={tmp_path / 'runs'}"], gpu_limit=4)
    paths = write_campaign_dir(plan)
    manifest = read_manifest(paths)
    states = ["COMPLETED"] * 9 + ["FAILED", "RUNNING", "PENDING"]
    for task, state in zip(manifest.tasks, states, strict=True):
        unit = task.stages["main"]
        unit.attempts.append(Attempt(job_id=f"500_{task.id}", submission="500", state=state,
                                     raw_id=str(500 + task.id), exit_code=1 if state == "FAILED" else None))
        epochs, batch_size = int(str(task.params["epochs"])), int(str(task.params["batch_size"]))
        logged = {"COMPLETED": epochs, "FAILED": 1, "RUNNING": 1}.get(state, 0)
        if logged:
            Path(unit.output_dir).mkdir(parents=True)
            write_run(paths.task_metrics(task.id, "main"), epochs, batch_size, logged)
    manifest.poll.last_at, manifest.poll.interval_s = time.time(), 3600.0  # states are fresh: no query
    write_manifest(paths, manifest)
    return paths


def ranked(paths: CampaignPaths) -> CampaignResults:
    return results(read_manifest(paths), paths)


def check_png(path: Path, size: tuple[int, int]) -> None:
    """A real image of the expected size, mostly white but with many colours drawn, the best's red among them."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # not blank: lines, text, anti-aliasing
    white = sum(count for count, c in colours if c == (255, 255, 255))
    assert 0.3 < white / (size[0] * size[1]) < 0.99
    red = tuple(int(BEST[i:i + 2], 16) for i in (1, 3, 5))
    assert any(c == red for _, c in colours), "the best task's colour is not drawn"


def test_the_readme_plot_command_writes_the_three_pngs(tmp_path: Path) -> None:
    paths = quickstart_campaign(tmp_path)
    result = CliRunner().invoke(app, readme_argv("hpc-tf campaign plot DIR", DIR=str(paths.root))[1:])
    assert result.exit_code == 0, result.output
    written = [Path(line) for line in result.stdout.splitlines()]
    assert written == [paths.root / "plots" / f"{stem}.png" for stem in ("curves", "by_param", "parallel")]
    check_png(written[0], (1000, 500))
    check_png(written[1], (840, 340))
    check_png(written[2], (660, 500))
    assert sorted(p.name for p in (paths.root / "plots").iterdir()) == sorted(p.name for p in written)  # no temp
    elsewhere = CliRunner().invoke(app, ["campaign", "plot", str(paths.root), "--out", str(tmp_path / "figs"),
                                         "--metric", "val_accuracy"])
    assert elsewhere.exit_code == 0, elsewhere.output
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["by_param.png", "curves.png", "parallel.png"]


def test_learning_curves_have_one_line_per_task_that_logged_and_the_best_stands_out(tmp_path: Path) -> None:
    found = ranked(quickstart_campaign(tmp_path))
    runs = task_runs(found)
    assert sorted(runs) == list(range(11))  # task 11 logged nothing: no line, its row says why
    ax, = curves_figure(found, runs).axes
    lines = ax.get_lines()
    assert len(lines) == 11
    by_label = {line.get_label(): line for line in lines}
    best = by_label["task 8: epochs=3 batch_size=64 (best)"]
    assert best.get_color() == BEST and best.get_linewidth() > max(
        line.get_linewidth() for line in lines if line is not best)
    assert best.get_zorder() > max(line.get_zorder() for line in lines if line is not best)
    assert list(best.get_xdata()) == [1, 2, 3]
    assert list(best.get_ydata()) == [round(loss_of(3, 64, e) * 1.1, 6) for e in range(3)]  # val_loss, the default
    assert by_label["task 9: epochs=3 batch_size=128 (FAILED)"].get_linestyle() == ":"
    assert by_label["task 10: epochs=3 batch_size=256 (RUNNING)"].get_linestyle() == ":"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [line.get_label() for line in lines]
    assert ax.get_ylabel() == "val_loss" and ax.get_xlabel() == "epoch"


def test_the_metric_against_each_parameter_and_in_parallel_coordinates(tmp_path: Path) -> None:
    found = ranked(quickstart_campaign(tmp_path))
    fig = by_param_figure(found)
    panels = fig.axes
    assert [ax.get_xlabel() for ax in panels] == ["epochs", "batch_size"]
    for ax in panels:
        points = [p for c in ax.collections for p in c.get_offsets().tolist()]
        assert len(points) == 11 + 1  # every task with a value, and the ring around the best
        assert ax.has_data()
    assert [t.get_text() for t in panels[1].get_xticklabels()] == ["64", "128", "256", "512"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["completed", "not completed", "best (task 8)"]
    ring = panels[1].collections[-1]
    assert ring.get_offsets().tolist() == [[64.0, found.tasks[0].best]]
    ax, = parallel_figure(found).axes  # type: ignore[union-attr]
    assert len(ax.get_lines()) == 11
    assert [t.get_text() for t in ax.get_xticklabels()] == ["epochs", "batch_size", "val_loss"]
    best = [line for line in ax.get_lines() if line.get_label().endswith("(best)")]
    assert len(best) == 1 and best[0].get_color() == BEST
    assert list(best[0].get_ydata()) == [1.0, 0.0, 0.0]  # most epochs, smallest batch, lowest loss


def test_one_parameter_draws_no_parallel_view(tmp_path: Path) -> None:
    found = ranked(quickstart_campaign(tmp_path))
    one = CampaignResults(id=found.id, root=found.root, stage=found.stage, metric=found.metric, mode=found.mode,
                          tasks=[t.__class__(**{**t.as_dict(), "params": {"lr": t.task_id / 100 + 1e-4}})
                                 for t in found.tasks])
    assert parallel_figure(one) is None
    ax, = by_param_figure(one).axes
    assert ax.get_xscale() == "log"  # learning rates over two decades


def test_the_readme_metrics_plot_command_draws_one_runs_curves(tmp_path: Path) -> None:
    paths = quickstart_campaign(tmp_path)
    run = paths.task_output(8, "main")
    result = CliRunner().invoke(app, readme_argv("hpc-tf metrics RUN_DIR --plot", RUN_DIR=str(run))[1:])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split() == ["epoch", "loss", "val_loss", "accuracy", "val_accuracy",
                                                     "learning_rate", "time"]  # the table as without --plot
    assert f"curves written to {run / 'metrics.png'}" in " ".join(result.stderr.split())
    with Image.open(run / "metrics.png") as image:
        assert image.size == (1260, 320)
    fig = run_figure(read_metrics(run / "metrics.jsonl"), "task 8")
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == ["loss", "accuracy", "learning_rate"]
    assert [[line.get_label() for line in ax.get_lines()] for ax in panels] == [
        ["loss", "val_loss"], ["accuracy", "val_accuracy"], ["learning_rate"]]
    assert list(panels[0].get_lines()[0].get_ydata()) == [loss_of(3, 64, e) for e in range(3)]
    out = CliRunner().invoke(app, ["metrics", str(run), "--plot", "--out", str(tmp_path / "one.png")])
    assert out.exit_code == 0 and (tmp_path / "one.png").is_file()
    alone = CliRunner().invoke(app, ["metrics", str(run), "--out", str(tmp_path / "two.png")])
    assert alone.exit_code == 1 and str(alone.exception).startswith("--out names the PNG of --plot")


class Cells(HTMLParser):
    """The text of every table row of the report, and the src of every image."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag == "td" or tag == "th":
            self.rows[-1].append("")
        elif tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1] in ("td", "th"):
            self.rows[-1][-1] += data

    def handle_endtag(self, tag: str) -> None:
        if self.tags and self.tags[-1] == tag:
            self.tags.pop()


def test_the_readme_report_command_writes_one_html_with_every_task_and_the_plots(tmp_path: Path) -> None:
    paths = quickstart_campaign(tmp_path)
    result = CliRunner().invoke(app, readme_argv("hpc-tf campaign report DIR", DIR=str(paths.root))[1:])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(paths.root / "report.html")
    parsed = Cells()
    parsed.feed((paths.root / "report.html").read_text(encoding="utf-8"))
    header, *rows = parsed.rows
    assert header == ["task", "epochs", "batch_size", "state", "final val_loss", "best (min)", "at epoch", "epochs",
                      "time", "GPU-h", "note"]
    assert [r[0] for r in rows] == ["8", "4", "5", "6", "7", "0", "1", "2", "3", "9", "10", "11"]
    assert rows[0][1:4] == ["3", "64", "COMPLETED"] and rows[-1][3:] == [
        "PENDING", "-", "-", "-", "0", "-", "-", "no metrics logged"]
    assert len(parsed.images) == 3 and all(src.startswith("data:image/png;base64,") for src in parsed.images)
    assert "<script" not in (paths.root / "report.html").read_text(encoding="utf-8")


def test_what_users_wrote_is_text_in_the_report_never_markup(tmp_path: Path) -> None:
    found = ranked(quickstart_campaign(tmp_path))
    hostile = CampaignResults(
        id=HOSTILE, root=HOSTILE, stage=found.stage, metric=found.metric, mode=found.mode,
        tasks=[t.__class__(**{**t.as_dict(), "params": {HOSTILE: f"{HOSTILE}{t.task_id}"}, "note": HOSTILE})
               for t in found.tasks])
    page = report_html(hostile, {"curves": b"\x89PNG"})
    assert HOSTILE not in page and "<img src=x" not in page
    parsed = Cells()
    parsed.feed(page)
    assert parsed.rows[0][1] == HOSTILE and parsed.rows[1][1] == f"{HOSTILE}8" and parsed.rows[1][-1] == HOSTILE
    assert f"<title>hpc-tf campaign {html.escape(HOSTILE)}</title>" in page and parsed.images == [
        "data:image/png;base64,iVBORw=="]


def test_without_matplotlib_each_command_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = quickstart_campaign(tmp_path)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    for argv in (["campaign", "plot", str(paths.root)], ["campaign", "report", str(paths.root)],
                 ["metrics", str(paths.task_output(8, "main")), "--plot"]):
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 1 and str(result.exception) == MISSING, argv
    assert not (paths.root / "plots").exists() and not (paths.root / "report.html").exists()


@pytest.mark.parametrize("argv", [["--help"], ["campaign", "plot", "--help"], ["metrics", "--help"]])
def test_the_cli_imports_matplotlib_only_to_draw(tmp_path: Path, argv: list[str]) -> None:
    code, modules = modules_after(argv, tmp_path / "unused.yaml")
    assert code == 0 and [m for m in modules if m.split(".")[0] == "matplotlib"] == []


def test_a_png_is_replaced_whole(tmp_path: Path) -> None:
    paths = quickstart_campaign(tmp_path)
    (paths.root / "plots").mkdir()
    (paths.root / "plots" / "curves.png").write_bytes(b"old")
    assert CliRunner().invoke(app, ["campaign", "plot", str(paths.root)]).exit_code == 0
    with Image.open(io.BytesIO((paths.root / "plots" / "curves.png").read_bytes())) as image:
        assert image.size == (1000, 500)
    assert sorted(p.name for p in (paths.root / "plots").iterdir()) == ["by_param.png", "curves.png", "parallel.png"]


def test_a_dollar_in_what_users_wrote_is_drawn_as_written_not_as_tex(tmp_path: Path) -> None:
    found = ranked(quickstart_campaign(tmp_path))
    tex = "$x^{$"  # matplotlib's mathtext would read it as math, and fail to parse it
    dollars = CampaignResults(
        id=f"cost {tex}", root=found.root, stage=found.stage, metric=found.metric, mode=found.mode,
        tasks=[t.__class__(**{**t.as_dict(), "params": {f"lr {tex}": f"{tex}{t.task_id % 3}", "b": t.task_id % 2}})
               for t in found.tasks])
    figures = [curves_figure(dollars, task_runs(dollars)), by_param_figure(dollars), parallel_figure(dollars)]
    for fig in figures:
        assert fig is not None
        with Image.open(io.BytesIO(png(fig))) as image:  # drawn: the text did not go to the TeX parser
            assert image.size[0] > 0
    ax, = figures[0].axes
    assert ax.get_legend().get_texts()[0].get_text() == r"task 8: lr \$x^{\$=\$x^{\$2 b=0 (best)"


def test_before_any_task_logged_plot_says_so_and_the_report_has_the_table_alone(tmp_path: Path) -> None:
    paths = quickstart_campaign(tmp_path)
    for task in read_manifest(paths).tasks:
        paths.task_metrics(task.id, "main").unlink(missing_ok=True)
    nothing = CliRunner().invoke(app, ["campaign", "plot", str(paths.root)])
    assert nothing.exit_code == 1 and str(nothing.exception).splitlines() == [
        f"no task of campaign {paths.root.name} has logged 'loss' yet: nothing to plot",
        f"hint: see where they are: hpc-tf campaign status {paths.root}"]
    assert not (paths.root / "plots").exists()
    report = CliRunner().invoke(app, ["campaign", "report", str(paths.root)])
    assert report.exit_code == 0, report.output
    parsed = Cells()
    parsed.feed(paths.report.read_text(encoding="utf-8"))
    assert len(parsed.rows) == 13 and parsed.images == []
    assert "No completed task logged loss: no best configuration yet." in paths.report.read_text(encoding="utf-8")


def test_a_custom_loop_that_logged_steps_only_is_drawn_against_the_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(str(path), attempt=0, job="")  # what log(step=..., epoch=0, loss=...) writes
    for step in (10, 20, 30):
        writer.write("step", {"loss": 1.0 / step}, epoch=0, step=step)
    ax = run_figure(read_metrics(path), "loop").axes[0]
    line, = ax.get_lines()
    assert (list(line.get_xdata()), list(line.get_ydata()), ax.get_xlabel()) == ([10, 20, 30], [0.1, 0.05, 1 / 30],
                                                                                 "step")
    task = TaskResult(task_id=0, params={"lr": 0.1}, state="COMPLETED", job_id="7", final=1 / 30, best=1 / 30,
                      best_epoch=0, epochs=0, epochs_planned=None, wall_s=None, metrics_file=str(path))
    found = CampaignResults(id="loops", root=str(tmp_path), stage="main", metric="loss", mode="min", tasks=[task])
    ax, = curves_figure(found, task_runs(found)).axes
    line, = ax.get_lines()
    assert (list(line.get_xdata()), ax.get_xlabel()) == ([10, 20, 30], "step")  # not three points at epoch 1
