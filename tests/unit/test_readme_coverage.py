"""Every fenced block of README.md is run (or, for output, code and specs, used) by a named test.

``COMMANDS`` maps each command a README block shows to the tests that run it (they take its text from
README.md through tests/_readme.py, so the test file holds that text); ``BLOCKS`` maps each block that
is not commands (an output, a spec, the Python example) by its first line. A README block or command
that is in neither fails here: add a test that runs it, and its entry. The two commands that install
packages and start the test cluster are covered by CI itself or say which tests run their steps.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests._readme import Block, blocks, commands

TESTS = Path(__file__).resolve().parents[1]
SLURM = "integration/test_readme_slurm.py::"
LOCAL = "integration/test_readme_local.py::"
CAMPAIGN = ("integration/test_campaign_slurm.py::"
            "test_the_readme_campaign_plans_what_it_submits_and_trains_every_grid_point")
LOCAL_CAMPAIGN = LOCAL + "test_the_readme_campaign_runs_on_the_local_default_and_names_the_best"
HANDOFF = ("integration/test_handoff_slurm.py::"
           "test_training_then_dependent_handoff_to_a_serving_node_job_on_the_cpu_node")
PYTHON = SLURM + "test_the_python_example_trains_on_two_nodes_and_prints_rank_0s_result"
TYPO = LOCAL + "test_a_misspelt_key_is_refused_as_the_readme_shows"
PREEMPTION = LOCAL + "test_the_preemption_block_renders_the_warning_and_the_requeue"
ON_YOUR_CLUSTER = SLURM + "test_on_your_cluster_launch_status_logs_cancel_config"
QUICKSTART = "integration/test_quickstart_local.py::test_the_first_command_ends_with_a_prediction_served_by_triton"
IMPORT = "unit/test_import.py::test_the_readme_import_command_drafts_a_job_that_renders"
RESULTS = "unit/test_campaign_results.py::"
PLOTS = "unit/test_campaign_plot.py::"
USAGE_LOCAL = "unit/test_usage.py::test_the_readme_usage_commands_on_the_local_launcher"
USAGE_SLURM = "integration/test_usage_slurm.py::test_usage_equals_sacct_allocated_gpus_times_elapsed"
CI = "CI: "  # covered by CI itself, not by a test: the reason follows

COMMANDS: dict[str, tuple[str, ...]] = {
    "hpc-tf launch job.yaml": (ON_YOUR_CLUSTER, TYPO),
    "examples/quickstart/run": (QUICKSTART,),
    "sudo examples/quickstart/run-on-sandbox": (
        CI + "tests/run installs and starts the test cluster (the script's first two steps) before pytest; its "
             "steps as the cluster user (serve up, launch job.yaml --wait, status, logs --task 0, serve predict) "
             "and the output the README shows are run and checked by " + HANDOFF,
        HANDOFF),
    "sudo tests/run": (CI + ".ci/run is tests/run: every CI run runs this command, as root, on a clean clone",),
    "cp site_configs/example-plain.yaml mycluster.yaml": (ON_YOUR_CLUSTER,),
    "hpc-tf site add mycluster.yaml --default": (ON_YOUR_CLUSTER,),
    "hpc-tf launch job.yaml --dry-run": (ON_YOUR_CLUSTER, PREEMPTION),
    "hpc-tf import train.sbatch -o job.yaml": (IMPORT,),
    "hpc-tf status --all": (ON_YOUR_CLUSTER,),
    "hpc-tf logs JOBID --task 0 -f": (ON_YOUR_CLUSTER,),
    "hpc-tf cancel JOBID": (ON_YOUR_CLUSTER,),
    "hpc-tf config show": (ON_YOUR_CLUSTER,),
    "hpc-tf campaign run examples/quickstart/campaign.yaml": (CAMPAIGN, LOCAL_CAMPAIGN),
    "hpc-tf campaign status DIR": (CAMPAIGN, LOCAL_CAMPAIGN),
    "hpc-tf campaign resubmit DIR --failed": (CAMPAIGN,),
    "hpc-tf campaign cancel DIR": (CAMPAIGN,),
    "hpc-tf campaign results DIR": (RESULTS + "test_the_readme_results_command_prints_the_table_and_names_the_best",
                                    LOCAL_CAMPAIGN),
    "hpc-tf campaign results DIR --metric loss --mode min --csv": (
        RESULTS + "test_csv_has_one_line_per_task_with_its_parameters_as_columns",),
    "hpc-tf metrics RUN_DIR": (RESULTS + "test_the_readme_metrics_command_shows_one_tasks_epochs",),
    "hpc-tf status JOBID": (
        "integration/test_watch_local.py::test_status_of_a_running_job_shows_its_epoch_loss_and_time_per_epoch",),
    "hpc-tf campaign status DIR --watch": (
        "integration/test_watch_campaign_local.py::"
        "test_watch_in_a_pipe_prints_each_epoch_of_each_task_and_ends_with_the_campaign",
        "integration/test_watch_campaign_local.py::"
        "test_watch_on_a_terminal_draws_bars_and_ctrl_c_leaves_the_campaign_running",
        "integration/test_watch_slurm.py::"
        "test_watch_in_a_pipe_prints_each_epoch_of_each_task_and_ends_with_the_campaign",
        "integration/test_watch_slurm.py::"
        "test_watch_on_a_terminal_redraws_a_live_view_with_bars_and_ctrl_c_leaves_the_campaign_running"),
    "hpc-tf campaign plot DIR": (PLOTS + "test_the_readme_plot_command_writes_the_three_pngs",),
    "hpc-tf campaign report DIR": (
        PLOTS + "test_the_readme_report_command_writes_one_html_with_every_task_and_the_plots",
        "integration/test_report_browser.py::test_the_report_opens_in_headless_chromium_with_its_table_and_images"),
    "hpc-tf metrics RUN_DIR --plot": (PLOTS + "test_the_readme_metrics_plot_command_draws_one_runs_curves",),
    "hpc-tf usage": (USAGE_LOCAL,),
    "hpc-tf usage --since 7d --by campaign": (USAGE_LOCAL, USAGE_SLURM),
    "hpc-tf serve up": (HANDOFF,),
    "hpc-tf handoff RUN_DIR --model resnet": (HANDOFF,),
    "hpc-tf serve status": (HANDOFF,),
    "hpc-tf serve predict resnet": (HANDOFF,),
}

BLOCKS: dict[str, tuple[str, ...]] = {
    "[3/5] train on 2 local workers, export, hand off to Triton: hpc-tf launch job.yaml --wait   "
    "(in /tmp/hpc-tf-quickstart.Xq3m)": (QUICKSTART,),
    "GPU quota: 2 nodes × 2 GPUs for 10 min fits (account lab: 4 of 4 GPUs free)": (HANDOFF,),
    "name: resnet": (ON_YOUR_CLUSTER, TYPO),
    "hpc-tf: error: job.yaml:6: resources.gpu_per_node: unknown key (did you mean 'gpus_per_node'?); "
    "allowed here: …": (TYPO,),
    "from hpc import submit_function": (PYTHON,),
    "preemption: {enabled: true, warning_seconds: 300, max_restarts: 3}": (PREEMPTION,),
    "environment: {module_purge: true, module_use: [~/modulefiles], modules: [gcc/12, cuda/12.2]}": (
        LOCAL + "test_the_before_the_tasks_block_renders_modules_setup_steps_and_srun_options",),
}


def uncovered(readme_blocks: list[Block]) -> list[str]:
    """README blocks and commands no entry covers, as ``README.md:LINE: …``."""
    problems = []
    for b in readme_blocks:
        if b.first in BLOCKS:
            continue
        for line, text in commands(b):
            if text not in COMMANDS:
                problems.append(f"README.md:{line}: {text!r} is run by no test (tests/unit/test_readme_coverage.py)")
    return problems


def test_every_block_and_command_of_the_readme_is_covered() -> None:
    problems = uncovered(blocks())
    assert not problems, "\n".join(problems)


def test_a_new_command_block_is_caught() -> None:
    extra = blocks("```\nhpc-tf launch job.yaml\nhpc-tf frobnicate --all   # new\n```\n")
    assert uncovered(extra) == ["README.md:3: 'hpc-tf frobnicate --all' is run by no test "
                                "(tests/unit/test_readme_coverage.py)"]


def test_every_entry_is_still_in_the_readme() -> None:
    shown = {b.first for b in blocks()} | {text for b in blocks() if b.first not in BLOCKS for _, text in commands(b)}
    stale = sorted((set(COMMANDS) | set(BLOCKS)) - shown)
    assert not stale, f"entries for what README.md no longer shows: {stale}"


def test_every_named_test_exists_and_takes_its_text_from_the_readme() -> None:
    for key, runners in {**COMMANDS, **BLOCKS}.items():
        assert runners, f"{key!r}: nothing covers it"
        for runner in (r for r in runners if not r.startswith(CI)):
            path, name = runner.split("::")
            tree = ast.parse((TESTS / path).read_text(encoding="utf-8"))
            assert any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body), \
                f"{runner}: no such test"
            texts = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                     and isinstance(node.value, str)]
            assert any(key in text for text in texts), f"{runner} does not hold the README text {key!r}"


def test_the_tests_section_names_the_slurm_versions_ci_runs() -> None:
    run = (TESTS / "run").read_text(encoding="utf-8")
    default = re.search(r'HPC_TF_SLURM_VERSIONS:-([^}"]+)', run)
    assert default, "tests/run no longer says which Slurm versions it runs"
    readme = (TESTS.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## Tests"):readme.index("\n## Design")]
    said = re.search(r"Slurm versions: (.*?)\. [A-Z]", " ".join(section.split()))  # its first sentence
    assert said, "README.md's Tests section does not say which Slurm versions are tested"
    for version in default.group(1).split():
        assert f"Slurm {version}" in said.group(1), f"README.md's Tests section does not name Slurm {version}"
