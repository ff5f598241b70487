"""The job spec (job.yaml): model and loader."""

from hpc.spec.load import LoadedSpec, load_spec, load_spec_text
from hpc.spec.model import JobSpec

__all__ = ["JobSpec", "LoadedSpec", "load_spec", "load_spec_text"]
