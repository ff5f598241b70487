"""campaign.yaml: a base job, the parameters to sweep, and optionally a pipeline of stages.

It knows nothing of Slurm: stages say what they wait for (``afterok``, ``afterany``, ``aftercorr``)
in words the scheduler module turns into flags.

    name: lr-sweep
    job: job.yaml                       # the base job: a job.yaml path, or an inline job spec
    parameters:
      grid: {lr: [0.1, 0.01, 0.001], seed: [1, 2, 3, 4]}
    args: ["--lr={lr}", "--seed={seed}"]   # appended to each task's command (default: --name value)
    env: {RUN_NAME: "lr{lr}-s{seed}"}   # per task; $HPC_TF_PARAM_LR, $HPC_TF_TASK_ID … are always set
    stages:                             # optional; default: one array stage 'main' running the job
      - name: preprocess
        job: preprocess.yaml            # its own job (else the base job; command/resources override it)
      - name: train
        after: {preprocess: aftercorr}  # task N waits for its own preprocessing task N
      - name: evaluate
        per_task: false                 # one job, not an array
        command: python3 evaluate.py
        resources: {partition: cpu, gpus_per_node: 0}
        env: {RESULTS: "{campaign_dir}/tasks"}
        after: {train: afterany}

Templates use ``{name}`` for a parameter and ``{task_id}``, ``{task_dir}``, ``{output_dir}`` (this
task's directory for this stage) and ``{campaign_dir}``; a single-job stage's env only the last two.
"""

from __future__ import annotations

import builtins
import re
import string
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from hpc.modelbase import StrictModel
from hpc.spec.model import Command, EnvVars, Resources
from hpc.text import ONE_LINE_IF_TEXT, RunTimeText, matching, named, shown, submit_time

# a parameter value: substituted into arguments and env values of the tasks' scripts
Value = Annotated[bool | int | float | str, ONE_LINE_IF_TEXT]


def _job_path(value: object) -> object:
    return submit_time(value) if isinstance(value, str) else value


# a job: a job.yaml path (hpc-tf reads it: submit-time text, ~ and $VAR expanded here), or a spec written inline
JobRef = Annotated[str | dict[str, Any] | None, AfterValidator(_job_path)]
DependencyType = Literal["afterok", "afterany", "aftercorr"]
# names matched as whole strings (hpc.text.named): they become variable names, directories, job names
PARAM_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
PARAM_NAME_RULE = "a parameter name has up to 64 letters, digits and '_' and does not start with a digit"
STAGE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
CAMPAIGN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}")
StageName = Annotated[str, matching(STAGE_NAME_RE, "a stage name has up to 32 letters, digits, '_', '-'")]
CampaignName = Annotated[str, matching(
    CAMPAIGN_NAME_RE, "a campaign name has up to 48 letters, digits, '_', '.', '-' and starts with a letter or digit")]
# placeholders every argument/env template may use besides the parameters
BUILTIN_FIELDS = ("task_id", "task_dir", "output_dir", "campaign_dir")
SINGLE_JOB_FIELDS = ("campaign_dir", "output_dir")  # what a per_task: false stage's env may use
DEFAULT_STAGE = "main"


def template_fields(template: str) -> list[str]:
    """The ``{name}`` placeholders of an argument template (``{{``/``}}`` are literal braces)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"{shown(template)} is not a valid template ({err}); write literal braces as {{{{ and }}}}"
                         ) from None
    names = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if PARAM_NAME_RE.fullmatch(field) is None or spec or conversion:
            raise ValueError(f"{shown(f'{{{field}}}')} in {shown(template)}: use plain {{name}} placeholders "
                             "(no indexing, attributes or format specs)")
        names.append(field)
    return names


def _check_values(name: str, values: builtins.list[Value]) -> None:
    if not values:
        raise ValueError(f"parameter '{name}' needs at least one value")


def _check_name(name: str) -> None:
    named(name, PARAM_NAME_RE, PARAM_NAME_RULE)
    if name in BUILTIN_FIELDS:
        raise ValueError(f"'{name}' is reserved for hpc-tf ({', '.join(BUILTIN_FIELDS)})")


class Distribution(StrictModel):
    """One random dimension: exactly one of the keys."""

    uniform: tuple[float, float] | None = None
    log_uniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = Field(None, description="an integer in [low, high], both included")
    choice: builtins.list[Value] | None = None

    @model_validator(mode="after")
    def _one(self) -> Distribution:
        given = [k for k in ("uniform", "log_uniform", "randint", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform, log_uniform, randint, choice")
        for key in ("uniform", "log_uniform", "randint"):
            bounds = getattr(self, key)
            if bounds is not None and not bounds[0] <= bounds[1]:
                raise ValueError(f"{key}: [low, high] needs low <= high")
        if self.log_uniform is not None and self.log_uniform[0] <= 0:
            raise ValueError("log_uniform bounds must be > 0")
        if self.choice is not None:
            _check_values("choice", self.choice)
        return self


class RandomSamples(StrictModel):
    samples: int = Field(ge=1, le=1_000_000)
    seed: int = Field(0, description="the same seed draws the same samples")
    space: dict[str, Distribution]

    @field_validator("space")
    @classmethod
    def _space(cls, value: dict[str, Distribution]) -> dict[str, Distribution]:
        if not value:
            raise ValueError("name at least one parameter to sample")
        for name in value:
            _check_name(name)
        return value


class Parameters(StrictModel):
    """Blocks combine as a product in this order: list x zip x grid x random (each may be omitted)."""

    list: builtins.list[dict[str, Value]] | None = Field(None, description="explicit combinations")
    zip: dict[str, builtins.list[Value]] | None = Field(None, description="lists of equal length, taken together")
    grid: dict[str, builtins.list[Value]] | None = Field(None, description="every combination")
    random: RandomSamples | None = None

    @field_validator("zip", "grid")
    @classmethod
    def _lists(cls, value: dict[str, builtins.list[Value]] | None) -> dict[str, builtins.list[Value]] | None:
        for name, values in (value or {}).items():
            _check_name(name)
            _check_values(name, values)
        return value

    @field_validator("zip")
    @classmethod
    def _same_length(cls, value: dict[str, builtins.list[Value]] | None) -> dict[str, builtins.list[Value]] | None:
        lengths = {name: len(values) for name, values in (value or {}).items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"zip lists must have the same length, got {lengths}")
        return value

    @field_validator("list")
    @classmethod
    def _list(cls, value: builtins.list[dict[str, Value]] | None) -> builtins.list[dict[str, Value]] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one combination")
        keys = set(value[0])
        for index, combo in enumerate(value):
            for name, item in combo.items():
                _check_name(name)
                _check_values(name, [item])
            if set(combo) != keys:
                raise ValueError(f"combination {index} has keys {sorted(combo)}, the first has {sorted(keys)}")
        return value

    @model_validator(mode="after")
    def _blocks(self) -> Parameters:
        seen: dict[str, str] = {}
        for block, names in (("list", self.list[0] if self.list else {}), ("zip", self.zip or {}),
                             ("grid", self.grid or {}), ("random", self.random.space if self.random else {})):
            for name in names:
                if name in seen:
                    raise ValueError(f"parameter '{name}' is in both {seen[name]} and {block}")
                seen[name] = block
        return self

    @property
    def names(self) -> builtins.list[str]:
        """Every parameter name, in the order tasks list them."""
        out: builtins.list[str] = []
        for names in (self.list[0] if self.list else {}, self.zip or {}, self.grid or {},
                      self.random.space if self.random else {}):
            out.extend(names)
        return out


def _check_templates(values: builtins.list[str] | dict[str, str] | None) -> None:
    for template in (values.values() if isinstance(values, dict) else values or []):
        if "${" in template:  # run-time text (hpc.text), but {...} is a placeholder here and tasks get no shell
            raise ValueError(f"{shown(template)}: ${{...}} is not expanded in a campaign's templates: set the variable "
                             "in the job's env (job.yaml), which the batch script expands, or write $$ for a literal $")
        template_fields(template)


def _known_fields(where: str, templates: builtins.list[str], info: ValidationInfo) -> None:
    """Every placeholder names a parameter (validated before: 'parameters' comes first) or a built-in."""
    parameters = info.data.get("parameters")
    known = set(parameters.names if isinstance(parameters, Parameters) else ()) | set(BUILTIN_FIELDS)
    for template in templates:
        unknown = [f for f in template_fields(template) if f not in known]
        if unknown:
            prefix = f"{where}: " if where else ""
            raise ValueError(f"{prefix}'{{{unknown[0]}}}' is not a parameter; placeholders: {', '.join(sorted(known))}")


def _check_env(value: dict[str, str]) -> dict[str, str]:
    _check_templates(value)
    return value


class Stage(StrictModel):
    name: StageName
    job: JobRef = Field(None, description="this stage's job: a job.yaml path or inline spec")
    command: Command | None = Field(None, description="replaces the job's command")
    resources: Resources | None = Field(None, description="keys given here replace the job's")
    env: EnvVars = Field(default_factory=dict, description="environment templates (per task)")
    per_task: bool = Field(True, description="an array with one task per parameter combination, or one job")
    after: dict[str, DependencyType | None] = Field(
        default_factory=dict, description="stages this one waits for; type defaults to aftercorr between arrays"
    )
    args: builtins.list[RunTimeText] | None = Field(None, description="argument templates (default: the campaign's)")
    throttle: int | None = Field(None, ge=1, description="tasks running at once (default: from the GPU quota)")

    @field_validator("after", mode="before")
    @classmethod
    def _after_list(cls, value: object) -> object:
        return dict.fromkeys(value) if isinstance(value, builtins.list) else value

    _env = field_validator("env")(_check_env)

    @field_validator("args")
    @classmethod
    def _args(cls, value: builtins.list[str] | None) -> builtins.list[str] | None:
        _check_templates(value)
        return value


class CampaignSpec(StrictModel):
    name: CampaignName
    job: JobRef = Field(None, description="the base job: a job.yaml path or inline spec")
    parameters: Parameters | None = Field(None, description="none: one task")
    args: builtins.list[RunTimeText] | None = Field(
        None, description="argument templates appended to array tasks' commands; default --name value per parameter"
    )
    env: EnvVars = Field(default_factory=dict, description="environment templates for every task")
    throttle: int | None = Field(None, ge=1, description="default for every array stage")
    stages: builtins.list[Stage] | None = None

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        _check_env(value)
        _known_fields("", builtins.list(value.values()), info)
        return value

    @field_validator("args")
    @classmethod
    def _args(cls, value: builtins.list[str] | None, info: ValidationInfo) -> builtins.list[str] | None:
        _check_templates(value)
        _known_fields("", value or [], info)
        return value

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: builtins.list[Stage] | None, info: ValidationInfo) -> builtins.list[Stage] | None:
        if value is None:
            return None
        for stage in value:
            if stage.per_task:
                _known_fields(f"stage '{stage.name}' args", stage.args or [], info)
                _known_fields(f"stage '{stage.name}' env", builtins.list(stage.env.values()), info)
                continue
            if stage.args is not None:
                raise ValueError(f"stage '{stage.name}' runs one job (per_task: false): it has no task arguments; "
                                 "put them in its command")
            for template in stage.env.values():
                unknown = [f for f in template_fields(template) if f not in SINGLE_JOB_FIELDS]
                if unknown:
                    raise ValueError(f"stage '{stage.name}' runs one job: its env may use "
                                     f"{{{'}, {'.join(SINGLE_JOB_FIELDS)}}}, not '{{{unknown[0]}}}'")
        if not value:
            raise ValueError("give at least one stage, or leave 'stages' out")
        seen: dict[str, Stage] = {}
        for stage in value:
            if stage.name in seen:
                raise ValueError(f"two stages are named '{stage.name}'")
            for upstream, kind in stage.after.items():
                if upstream not in seen:
                    later = any(s.name == upstream for s in value)
                    raise ValueError(
                        f"stage '{stage.name}' waits for {shown(upstream)}, "
                        + ("which comes later: list stages in the order they run" if later
                           else f"which is not a stage; stages: {', '.join(s.name for s in value)}")
                    )
                if kind == "aftercorr" and not (stage.per_task and seen[upstream].per_task):
                    raise ValueError(f"stage '{stage.name}': aftercorr pairs task N with task N, so both "
                                     f"'{stage.name}' and '{upstream}' must be per_task")
            seen[stage.name] = stage
        return value

    @model_validator(mode="after")
    def _has_job(self) -> CampaignSpec:
        if self.job is None and any(s.job is None for s in self.stages or [Stage(name=DEFAULT_STAGE)]):
            raise ValueError("set 'job' (the base job), or a 'job' in every stage")
        return self

    @property
    def stage_list(self) -> builtins.list[Stage]:
        """The stages; a campaign without any runs its job as one array stage named 'main'."""
        return self.stages or [Stage(name=DEFAULT_STAGE)]

    def dependencies(self, stage: Stage) -> builtins.list[tuple[str, DependencyType]]:
        """(upstream stage, type) with defaults filled in: aftercorr between arrays, else afterok."""
        per_task = {s.name: s.per_task for s in self.stage_list}
        return [(up, kind or ("aftercorr" if stage.per_task and per_task[up] else "afterok"))
                for up, kind in stage.after.items()]
