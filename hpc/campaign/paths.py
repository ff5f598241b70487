"""The one owner of file names inside a campaign directory::

    <campaign_dir>/
      campaign.yaml             the campaign file as submitted
      manifest.json             every task: parameters, job ids, states, exit codes, output dirs
      tasks/<id>/task.json      what an array task passes to its command (arguments, environment)
      tasks/<id>/<stage>/       that task's output in that stage ($HPC_TF_OUTPUT_DIR)
      tasks/<id>/<stage>/metrics.jsonl  what that task's training logged (the stage's run dir is shared)
      stages/<stage>/           a run directory (hpc.paths.RunPaths): resolved.json, runtime/, logs/
      stages/<stage>/submit-001.sbatch   each script exactly as submitted (one per array chunk or resubmission)
      plots/*.png               hpc-tf campaign plot's default output
      report.html               hpc-tf campaign report's default output
"""

from __future__ import annotations

from pathlib import Path

from hpc.paths import Layout, RunPaths, Under

MANIFEST = "manifest.json"
TASK_FILE = "task.json"
TASK_SHIM = "campaign_task.py"


class CampaignPaths(Layout):
    manifest = Under(MANIFEST)
    lock = Under(".manifest.lock")
    source_copy = Under("campaign.yaml")
    tasks_dir = Under("tasks")
    stages_dir = Under("stages")
    plots_dir = Under("plots")
    report = Under("report.html")

    def task_dir(self, task_id: int) -> Path:
        return self.tasks_dir / str(task_id)

    def task_file(self, task_id: int) -> Path:
        return self.task_dir(task_id) / TASK_FILE

    def task_output(self, task_id: int, stage: str) -> Path:
        return self.task_dir(task_id) / stage

    def task_metrics(self, task_id: int, stage: str) -> Path:
        """Named as in a run directory; the stage's run directory is shared by all its tasks."""
        return RunPaths.at(self.task_output(task_id, stage)).metrics

    def stage(self, name: str) -> RunPaths:
        return RunPaths.at(self.stages_dir / name)

    def task_shim(self, stage: str) -> Path:
        """The stdlib-only program an array task starts through (hpc/campaign/node_task.py)."""
        return self.stage(stage).runtime_dir / TASK_SHIM

    def submission_script(self, stage: str, number: int) -> Path:
        return self.stage(stage).root / f"submit-{number:03d}.sbatch"
