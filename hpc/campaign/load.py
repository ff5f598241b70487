"""Read campaign.yaml, and build each stage's job spec from the base job plus the stage's overrides.

Every error names the file and line the value came from: a stage's ``resources.partition``
override points into campaign.yaml (``stages[0].resources.partition``), a value it inherits from
job.yaml points into job.yaml.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hpc.campaign.model import CampaignSpec, Stage
from hpc.errors import ConfigError, FieldProblem, SpecError
from hpc.modelbase import validate_document
from hpc.paths import expand_path
from hpc.spec.load import LoadedSpec, load_spec
from hpc.spec.model import JobSpec
from hpc.yamlsource import Location, YamlDocument, dotted, load_yaml_file, parse_yaml


@dataclass(frozen=True)
class Origin:
    """Where part of a composed spec was written: ``prefix`` inside ``document``."""

    document: YamlDocument
    prefix: Location = ()


@dataclass(frozen=True)
class ComposedDocument(YamlDocument):
    """A stage's job spec assembled from several places; problems point at the right one.

    ``origins`` maps a location in the composed spec (``("resources", "partition")``) to where
    it was written; the longest matching location wins, ``()`` is the base job. ``exact`` entries
    apply to that location only: a problem with ``resources`` as a whole is the stage's when the
    stage changed some of it, while ``resources.nodes`` it did not change stays the base job's.
    """

    origins: tuple[tuple[Location, Origin], ...] = field(default=())
    exact: tuple[tuple[Location, Origin], ...] = field(default=())

    def _origin(self, loc: Sequence[str | int]) -> tuple[Origin, Location]:
        for key, origin in self.exact:
            if tuple(loc) == key:
                return origin, (*origin.prefix, *loc)
        best: tuple[Location, Origin] | None = None
        for key, origin in self.origins:
            if tuple(loc[: len(key)]) == key and (best is None or len(key) > len(best[0])):
                best = (key, origin)
        if best is None:
            return Origin(self), tuple(loc)
        return best[1], (*best[1].prefix, *loc)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        origin, full = self._origin(loc)
        return origin.document.line_of(full) if origin.document is not self else None

    def problem(self, loc: Sequence[str | int], message: str) -> FieldProblem:
        origin, full = self._origin(loc)
        if origin.document is self:
            return FieldProblem(path=dotted(loc), message=message, source=self.source)
        return FieldProblem(path=dotted(full), message=message, line=origin.document.line_of(full),
                            source=origin.document.source)


@dataclass(frozen=True)
class LoadedCampaign:
    spec: CampaignSpec
    document: YamlDocument
    path: Path
    stages: Mapping[str, LoadedSpec]  # each stage's job spec, ready for hpc.resolve

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def load_campaign(path: Path) -> LoadedCampaign:
    path = path.resolve()
    return _finish(load_yaml_file(path), path)


def load_campaign_text(text: str, path: Path) -> LoadedCampaign:
    """``text`` as if read from ``path`` (relative job paths are relative to its directory)."""
    path = path.resolve()
    return _finish(parse_yaml(text, str(path)), path)


def _finish(document: YamlDocument, path: Path) -> LoadedCampaign:
    spec = validate_document(CampaignSpec, document, what="campaign")
    stages: dict[str, LoadedSpec] = {}
    problems: list[FieldProblem] = []
    for index, stage in enumerate(spec.stage_list):
        try:
            stages[stage.name] = stage_spec(spec, stage, index if spec.stages else None, document, path.parent)
        except SpecError as err:
            problems.extend(err.problems)
    if problems:
        raise SpecError(problems)
    return LoadedCampaign(spec=spec, document=document, path=path, stages=stages)


def _base(
    spec: CampaignSpec, stage: Stage, stage_loc: Location, document: YamlDocument, base_dir: Path
) -> tuple[LoadedSpec, Origin, dict[str, Any]]:
    """The job the stage starts from: its own ``job`` or the campaign's; a path or inline."""
    job, loc = (stage.job, (*stage_loc, "job")) if stage.job is not None else (spec.job, ("job",))
    if isinstance(job, str):
        try:
            path = expand_path(job, "job", base_dir, os.environ)
        except ConfigError as err:
            raise SpecError([document.problem(loc, err.message)], hint=err.hint) from None
        loaded = load_spec(Path(path))
        return loaded, Origin(loaded.document), loaded.spec.model_dump(exclude_unset=True)
    if job is None:  # the model refuses this; kept for the type checker
        raise SpecError([document.problem(stage_loc, "no job for this stage")])
    data = dict(job)
    data.setdefault("name", spec.name)
    inline = ComposedDocument(data=data, source=document.source, origins=(((), Origin(document, loc)),))
    loaded = LoadedSpec(spec=validate_document(JobSpec, inline, what="job spec"), document=inline, base_dir=base_dir)
    return loaded, Origin(document, loc), loaded.spec.model_dump(exclude_unset=True)


def stage_spec(
    spec: CampaignSpec, stage: Stage, index: int | None, document: YamlDocument, base_dir: Path
) -> LoadedSpec:
    """The stage's job spec: base job, then the stage's command and resources on top."""
    stage_loc: Location = ("stages", index) if index is not None else ()
    try:
        base, base_origin, data = _base(spec, stage, stage_loc, document, base_dir)
    except SpecError as err:
        if index is None or stage.job is None:
            raise
        raise SpecError([FieldProblem(path=dotted((*stage_loc, "job")), message=str(p), source=document.source,
                                      line=document.line_of((*stage_loc, "job"))) for p in err.problems]) from None
    here = Origin(document, stage_loc)
    origins: list[tuple[Location, Origin]] = [((), base_origin)]
    exact: list[tuple[Location, Origin]] = []
    data["name"] = (f"{spec.name}-{stage.name}" if spec.stages else spec.name)[:64]
    origins.append((("name",), Origin(document, ())))
    if stage.command is not None:
        data["command"] = stage.command
        origins.append((("command",), here))
    if stage.resources is not None:
        override = stage.resources.model_dump(exclude_unset=True)
        data["resources"] = {**data.get("resources", {}), **override}
        origins += [(("resources", key), here) for key in override]
        exact.append((("resources",), here))
    # the stage's env is a set of templates: filled in per task (task.json) or per job (hpc.campaign.plan)
    composed = ComposedDocument(data=data, source=base.document.source, lines={}, origins=tuple(origins),
                                exact=tuple(exact))
    try:
        job = JobSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError([composed.problem(e["loc"], str(e["msg"]).removeprefix("Value error, "))
                         for e in err.errors()]) from None
    return LoadedSpec(spec=job, document=composed, base_dir=base.base_dir)
