"""Every file hpc-tf reads, however broken or hostile, ends in one short line on stderr, never a traceback.

Through the real CLI (a new interpreter, as a user runs it): job specs, site configs, run records, hand-off
records, the serving endpoint; the YAML loader's limits directly; and main()'s last-resort handlers.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hpc.errors import SpecError
from hpc.site.load import load_site
from hpc.yamlsource import MAX_DEPTH, load_yaml_file, parse_yaml

cli_app = importlib.import_module("hpc.cli.app")  # the module; hpc.cli.app is also the Typer object
SPEC = b"name: a\ncommand: python train.py\n"
MEMORY_LIMIT = 1 << 30  # the CLI needs ~150 MiB; a loader that expands aliases hits this, not the machine's RAM


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def hpc_tf(*argv: str | Path, cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpc.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, preexec_fn=_limit_memory, check=False,
                          env={**os.environ, "COLUMNS": "300"})  # tables not cut to 80 columns


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single line a failed command printed; fails the test on anything else."""
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("hpc-tf: error: "), lines[0][:300]
    assert result.returncode == code, (result.returncode, lines[0][:300])
    assert len(lines[0]) < 400 and "\x1b" not in lines[0], lines[0][:300]
    return lines[0]


def billion_laughs() -> bytes:
    """Nine levels of nine aliases: 342 bytes that expand to 9**9 (387 million) strings."""
    lines = ["a: &a [" + ", ".join(["lol"] * 9) + "]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return ("\n".join(["name: a", "command: x", "extra:", *("  " + line for line in lines)]) + "\n").encode()


HOSTILE_SPECS = {
    # name: (file content, what the one line must say)
    "billion laughs": (billion_laughs(), ":4: anchors and aliases (&name, *name) are not supported"),
    "UTF-16": (SPEC.decode().encode("utf-16"), ":1: UTF-16 text, not UTF-8; save it as UTF-8"),
    "binary": (b"name: a\n" + bytes(range(128, 256)), ":2: not UTF-8 text (byte 0x80 at offset 8)"),
    "NUL byte": (b"name: a\0b\ncommand: x\n", ":1: not text: a NUL byte at offset 7"),
    "5000-digit integer": (SPEC + b"resources:\n  nodes: " + b"9" * 5000 + b"\n",
                           ":4: a number of 5000 digits is too long (at most 100); quote it if it is text"),
    "nesting 10000 deep": (SPEC + b"env: " + b"[" * 10000 + b"]" * 10000 + b"\n",
                           f":3: nested deeper than {MAX_DEPTH} levels"),
    "duplicate key": (b"name: a\ncommand: x\nresources:\n  nodes: 1\n  gpus_per_node: 1\n  nodes: 2\n",
                      ":6: key 'nodes' appears twice, lines 4 and 6; keep one"),
    "100 kB value": (SPEC + b"resources:\n  time: '" + b"9x" * 50_000 + b"'\n",
                     ":4: resources.time: '" + "9x" * 40 + "... (100000 characters)' is not a Slurm time"),
    "escape sequence": (b'name: "a\\e[31mred\\e]0;title\\a"\ncommand: x\n',
                        ":1: name: 'a\\x1b[31mred\\x1b]0;title\\x07'"),
    "a constructor's own error": (SPEC + b"resources:\n  nodes: !!int 0x\n", ":4: cannot read this value: "),
    "over 1 MiB": (SPEC + b"# " + b"x" * (1 << 20) + b"\n", "larger than 1 MiB, the most hpc-tf reads"),
    "PyYAML's own error": (b"name: a\ncommand: [x\n", ":3: not valid YAML: "),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SPECS))
def test_a_hostile_spec_is_one_line(case: str, tmp_path: Path) -> None:
    content, expected = HOSTILE_SPECS[case]
    spec = tmp_path / "job.yaml"
    spec.write_bytes(content)
    started = time.monotonic()
    line = one_error_line(hpc_tf("render", spec, "--site", "sandbox", cwd=tmp_path, timeout=20))
    assert time.monotonic() - started < 15
    assert expected in line, line


def test_a_hostile_site_config_is_one_line(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("name: s\naccount: lab\naccount: other\n")
    spec = tmp_path / "job.yaml"
    spec.write_bytes(SPEC)
    line = one_error_line(hpc_tf("render", spec, "--site", site, cwd=tmp_path))
    assert f"{site}:3: key 'account' appears twice, lines 2 and 3" in line


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        # bytes of argv that are not UTF-8 reach Python as lone surrogates; no file can be written with them
        (os.fsdecode(b"runs_dir=/tmp/a\x85b"), "--set runs_dir: runs_dir: the value must be one line of printable "
                                                "text; it contains \\udc85"),
        # U+0085 is a line break to YAML, which would fold it into a space: refused, not changed
        ("runs_dir=/tmp/a\u0085b", "--set runs_dir: runs_dir: the value must be one line of printable text; "
                                   "it contains \\x85"),
    ],
)
def test_a_set_value_that_is_not_one_line_of_text_is_one_line(tmp_path: Path, setting: str, expected: str) -> None:
    (tmp_path / "job.yaml").write_bytes(SPEC)
    result = hpc_tf("launch", "job.yaml", "--dry-run", "--site", "local", "--set", setting, cwd=tmp_path)
    assert expected in one_error_line(result)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--set", "k" * 100_000 + "=1"], "not a site key; keys are dotted names"),
        (["--set", "account=" + "a" * 100_000], "account: 'aaaa"),  # a name has at most 128 characters
        (["--set", "default_time=" + "9" * 100_000], "default_time: '9999"),
    ],
)
def test_a_huge_value_anywhere_is_one_short_line(tmp_path: Path, argv: list[str], expected: str) -> None:
    (tmp_path / "job.yaml").write_bytes(SPEC)
    line = one_error_line(hpc_tf("launch", "job.yaml", "--dry-run", "--site", "local", *argv, cwd=tmp_path))
    assert expected in line  # and one_error_line checked it is short


def test_a_site_in_the_user_config_that_is_not_a_name_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_bytes(SPEC)
    config = tmp_path / "config" / "hpc-tf" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("site: {a: 1}\n")
    result = subprocess.run([sys.executable, "-m", "hpc.cli", "render", "job.yaml"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=30, check=False,
                            env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    first, hint = result.stderr.splitlines()
    assert first == f"hpc-tf: error: {config}: site: '{{'a': 1}}' is not a site name or a site file's path"
    assert hint.startswith("hint: write e.g. site: mycluster")


def test_site_spec_and_campaign_files_share_the_limits(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("a: &x 1\nb: *x\n")
    with pytest.raises(SpecError, match="anchors and aliases"):
        load_yaml_file(path)
    with pytest.raises(SpecError, match="anchors and aliases"):
        load_site(str(path), environ={"HOME": str(tmp_path)})


def test_duplicate_keys_are_refused_in_nested_and_flow_mappings() -> None:
    with pytest.raises(SpecError, match=r"key 'x' appears twice, lines 3 and 7"):
        parse_yaml("a:\n  b:\n    x: 1\n    y: 2\n    z: 3\n\n    x: 4\n", "f.yaml")
    with pytest.raises(SpecError, match=r"f.yaml:1: key 'x' appears twice, lines 1 and 1"):
        parse_yaml("a: {x: 1, x: 2}\n", "f.yaml")
    # the same text in two mappings is no duplicate
    assert parse_yaml("a: {x: 1}\nb: {x: 2}\n", "f.yaml").data == {"a": {"x": 1}, "b": {"x": 2}}


@pytest.mark.parametrize(("text", "expected"), [
    ("name: a\ncommand: \x07\n", "f.yaml:2: not YAML text: it contains the control character '\\x07'"),
    ("a: " + "x" * (1 << 20), "f.yaml: larger than 1 MiB, the most hpc-tf reads; is it the right file?"),
])
def test_text_handed_over_directly_has_the_same_limits(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_yaml(text, "f.yaml")
    assert str(info.value) == expected


def test_a_date_that_is_no_date_stays_text() -> None:
    assert parse_yaml("workdir: 2001-13-45\n", "f.yaml").data == {"workdir": "2001-13-45"}


@pytest.mark.parametrize(
    ("text", "value"),
    [(".", "."), ("-.", "-."), ("._", "._"), ("0x_", "0x_"), ("0o_", "0o_"),  # no digit: text, not a crash
     (".5", 0.5), ("-2.", -2.0), ("1e3", 1000.0), ("0x1F", 31), ("0o17", 15), ("1_000", 1000)],
)
def test_a_number_needs_a_digit(text: str, value: object) -> None:
    assert parse_yaml(f"name: {text}\n", "f.yaml").data == {"name": value}


def test_nesting_up_to_the_limit_loads() -> None:
    depth = MAX_DEPTH
    assert parse_yaml("a: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n", "f.yaml").data is not None


# ------------------------------------------------------------------ records an earlier command wrote


def test_a_damaged_submission_record_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "submission.json").write_text('{"job_id": ')
    line = one_error_line(hpc_tf("status", run))
    assert f"the run's submission record '{run / 'submission.json'}' is damaged (not valid JSON" in line
    (run / "submission.json").write_text('{"cluster": "c"}')  # valid JSON, not a record
    assert "'job_id' is missing" in one_error_line(hpc_tf("status", run))


@pytest.mark.parametrize("content", [b"[" * 100_000, b"\xff\xfe{\x00}\x00", b'{"job_id": 1' + b"0" * 5000 + b"}"])
def test_a_resolved_job_that_is_not_json_is_one_line(content: bytes, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "resolved.json").write_bytes(content)
    result = hpc_tf("handoff", run, "--model", "m", "--repository", tmp_path / "repo")
    # the hand-off's own form: the failure, then where its record is
    assert "Traceback" not in result.stderr and result.returncode == 2, result.stderr[-2000:]
    first, hint = result.stderr.splitlines()
    assert first.startswith(f"hpc-tf: error: hand-off of 'm' failed at stage 'source': the resolved job "
                            f"'{run / 'resolved.json'}' is damaged (")
    assert hint.startswith("hint: record: ")


def test_a_damaged_handoff_record_is_one_line(tmp_path: Path) -> None:
    records = tmp_path / "repo" / ".hpc-tf" / "handoffs" / "m"
    records.mkdir(parents=True)
    (records / "20260101T000000-v1.json").write_bytes(b'{"ok": true, "samples": ')
    line = one_error_line(hpc_tf("serve", "predict", "m", "--repository", tmp_path / "repo"))
    assert "the hand-off record" in line and "20260101T000000-v1.json' is damaged (not valid JSON" in line
    assert line.endswith("hand the model over again: hpc-tf handoff RUN_DIR --model m")


def test_a_damaged_endpoint_record_is_one_line(tmp_path: Path) -> None:
    state = tmp_path / "repo" / ".hpc-tf"
    state.mkdir(parents=True)
    (state / "server.json").write_text(json.dumps({"host": "x" * 100_000}))
    line = one_error_line(hpc_tf("serve", "status", "--repository", tmp_path / "repo"))
    assert "the serving node's endpoint" in line and "server.json' is damaged" in line


ENDPOINT = {"host": "10.0.0.9", "http_port": 1, "grpc_port": 2, "metrics_port": 3, "pid": 1, "hostname": "n",
            "repository": "/r", "log": "/l", "started": 0.0}


@pytest.mark.parametrize(
    ("plant", "expected"),
    [
        # someone who can write in the repository points the owner's next call, and its secret, elsewhere
        (lambda path: os.chown(path, 54321, 54321), "is owned by uid 54321, not by you: hpc-tf does not trust it"),
        (lambda path: path.chmod(0o664), "is writable by others (mode 0664): hpc-tf does not trust it"),
    ],
)
def test_an_endpoint_someone_else_could_have_written_is_not_trusted(
    tmp_path: Path, plant: Any, expected: str
) -> None:
    if os.geteuid() != 0 and "uid" in expected:
        pytest.fail("needs root, to give the file to another uid (tests/run runs as root)")
    state = tmp_path / "repo" / ".hpc-tf"
    state.mkdir(parents=True)
    endpoint = state / "server.json"
    endpoint.write_text(json.dumps(ENDPOINT))
    plant(endpoint)
    line = one_error_line(hpc_tf("serve", "status", "--repository", tmp_path / "repo"))
    assert "the serving node's endpoint" in line and expected in line


def test_an_endpoint_behind_a_symlink_is_not_followed(tmp_path: Path) -> None:
    state = tmp_path / "repo" / ".hpc-tf"
    state.mkdir(parents=True)
    (tmp_path / "elsewhere.json").write_text(json.dumps(ENDPOINT))
    (state / "server.json").symlink_to(tmp_path / "elsewhere.json")
    line = one_error_line(hpc_tf("serve", "status", "--repository", tmp_path / "repo"), code=2)
    assert "cannot read the serving node's endpoint" in line and "symbolic links" in line


def test_a_spec_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "job.yaml")  # open() would wait for a writer forever
    line = one_error_line(hpc_tf("render", "job.yaml", cwd=tmp_path, timeout=20))
    assert "job.yaml: not a regular file" in line


# ------------------------------------------------------------------ what reaches the terminal


def test_markup_in_a_path_is_printed_as_written(tmp_path: Path) -> None:
    site_dir = tmp_path / "x[" / "red]:smile:[bold]"  # .../x[/red]:smile:[bold]/site.yaml
    site_dir.mkdir(parents=True)
    site = site_dir / "site.yaml"
    site.write_text("name: s\naccount: lab\n")
    result = hpc_tf("config", "show", "--site", site)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"site file {site}" in result.stdout


def test_an_oserror_is_one_line_naming_the_path(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    def full_disk() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/scratch/runs/a/.job.sbatch.x.tmp")

    monkeypatch.setattr(cli_app, "app", full_disk)
    with pytest.raises(SystemExit) as info:
        cli_app.main()
    assert info.value.code == 1
    assert capsys.readouterr().err == "hpc-tf: error: '/scratch/runs/a/.job.sbatch.x.tmp': No space left on device\n"


@pytest.mark.parametrize("debug", ["", "1"])
def test_an_unforeseen_error_is_one_line_with_the_traceback_on_request(
    debug: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def bug() -> None:
        raise RuntimeError("\x1b[2Jgone\nsecond line")

    monkeypatch.setattr(cli_app, "app", bug)
    monkeypatch.setenv(cli_app.DEBUG_VARIABLE, debug)
    with pytest.raises(SystemExit) as info:
        cli_app.main()
    assert info.value.code == 1
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert last == ("hpc-tf: error: internal error: RuntimeError: '\\x1b[2Jgone' "
                    "(set HPC_TF_DEBUG=1 for the traceback; please report)")
    assert ("Traceback" in err) == bool(debug)


def test_a_bad_time_option_is_a_usage_error_not_an_internal_one(tmp_path: Path) -> None:
    line = one_error_line(hpc_tf("serve", "up", "--slurm", "--time", "soon", "--repository", tmp_path / "repo"))
    assert line.startswith("hpc-tf: error: --time: 'soon' is not a Slurm time")


def test_a_resolved_job_nested_too_deep_is_one_line_on_the_node_side_too(tmp_path: Path) -> None:
    resolved = tmp_path / "resolved.json"
    resolved.write_text("[" * 100_000)
    line = one_error_line(hpc_tf("node-env", "--resolved", resolved), code=4)
    assert f"the resolved job {resolved} is not valid JSON" in line
