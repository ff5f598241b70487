"""The example site configs a user copies (site_configs/example-*.yaml) each run the README's own example spec
and hand models off in a format the Triton that ``hpc-tf serve up`` starts can load.

The spec is read from README.md itself (the yaml block under "On your cluster"): when the README's spec and
the examples drift apart, this test fails.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from hpc.render.directives import read_directives
from hpc.render.script import render_script
from hpc.resolve import resolve
from hpc.serving.config import BACKEND
from hpc.serving.server import Bundle
from hpc.site.load import load_site
from hpc.spec import load_spec_text

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "site_configs").glob("example-*.yaml"))
ALICE = {"HOME": "/home/alice", "USER": "alice"}


def readme_spec() -> str:
    """The job spec of the README's "On your cluster" section: its first yaml block with a ``command``,
    dedented (it sits in a list item)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## On your cluster\n(.*?)(?=^## )", readme, re.S | re.M)
    assert section is not None, "README.md has no '## On your cluster' section"
    blocks = [textwrap.dedent(b.group(2)) for b in re.finditer(r"^( *)```yaml\n(.*?)^\1```", section.group(1),
                                                               re.S | re.M)]
    specs = [b for b in blocks if "command" in (yaml.safe_load(b) or {})]
    assert specs, "README.md's 'On your cluster' section has no ```yaml block with a job spec"
    return specs[0]


def test_there_are_examples_and_the_readme_spec_is_found() -> None:
    assert [p.stem for p in EXAMPLES] == ["example-apptainer", "example-plain"]
    assert "gpus_per_node" in readme_spec()


@pytest.mark.parametrize("site_file", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_site_renders_the_readme_spec(site_file: Path) -> None:
    text = readme_spec()
    loaded = load_spec_text(text, "README.md (On your cluster)", Path("/home/alice/project"))
    resources = loaded.spec.resources
    site = load_site(site_file.stem, environ=ALICE)
    job = resolve(loaded, site, "readme-run", environ=ALICE)
    script = render_script(job)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    directives = read_directives(script)
    # what the README promises: the job as written, charged to the site's default account
    assert site.config.account, f"{site_file.name} sets no default account"
    assert directives["account"] == site.config.account
    assert directives["nodes"] == str(resources.nodes)
    assert directives["ntasks-per-node"] == str(resources.tasks_per_node)
    assert directives["gres"] is not None and directives["gres"].endswith(f":{resources.gpus_per_node}")
    assert directives["time"] == "04:00:00"
    assert job.partition in site.config.partitions
    for module in loaded.spec.environment.modules:
        assert f"module load {module} " in script
    assert "/home/alice/venvs/tf/bin/activate" in script


@pytest.mark.triton
@pytest.mark.parametrize("site_file", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_site_serves_in_a_format_the_started_triton_loads(site_file: Path) -> None:
    """``hpc-tf serve up`` starts the tritonserver bundled in nvidia-pytriton: the example's serving.format
    must be one its backends load, or every hand-off on the example config fails."""
    fmt = load_site(site_file.stem, environ=ALICE).config.serving.format
    backends = Bundle.find().backends()
    assert BACKEND[fmt] in backends, f"{site_file.name}: serving.format {fmt} needs the {BACKEND[fmt]} backend"
