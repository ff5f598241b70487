"""``hpc-tf import``: an existing sbatch script into a job.yaml draft.

Every ``#SBATCH`` option goes to its field (or ``sbatch_extra``), the shell around the training command
to ``environment``, ``env`` and ``setup``, the ``srun … python …`` line to ``command`` and
``srun_extra``. What has no place is kept as a ``# hpc-tf import:`` note in the draft and listed by
the caller. The draft holds only what the spec accepts: a refused field becomes a note too.
"""

from __future__ import annotations

from pathlib import Path

from hpc.atomic import write_text_atomic
from hpc.errors import HpcTfError
from hpc.importer.body import read_body
from hpc.importer.directives import header_lines, job_name, read_header
from hpc.importer.draft import Draft, Note, fit_to_spec
from hpc.importer.shell import logical_lines
from hpc.records import MIB, NotText, read_text
from hpc.text import shown

__all__ = ["Draft", "Note", "draft_from_script", "import_script", "read_script"]


def draft_from_script(text: str, source: str) -> Draft:
    """The draft of the batch script ``text`` (read from ``source``, for notes), fitted to the spec."""
    draft = read_script(text, source)
    _gpu_binding_hint(draft)
    fit_to_spec(draft)
    return draft


def read_script(text: str, source: str) -> Draft:
    """Every line of the script where the spec places it, before the fit to the spec (which turns what it
    refuses into notes)."""
    draft = Draft(source)
    header, body = header_lines(logical_lines(text))
    if not header and not body:
        raise HpcTfError(f"{shown(source)} holds no #SBATCH line and no command: is it a batch script?")
    seen = read_header(draft, header)
    draft.fields.setdefault("name", job_name(Path(source).stem))
    read_body(draft, body, seen)
    return draft


def _gpu_binding_hint(draft: Draft) -> None:
    """Several GPU tasks per node: the script may pick its GPU by local rank, which the default per-task
    slice breaks (each task sees only its own GPU:0); nothing in a batch script says so."""
    resources = draft.fields.get("resources", {})
    gpus = resources.get("gpus_per_node") or resources.get("gpus_per_task")
    if gpus and resources.get("tasks_per_node", 1) > 1 and "gpu_binding" not in resources:
        draft.hints.append("each task sees only its own GPUs, as GPU:0..: if the script picks its GPU by local "
                           "rank (Horovod's hvd.local_rank(), DDP's LOCAL_RANK), set resources.gpu_binding: node")


def import_script(script: Path, output: Path) -> Draft:
    """Write the draft of ``script`` to ``output`` (a new file, never a half-written one)."""
    if output.exists():
        raise HpcTfError(f"{shown(str(output))} exists: choose another file with -o, or remove it first")
    try:
        text = read_text(script, MIB)
    except NotText as err:
        raise HpcTfError(f"{shown(str(script))}: {err}: {err.fix}") from None
    draft = draft_from_script(text, script.name)
    try:
        write_text_atomic(output, draft.yaml_text(script.name), replace=False)
    except FileExistsError:
        raise HpcTfError(f"{shown(str(output))} appeared while importing: nothing written") from None
    return draft

