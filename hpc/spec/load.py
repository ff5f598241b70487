"""Read job.yaml into a validated JobSpec that remembers its lines for later error messages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpc.modelbase import validate_document
from hpc.spec.model import JobSpec
from hpc.yamlsource import YamlDocument, load_yaml_file, parse_yaml


@dataclass(frozen=True)
class LoadedSpec:
    spec: JobSpec
    document: YamlDocument
    base_dir: Path  # relative paths in the spec are relative to the spec file's directory


def load_spec(path: Path) -> LoadedSpec:
    document = load_yaml_file(path)
    spec = validate_document(JobSpec, document, what="job spec")
    return LoadedSpec(spec=spec, document=document, base_dir=path.resolve().parent)


def load_spec_text(text: str, source: str, base_dir: Path) -> LoadedSpec:
    document = parse_yaml(text, source)
    spec = validate_document(JobSpec, document, what="job spec")
    return LoadedSpec(spec=spec, document=document, base_dir=base_dir)
