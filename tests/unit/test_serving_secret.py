"""The serving node's owner secret: stored for the owner alone, refused otherwise, sent as Triton expects."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from hpc.errors import ServingError
from hpc.serving import secret as node_secret
from hpc.serving.repository import Repository
from hpc.serving.secret import NodeSecret
from hpc.serving.server import Bundle, server_argv


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_for_the_owner_alone_outside_the_repository(tmp_path: Path, config_home: Path) -> None:
    repo = tmp_path / "models"
    repo.mkdir()
    old = os.umask(0)  # a careless umask must not widen the key file
    try:
        secret = node_secret.create(repo, inference_token=True)
    finally:
        os.umask(old)
    path = node_secret.key_file(repo)
    assert path.parent == config_home / "hpc-tf" / "serving" and path.suffix == ".key"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert not [p for p in repo.rglob("*") if secret.control in p.read_text(errors="replace")]
    assert node_secret.load(repo) == secret
    assert secret.control != secret.inference and len(secret.control) >= 40


def test_each_serve_up_gets_a_new_secret_keyed_by_the_real_repository_path(tmp_path: Path, config_home: Path) -> None:
    repo = tmp_path / "models"
    repo.mkdir()
    (tmp_path / "link").symlink_to(repo)
    first = node_secret.create(repo)
    assert first.inference is None
    assert node_secret.load(tmp_path / "link") == first  # the same repository through a symlink
    second = node_secret.create(tmp_path / "link")
    assert second != first and node_secret.load(repo) == second
    assert node_secret.key_file(tmp_path / "other") != node_secret.key_file(repo)


def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path: Path, config_home: Path) -> None:
    node_secret.create(tmp_path)
    path = node_secret.key_file(tmp_path)
    path.chmod(0o640)
    with pytest.raises(ServingError) as caught:
        node_secret.load(tmp_path)
    assert "readable by others (mode 0640)" in caught.value.message and "\n" not in caught.value.message
    assert f"chmod 600 {path}" in str(caught.value.hint)


def test_a_key_file_owned_by_someone_else_is_refused(tmp_path: Path, config_home: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    node_secret.create(tmp_path)
    uid = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: uid + 1)  # the file now belongs to "another" user
    with pytest.raises(ServingError, match=f"belongs to uid {uid}, not to you"):
        node_secret.load(tmp_path)


def test_a_symlinked_key_file_is_refused(tmp_path: Path, config_home: Path) -> None:
    node_secret.create(tmp_path / "a")
    target = node_secret.key_file(tmp_path / "a")
    link = node_secret.key_file(tmp_path / "b")
    link.symlink_to(target)
    with pytest.raises(ServingError, match="cannot read the serving node key"):
        node_secret.load(tmp_path / "b")


def test_missing_and_damaged_key_files_are_one_line(tmp_path: Path, config_home: Path) -> None:
    with pytest.raises(ServingError, match="only the user who started it with hpc-tf serve up can control it"):
        node_secret.load(tmp_path)
    node_secret.create(tmp_path)
    path = node_secret.key_file(tmp_path)
    for text in ("not json", json.dumps({"control": ""}), json.dumps({"control": "x", "inference": 3}), "[]"):
        path.write_text(text)
        with pytest.raises(ServingError, match="is damaged"):
            node_secret.load(tmp_path)


def test_headers_as_triton_checks_them() -> None:
    control_only = NodeSecret("C")
    assert control_only.http_headers() == {"hpc-tf-key": "C"}
    assert control_only.grpc_headers() == {"triton-grpc-protocol-hpc-tf-key": "C"}
    both = NodeSecret("C", "I")
    assert both.http_headers() == {"hpc-tf-key": "C", "hpc-tf-inference-key": "I"}
    assert both.grpc_headers() == {"triton-grpc-protocol-hpc-tf-key": "C",
                                   "triton-grpc-protocol-hpc-tf-inference-key": "I"}
    assert repr(NodeSecret("sekrit", "sekrit2")) == "NodeSecret()"  # never in a log or a traceback


def test_server_argv_restricts_control_always_and_inference_on_request(tmp_path: Path) -> None:
    bundle = Bundle(tmp_path / "tritonserver", tmp_path / "libs")
    control = "model-repository,model-config,shared-memory,statistics,trace,logging"

    def restricted(secret: NodeSecret) -> list[str]:
        argv = server_argv(bundle, Repository.at(tmp_path), tmp_path / "backends", "10.0.0.1", (1, 2, 3), secret)
        return [a for a in argv if a.startswith(("--http-restricted-api", "--grpc-restricted-protocol"))]

    assert restricted(NodeSecret("C")) == [f"--http-restricted-api={control}:hpc-tf-key=C",
                                           f"--grpc-restricted-protocol={control}:hpc-tf-key=C"]
    assert restricted(NodeSecret("C", "I"))[2:] == ["--http-restricted-api=inference:hpc-tf-inference-key=I",
                                                    "--grpc-restricted-protocol=inference:hpc-tf-inference-key=I"]


def test_failed_calls_say_refused_or_lost_in_one_line() -> None:
    from tritonclient.utils import InferenceServerException

    from hpc.serving.control import call_error

    url = "10.0.0.1:8001"
    refused = call_error("loading 'mlp'", url, InferenceServerException(
        "This protocol is restricted, expecting header 'triton-grpc-protocol-hpc-tf-key'", "StatusCode.UNAVAILABLE"))
    assert refused.message == f"loading 'mlp' refused by the serving node at {url}: it does not accept this user's key"
    lost = call_error("inference on 'mlp'", url, InferenceServerException(
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:8001: Connection refused",
        "StatusCode.UNAVAILABLE"))
    assert lost.message == (f"inference on 'mlp': the serving node at {url} is not answering; the model repository "
                            "and its published versions are intact (start a new node: hpc-tf serve up)")
    other = call_error("loading 'mlp'", url,
                       InferenceServerException("load failed: bad weights", "StatusCode.INTERNAL"))
    assert other.message == f"loading 'mlp' failed at {url}: load failed: bad weights"


def test_the_serving_node_directory_is_the_owners_alone(tmp_path: Path) -> None:
    repo = Repository.at(tmp_path / "models")
    repo.server_dir.mkdir(parents=True, mode=0o755)
    assert mode(repo.make_server_dir()) == 0o700


def test_a_serving_node_directory_planted_by_someone_else_is_refused(tmp_path: Path) -> None:
    """Its script is what sbatch runs as the owner: a directory someone else made, or a symlink to
    one, would let them swap it."""
    repo = Repository.at(tmp_path / "models")
    repo.state_dir.mkdir(parents=True)
    (tmp_path / "theirs").mkdir()
    repo.server_dir.symlink_to(tmp_path / "theirs")
    with pytest.raises(ServingError, match="is not your own directory"):
        repo.make_server_dir()
    if os.geteuid() == 0:  # as root (tests/run): one owned by another uid, which root could chmod
        repo.server_dir.unlink()
        repo.server_dir.mkdir()
        os.chown(repo.server_dir, 54321, 54321)
        with pytest.raises(ServingError, match="is not your own directory"):
            repo.make_server_dir()


# /proc/self/mountinfo lines as the kernel writes them: this machine's, and a login node's with hidepid
PROC_PLAIN = "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
PROC_HIDDEN = "22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw,hidepid=invisible\n"
PROC_HIDDEN_OLD = "22 27 0:21 / /proc rw,relatime - proc proc rw,hidepid=2,gid=27\n"


@pytest.mark.parametrize(("mountinfo", "hidden"), [(PROC_PLAIN, False), (PROC_HIDDEN, True), (PROC_HIDDEN_OLD, True),
                                                   ("", False)])
def test_proc_mount_options_tell_whether_command_lines_are_hidden(mountinfo: str, hidden: bool) -> None:
    other_mounts = "30 22 0:26 / /sys rw - sysfs sysfs rw,hidepid=2\n"  # not /proc: ignored
    assert node_secret.proc_hides_others(other_mounts + mountinfo) is hidden


def test_another_users_process_on_this_host_is_reported() -> None:
    """A local node's secret is on tritonserver's command line: serve up warns when another ordinary user
    runs processes here and /proc shows them command lines (as on this machine)."""
    if os.geteuid() != 0:
        pytest.fail("needs root, to start a process as another user (tests/run runs as root)")
    if node_secret.proc_hides_others(Path("/proc/self/mountinfo").read_text()):
        pytest.fail("this host's /proc hides other users' processes: nothing to warn about here")
    uid = 54321  # an ordinary uid no account has here: certainly no process of its own yet
    assert uid not in node_secret.users_who_can_read_command_lines()
    sleeper = subprocess.Popen(["sleep", "60"], user=uid, group=uid, extra_groups=[])
    try:
        assert uid in node_secret.users_who_can_read_command_lines()
        assert 64030 not in node_secret.users_who_can_read_command_lines()  # system accounts (60000+) are not users
    finally:
        sleeper.kill()
        sleeper.wait()
