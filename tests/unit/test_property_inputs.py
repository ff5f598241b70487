"""Random bytes, random YAML and random field values through the CLI's loaders and renderer (issue 15).

Every outcome of ``hpc-tf render JOB.YAML --site SITE.YAML`` is one of two:

* exit 0 and a script that ``bash -n`` accepts, whose ``#SBATCH`` lines read back to exactly the
  intended options (no line more: nothing moved the log or added an option), whose ``export`` lines
  give bash exactly the env values, and whose command line gives bash exactly the command's words;
* a non-zero exit with nothing on stdout and an error of one line per problem: the first line
  ``hpc-tf: error: ...``, each further line a problem of the same report (``FILE:LINE: field: ...``) or
  its ``hint: ...``; no traceback, and no line break or control character echoed from the input.

The CLI runs in-process (``hpc.cli.app.main``, what the ``hpc-tf`` script calls), so an exception
that would print a traceback fails the test with that traceback.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from hpc.cli.app import main
from hpc.render.directives import read_directives
from hpc.text import forbidden_character

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# what sbatch, bash, str.splitlines and a terminal treat specially, and what quoting must survive
SPECIALS = "\n\r\0\t\v\f\x1b\x1c\x1d\x1e\x7f\x85\u2028\u2029\u200b\ufeff '\"`$()\\#%;&|<>*?~{}[],:=!-/."
MANAGED = {"job-name", "output", "nodes", "ntasks-per-node", "time", "partition", "account", "qos", "constraint",
           "mem", "cpus-per-task", "gres", "gpus-per-task", "exclusive", "signal", "requeue", "open-mode"}
EXTRA_OPTIONS = ["--comment", "--mail-type", "--begin", "--hold", "--licenses"]


def run_cli(args: list[str], home: Path) -> tuple[int, str, str]:
    """``hpc-tf ARGS`` in this process: (exit code, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HPC_TF_")}
    environ.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), USER="alice")
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with mock.patch.object(sys, "argv", ["hpc-tf", *args]), mock.patch.dict(os.environ, environ, clear=True), \
            redirect_stdout(out), redirect_stderr(err):
        try:
            main()
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except BaseException:  # what a user would see as a traceback
            raise AssertionError(f"hpc-tf {args} ended in a traceback:\n{traceback.format_exc()}") from None
    return code, out.getvalue(), err.getvalue()


def check_error(code: int, out: str, err: str, sources: list[Path]) -> None:
    assert code != 0 and out == "", (code, out, err)
    assert "Traceback" not in err, err
    assert err.endswith("\n"), repr(err)
    first, *rest = err[:-1].split("\n")
    assert first.startswith("hpc-tf: error: ") and len(first) > len("hpc-tf: error: "), repr(err)
    for line in rest:
        assert line.startswith(tuple(f"{s}:" for s in sources)) or line.startswith("hint: "), repr(err)
    for line in (first, *rest):
        assert forbidden_character(line) is None, f"unescaped {forbidden_character(line)} in {line!r}"


def render(spec_text: str | bytes, tmp: Path, site: dict[str, Any] | None = None) -> tuple[int, str, str, list[Path]]:
    spec = tmp / "job.yaml"
    spec.write_bytes(spec_text if isinstance(spec_text, bytes) else spec_text.encode("utf-8", "surrogatepass"))
    site_path = tmp / "site.yaml"
    site_path.write_text(yaml.safe_dump({"name": "fuzz", "launcher": "local", **(site or {})}))
    code, out, err = run_cli(["render", str(spec), "--site", str(site_path)], tmp)
    return code, out, err, [spec, site_path]


def bash(script: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["bash", "-c", script], input=b"", capture_output=True, env={}, timeout=20, check=False)


def check_script(script: str, spec: dict[str, Any], site: dict[str, Any]) -> None:
    syntax = subprocess.run(["bash", "-n"], input=script.encode(), capture_output=True, timeout=20, check=False)
    assert syntax.returncode == 0, syntax.stderr.decode(errors="replace")
    lines = script.split("\n")
    options = read_directives(script)
    intended: dict[str, str | None] = {"job-name": spec["name"]}
    for key in ("constraint", "account", "qos"):
        value = spec.get("resources", {}).get(key) or site.get(key)
        if value:
            intended[key] = value
    for flag in spec.get("sbatch_extra", []):
        name, sep, value = flag.removeprefix("--").partition("=")
        intended[name] = value if sep else None
    assert {k: options.get(k) for k in intended} == intended
    assert set(options) <= MANAGED | set(intended), f"unexpected #SBATCH options: {set(options) - MANAGED}"
    assert str(options["output"]).startswith(f"{spec['_runs']}/"), options["output"]
    # the environment and the command, as bash sees them
    env = spec.get("env", {})
    exports = [line for line in lines if line.startswith("export ") and not line.startswith("export HPC_TF_")]
    assert len(exports) == len(env)
    if env:
        probe = "\n".join(exports) + "\nprintf '%s\\0' " + " ".join(f'"${{{key}}}"' for key in sorted(env))
        seen = bash(probe)
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout.decode("utf-8", "surrogateescape").split("\0")[:-1] == [env[k] for k in sorted(env)]
    # the line after the bootstrap's (the last with --resolved: the batch driver's comes first)
    command_line = lines[max(i for i, line in enumerate(lines) if "--resolved " in line) + 1]
    words = bash("printf '%s\\0' " + command_line.strip().removesuffix("&"))
    assert words.stdout.decode("utf-8", "surrogateescape").split("\0")[:-1] == list(spec["_command"])


# ---- (a) random bytes, and random YAML of any shape ---------------------------------------------

VALID = b"name: a\ncommand: python3 train.py --lr 0.1\nenv: {A: '1'}\nresources: {time: '10:00'}\n"
FIELDS = ["name", "command", "env", "resources", "nodes", "gpus_per_node", "time", "mem", "constraint", "environment",
          "modules", "container", "image", "binds", "handoff", "model", "sbatch_extra", "tf", "port_range"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
shapes = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)), inner,
                                                 max_size=4)), max_leaves=12)


@SETTINGS
@given(st.one_of(
    st.binary(max_size=400),
    st.builds(lambda cut, junk: VALID[:cut] + junk + VALID[cut:], st.integers(0, len(VALID)), st.binary(max_size=8)),
    st.builds(lambda data: yaml.safe_dump(data, allow_unicode=True).encode("utf-8", "surrogatepass"), shapes),
))
# found by this test: a non-UTF-8 byte, a NUL, a plain '.' (read as a float), a control character in a key
@example(b"\x80")
@example(b"\x00")
@example(b"name: .\n")
@example(b'name: a\ncommand: x\n"\\x1f": 1\n')
@example(b'name: a\ncommand: x\nenv: {"\\x1b[31m": "\\x01"}\n')
@example(b'name: a\ncommand: x\nsbatch_extra: ["\\t"]\n')
def test_random_bytes_and_yaml_give_a_script_or_one_line_per_problem(tmp_path: Path, data: bytes) -> None:
    code, out, err, sources = render(data, tmp_path)
    if code == 0:
        subprocess.run(["bash", "-n"], input=out.encode(), check=True, timeout=20)
    else:
        check_error(code, out, err, sources)


# ---- (b) random YAML documents built from the spec's fields, with hostile text --------------------

# printable text that must reach bash and sbatch intact; text with what must be refused; plain names
tricky = st.text(alphabet=st.one_of(st.sampled_from(" '\"`$()\\#%;&|<>*?~{}[],:=!-/.\u200b\ufeff"),
                                    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"))),
                 min_size=1, max_size=12)
hostile = st.text(alphabet=st.one_of(st.sampled_from(SPECIALS), st.characters(codec="utf-8")), max_size=12)
plain = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,10}", fullmatch=True)
text = st.one_of(tricky, tricky, plain, hostile, st.builds(lambda a, b: a + b, plain, hostile))
name = st.one_of(plain, plain, plain, text)


def optional(draw: st.DrawFn, strategy: st.SearchStrategy[Any]) -> Any:
    """A third of the time a value, else nothing (the key is left out)."""
    return draw(strategy) if draw(st.integers(0, 2)) == 0 else None


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    """A job spec; half of them with only values that are valid where they are (but printable text as
    hostile to quoting as it gets), so that many render and are read back."""
    valid = draw(st.booleans())
    free = st.one_of(tricky, plain) if valid else text
    names = plain if valid else name
    env_key = st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True) if valid else st.one_of(plain, name)
    spec: dict[str, Any] = {
        "name": draw(names), "command": draw(st.one_of(st.lists(free, min_size=1, max_size=4), free)),
        "env": optional(draw, st.dictionaries(env_key, free, max_size=3)),
        "workdir": optional(draw, free), "output_dir": optional(draw, free),
        "resources": {"constraint": optional(draw, free), "account": optional(draw, names),
                      "qos": optional(draw, names),
                      "time": optional(draw, st.just("10:00") if valid else text),
                      "mem": optional(draw, st.just("1G") if valid else text)},
        "environment": {draw(st.sampled_from(["venv", "conda"])): optional(draw, free),
                        "python": optional(draw, free), "modules": optional(draw, st.lists(names, max_size=2))},
        "sbatch_extra": optional(draw, st.lists(st.one_of(
            st.sampled_from(EXTRA_OPTIONS), st.builds(lambda o, v: f"{o}={v}", st.sampled_from(EXTRA_OPTIONS), free),
            *([] if valid else [hostile])), max_size=2)),
    }
    return _present(spec)


def _present(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the keys left out, and without sections left empty."""
    out = {}
    for key, value in data.items():
        value = _present(value) if isinstance(value, dict) and key != "env" else value
        if value is not None and value != {}:
            out[key] = value
    return out


sites = st.fixed_dictionaries({}, optional={
    "python": st.one_of(tricky, text), "modules": st.lists(name, max_size=2), "module_init": st.one_of(tricky, text),
    "account": name, "qos": name, "description": st.one_of(tricky, text),
})


@SETTINGS
@given(specs(), sites, st.booleans())
# found by this test: a control character echoed from sbatch_extra
@example({"name": "a", "command": ["x"], "sbatch_extra": ["\x1f"]}, {}, False)
@example({"name": "a", "command": ["x"], "sbatch_extra": ["--comment=a\u2028#SBATCH --output=/x"]}, {}, False)
def test_random_field_values_give_an_exact_script_or_one_line_per_problem(
    tmp_path: Path, spec: dict[str, Any], site: dict[str, Any], unicode: bool
) -> None:
    document = yaml.safe_dump(spec, allow_unicode=unicode)
    assume(yaml.safe_load(document) == spec)  # PyYAML's own round trip, not ours to test
    code, out, err, sources = render(document, tmp_path, site)
    event("rendered" if code == 0 else "refused")
    if code != 0:
        check_error(code, out, err, sources)
        return
    command = spec["command"]
    words = shlex.split(command) if isinstance(command, str) else command
    check_script(out, {**spec, "_command": words, "_runs": f"{tmp_path}/hpc-tf-runs"}, site)
