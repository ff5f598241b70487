"""One place decides where run directories go: launch, campaigns and status agree on a relative runs_dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpc.campaign.load import load_campaign_text
from hpc.campaign.plan import plan_campaign
from hpc.launch import plan_launch
from hpc.paths import runs_root
from hpc.site.load import load_site


def test_a_relative_runs_dir_is_the_same_directory_for_launch_campaigns_and_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    specs = tmp_path / "specs"  # the spec lives elsewhere than where the user runs hpc-tf
    specs.mkdir()
    (specs / "job.yaml").write_text("name: rel\ncommand: python t.py\nresources: {nodes: 1, gpus_per_node: 1}\n")
    text = "name: sweep\njob: {command: [python3, t.py]}\nparameters: {list: [{x: 1}]}\n"
    (specs / "campaign.yaml").write_text(text)
    site = load_site("sandbox", ["runs_dir=runs"])

    where_status_looks = runs_root(site.config.runs_dir, os.environ)
    launched = Path(plan_launch(specs / "job.yaml", "sandbox", ["runs_dir=runs"]).job.run_dir)
    campaign = plan_campaign(load_campaign_text(text, specs / "campaign.yaml"), site, "sweep-1",
                             environ=dict(os.environ), gpu_limit=4, max_array_size=1001).paths.root
    assert where_status_looks == tmp_path / "runs"
    assert launched.parent == where_status_looks and campaign.parent == where_status_looks
