"""``hpc-tf site add``: a user's own site config installed in one command, checked first, written whole,
and optionally made the default without disturbing the rest of the user file."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hpc.site.load import load_site

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "site_configs" / "example-plain.yaml"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("HPC_TF_SITE", raising=False)
    return home


def hpc_tf(*args: str) -> tuple[int, str, str]:
    """The command as a user runs it: errors become one message and an exit code in hpc.cli.app.main."""
    result = subprocess.run([sys.executable, "-m", "hpc.cli", *args], capture_output=True, text=True, timeout=60,
                            check=False)
    return result.returncode, result.stdout, result.stderr


def site_add(*args: str) -> tuple[int, str, str]:
    return hpc_tf("site", "add", *args)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_add_installs_the_file_as_written_for_the_user_alone_and_makes_it_the_default(home: Path) -> None:
    code, out, err = site_add(str(EXAMPLE), "--name", "mycluster", "--default")
    assert code == 0, err
    config = home / ".config" / "hpc-tf"
    installed = config / "sites" / "mycluster.yaml"
    assert installed.read_text() == EXAMPLE.read_text()  # comments and all
    assert (mode(config), mode(config / "sites"), mode(installed)) == (0o700, 0o700, 0o600)
    assert (config / "config.yaml").read_text() == "site: mycluster\n"
    assert f"site 'mycluster' installed: {installed}" in out
    assert "default site: mycluster" in out
    env = {"HOME": str(home)}
    assert load_site(None, environ=env).config.name == "mycluster"
    assert load_site("mycluster", environ=env).config.account == "my-lab"


def test_default_changes_only_the_site_line_of_the_user_file(home: Path) -> None:
    user = home / ".config" / "hpc-tf" / "config.yaml"
    user.parent.mkdir(parents=True)
    before = "# my settings\naccount: physics   # charged here\nsite: example-plain\nqos: long\n"
    user.write_text(before)
    user.chmod(0o640)
    code, out, err = site_add(str(EXAMPLE), "--name", "mycluster", "--default")
    assert code == 0, err
    assert user.read_text() == before.replace("site: example-plain", "site: mycluster")
    assert mode(user) == 0o640
    assert "(was 'example-plain')" in out
    # appended when the file names no site yet, after a last line without its newline
    user.write_text("account: physics")
    assert site_add(str(EXAMPLE), "--name", "other", "--default")[0] == 0
    assert user.read_text() == "account: physics\nsite: other\n"
    # a name YAML would read as a number is written quoted
    assert site_add(str(EXAMPLE), "--name", "1.5", "--default")[0] == 0
    assert load_site(None, environ={"HOME": str(home)}).config.name == "1.5"


def test_default_through_a_symlinked_user_file_keeps_the_link(home: Path, tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles" / "hpc-tf.yaml"
    dotfiles.parent.mkdir()
    dotfiles.write_text("qos: long\n")
    link = home / ".config" / "hpc-tf" / "config.yaml"
    link.parent.mkdir(parents=True)
    link.symlink_to(dotfiles)
    assert site_add(str(EXAMPLE), "--name", "mycluster", "--default")[0] == 0
    assert link.is_symlink() and dotfiles.read_text() == "qos: long\nsite: mycluster\n"


@pytest.mark.parametrize(("args", "site_text", "user_text", "message"), [
    (["--name", "local"], None, None, "site name 'local' is a built-in site"),
    (["--name", "my cluster"], None, None, "site name 'my cluster' is not valid"),
    ([], "partitions: {gpu: {gpus_per_nod: 4}}\n", None,
     "site.yaml:1: partitions.gpu.gpus_per_nod: unknown key (did you mean 'gpus_per_node'?)"),
    ([], "name: elsewhere\n", None, "names itself 'elsewhere' (name:), not 'site'"),
    (["--default"], None, "- a list\n", "config.yaml must be a mapping of site keys"),
    (["--default"], None, "{qos: long}\n", "cannot set the default site in"),
])
def test_a_bad_input_is_one_line_and_writes_nothing(home: Path, tmp_path: Path, args: list[str],
                                                    site_text: str | None, user_text: str | None,
                                                    message: str) -> None:
    source = tmp_path / "site.yaml"
    source.write_text(site_text if site_text is not None else EXAMPLE.read_text())
    config = home / ".config" / "hpc-tf"
    if user_text is not None:
        config.mkdir(parents=True)
        (config / "config.yaml").write_text(user_text)
    code, out, err = site_add(str(source), *args)
    assert code == 2 and message.replace("site.yaml", str(source)) in err, err
    assert "Traceback" not in err and out == ""
    assert not (config / "sites").exists()
    if user_text is not None:
        assert (config / "config.yaml").read_text() == user_text


def test_an_installed_site_is_replaced_only_when_asked(home: Path, tmp_path: Path) -> None:
    assert site_add(str(EXAMPLE), "--name", "mycluster")[0] == 0
    changed = tmp_path / "mycluster.yaml"
    changed.write_text(EXAMPLE.read_text().replace("account: my-lab", "account: physics"))
    code, _, err = site_add(str(changed))
    assert code == 2 and "you have a site 'mycluster' already" in err and "--replace" in err
    assert load_site("mycluster", environ={"HOME": str(home)}).config.account == "my-lab"
    assert site_add(str(changed), "--replace")[0] == 0
    assert load_site("mycluster", environ={"HOME": str(home)}).config.account == "physics"
    assert not (home / ".config" / "hpc-tf" / "config.yaml").exists()  # no --default: the default is untouched


def test_an_unknown_site_says_how_to_install_one(home: Path) -> None:
    code, _, err = hpc_tf("config", "show", "--site", "mycluster")
    assert code == 2 and "install yours with: hpc-tf site add FILE --name mycluster" in err, err
