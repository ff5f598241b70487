"""Every command's --help, as a researcher reads it: one summary line per command, no cut-off text,
every option explained, no type tags on plain flags."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from hpc.cli import app

COMMANDS = [
    [], ["launch"], ["render"], ["import"], ["status"], ["logs"], ["cancel"], ["metrics"], ["quota"], ["usage"],
    ["node-env"],
    ["handoff"],
    ["config"], ["config", "show"], ["site"], ["site", "add"],
    ["campaign"], ["campaign", "run"], ["campaign", "status"], ["campaign", "results"], ["campaign", "resubmit"],
    ["campaign", "cancel"], ["campaign", "plot"], ["campaign", "report"],
    ["serve"], ["serve", "up"], ["serve", "down"], ["serve", "status"], ["serve", "predict"], ["serve", "router"],
    ["serve", "split"], ["serve", "scale"], ["serve", "canary"], ["serve", "bench"],
]


def help_text(argv: list[str]) -> str:
    result = CliRunner().invoke(app, [*argv, "--help"], prog_name="hpc-tf", env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.output


def listed_commands(text: str) -> dict[str, str]:
    section = text.partition("\nCommands:\n")[2]
    return dict(re.findall(r"^  (\S+)\s+(.+)$", section, re.MULTILINE))


def test_every_group_lists_all_its_commands_with_a_whole_summary() -> None:
    for argv in COMMANDS:
        text = help_text(argv)
        listed = listed_commands(text)
        subcommands = {c[len(argv)] for c in COMMANDS if len(c) == len(argv) + 1 and c[:len(argv)] == argv}
        assert set(listed) == subcommands, (argv, listed)
        for name, summary in listed.items():
            assert not summary.endswith("..."), f"'{' '.join([*argv, name])}' summary is cut off: {summary}"


@pytest.mark.parametrize("argv", [c for c in COMMANDS if c], ids=" ".join)
def test_every_option_is_explained_and_flags_carry_no_type_tag(argv: list[str]) -> None:
    text = help_text(argv)
    usage, _, rest = text.partition("\n\n")
    assert usage.startswith(f"Usage: hpc-tf {' '.join(argv)} ")
    assert rest.strip().split("\n")[0].strip(), "no description"
    options = rest.partition("\nOptions:\n")[2].partition("\nCommands:\n")[0]
    entries = re.split(r"\n(?=  -)", "\n" + options)
    for entry in (e.strip() for e in entries if e.strip()):
        option = entry.split()[0]
        assert "<bool>" not in entry, entry
        assert len(entry.split("  ")) > 1 or "\n" in entry, f"{' '.join(argv)} {option} has no help text"
