"""``hpc-tf campaign report`` opened in a real browser: Debian's headless chromium, driven over the DevTools
protocol on a pipe (``--remote-debugging-pipe``: no port another user of the machine could reach). The
page shows every task's row and its three plots decoded (``naturalWidth`` of each ``<img>``), and what a
user wrote (parameter names and values) stays text. A full-page screenshot is taken and checked too.

Needs /usr/bin/chromium (tests/install's apt list); missing, the test fails under CI (as the cluster tests
do) and skips elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image  # matplotlib's own dependency (the plots extra)
from typer.testing import CliRunner

from hpc.campaign.manifest import read_manifest
from hpc.campaign.results import CampaignResults, results
from hpc.cli import app
from hpc.metrics.plot import campaign_figures, png
from hpc.metrics.report import report_html
from tests._readme import readme_argv
from tests.unit.test_campaign_plot import HOSTILE, quickstart_campaign

FLAGS = ["--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-pipe"]
WIDTH = 1200


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: tests/install installs Debian's chromium (CI: this test must not skip)",
                        pytrace=False)
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


class Browser:
    """The DevTools protocol over chromium's pipe: JSON messages, each ended by a NUL byte; fd 3 is what
    chromium reads, fd 4 what it writes."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_browser, self._to = os.pipe()
        self._from, from_browser = os.pipe()

        def onto_3_and_4() -> None:  # in the child: move the pipe ends to the fds chromium expects
            reads, writes = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser))
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        argv = [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # chromium refuses to run as root with its sandbox
        self.process = subprocess.Popen(argv, close_fds=False, preexec_fn=onto_3_and_4,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise EOFError(f"chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def send(self, method: str, session: str | None = None, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self._next += 1
        request: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session is not None:
            request["sessionId"] = session
        os.write(self._to, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._message(deadline)
            if message.get("id") == self._next:
                assert "error" not in message, f"{method}: {message['error']}"
                answer: dict[str, Any] = message["result"]
                return answer
            self.events.append(message)

    def wait_for(self, event: str, session: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event and e.get("sessionId") == session for e in self.events):
            self.events.append(self._message(deadline))

    def page(self) -> str:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session: str = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session)
        return session

    def open(self, session: str, path: Path) -> None:
        self.events.clear()
        self.send("Page.navigate", session, url=path.as_uri())
        self.wait_for("Page.loadEventFired", session)

    def evaluate(self, session: str, expression: str) -> Any:
        answer = self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in answer, answer
        return answer["result"]["value"]

    def screenshot(self, session: str) -> bytes:
        height = self.evaluate(session, "document.documentElement.scrollHeight")
        self.send("Emulation.setDeviceMetricsOverride", session, width=WIDTH, height=height, deviceScaleFactor=1,
                  mobile=False)
        return base64.b64decode(self.send("Page.captureScreenshot", session, format="png")["data"])

    def close(self) -> None:
        with contextlib.suppress(EOFError, TimeoutError, OSError):  # it may be gone already
            self.send("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()  # only the chromium this test started
            self.process.wait()
        os.close(self._to)
        os.close(self._from)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    started = Browser(chromium(), tmp_path / "chromium-profile")
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(autouse=True)
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("HPC_TF_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm") + os.pathsep + os.environ.get("PATH", ""))


SHOWN = """JSON.stringify({
  rows: [...document.querySelectorAll('#results tbody tr')].map(r => [...r.cells].map(c => c.textContent)),
  best: [...document.querySelectorAll('#results tr.best')].map(r => r.cells[0].textContent),
  images: [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
                                           shown: i.getBoundingClientRect().width})),
  title: document.title, summary: document.querySelector('#best').textContent,
  scripts: document.scripts.length, injected: document.querySelectorAll('td *, th *').length})"""


def test_the_report_opens_in_headless_chromium_with_its_table_and_images(tmp_path: Path, browser: Browser) -> None:
    paths = quickstart_campaign(tmp_path)
    result = CliRunner().invoke(app, readme_argv("hpc-tf campaign report DIR", DIR=str(paths.root))[1:])
    assert result.exit_code == 0, result.output
    page = browser.page()
    browser.open(page, paths.report)
    shown = json.loads(browser.evaluate(page, SHOWN))
    assert [row[0] for row in shown["rows"]] == ["8", "4", "5", "6", "7", "0", "1", "2", "3", "9", "10", "11"]
    assert shown["rows"][0][1:4] == ["3", "64", "COMPLETED"] and shown["rows"][-1][3] == "PENDING"
    assert shown["best"] == ["8"] and shown["summary"].startswith("Best: task 8 (epochs=3 batch_size=64): val_loss ")
    # the three PNGs decoded at the size they were drawn, and laid out on the page
    assert [(i["complete"], i["width"], i["height"]) for i in shown["images"]] == [
        (True, 1000, 500), (True, 840, 340), (True, 660, 500)]
    assert all(i["shown"] > 0 for i in shown["images"])
    assert shown["scripts"] == 0 and shown["injected"] == 0
    shot = browser.screenshot(page)
    (tmp_path / "report.png").write_bytes(shot)  # to look at: pytest --basetemp=DIR
    with Image.open(io.BytesIO(shot)) as image:
        assert image.size[0] == WIDTH and image.size[1] > 1500  # the table, then three figures below it
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # drawn plots, not an empty page


def test_what_users_wrote_stays_text_in_the_browser(tmp_path: Path, browser: Browser) -> None:
    paths = quickstart_campaign(tmp_path)
    found = results(read_manifest(paths), paths)
    hostile = CampaignResults(
        id=HOSTILE, root=found.root, stage=found.stage, metric=found.metric, mode=found.mode,
        tasks=[t.__class__(**{**t.as_dict(), "params": {HOSTILE: f"{HOSTILE}{t.task_id}"}, "note": HOSTILE})
               for t in found.tasks])
    report = tmp_path / "hostile.html"
    report.write_text(report_html(hostile, {s: png(f) for s, f in campaign_figures(hostile).items()}),
                      encoding="utf-8")
    page = browser.page()
    browser.open(page, report)
    shown = json.loads(browser.evaluate(page, SHOWN))
    assert shown["title"] == f"hpc-tf campaign {HOSTILE}"
    assert shown["rows"][0][1] == f"{HOSTILE}8" and shown["rows"][0][-1] == HOSTILE
    assert shown["injected"] == 0 and shown["scripts"] == 0  # no <img onerror> inside a cell: it stayed text
    assert len(shown["images"]) == 2 and all(i["width"] > 0 for i in shown["images"])  # one parameter: no parallel
