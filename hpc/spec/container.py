"""The container a job's tasks run in (job.yaml ``environment.container``), and container binds."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from hpc.modelbase import StrictModel
from hpc.text import RunTimeText, shown


def _no_comma(value: str) -> str:
    if "," in value:
        raise ValueError(f"bind {shown(value)} must not contain ',' (list each bind separately)")
    return value


# a container bind (src[:dst[:opts]]); hpc-tf joins them with ','
Bind = Annotated[RunTimeText, AfterValidator(_no_comma)]


ContainerRuntime = Literal["apptainer", "singularity", "shifter"]
GpuVendor = Literal["nvidia", "amd"]
# where apptainer/singularity pull an image from: kept as written, never a path under the spec directory
IMAGE_SOURCES = ("docker://", "oras://", "library://", "shub://", "http://", "https://",
                 "docker-daemon:", "docker-archive:", "oci:", "oci-archive:")


def is_image_uri(image: str) -> bool:
    return image.startswith(IMAGE_SOURCES)


def _image(value: str) -> str:
    scheme, sep, _ = value.partition("://")
    if sep and not is_image_uri(value):
        raise ValueError(f"{shown(scheme + sep)} is not an image source apptainer pulls from: write "
                         f"{', '.join(s for s in IMAGE_SOURCES if s.endswith('://'))}, a .sif path or a Shifter image")
    return value


class Container(StrictModel):
    image: Annotated[RunTimeText, AfterValidator(_image)] = Field(
        description="docker://, oras://, library:// (pulled on the node), a .sif path, or a Shifter image name")
    runtime: ContainerRuntime | None = Field(None, description="default: the site's first container_runtime, "
                                                               "else apptainer")
    binds: list[Bind] = Field(default_factory=list)
    overlays: list[RunTimeText] = Field(default_factory=list, description="apptainer/singularity --overlay images")
    gpu: Literal["auto", "nvidia", "amd", "none"] = Field(
        "auto", description="the host GPU driver inside: --nv (nvidia), --rocm (amd); auto: the site's gpu_vendor")
    nv: bool | None = Field(None, description="deprecated: true is gpu: nvidia, false is gpu: none")

    @model_validator(mode="after")
    def _one_gpu_setting(self) -> Container:
        if self.nv is not None and self.gpu != "auto":
            raise ValueError("set gpu (nv is its deprecated spelling), not both")
        if self.runtime == "shifter" and self.overlays:
            raise ValueError("Shifter takes no overlays: use apptainer or singularity, or bind a directory")
        return self

    @property
    def gpu_setting(self) -> Literal["auto", "nvidia", "amd", "none"]:
        if self.nv is not None:
            return "nvidia" if self.nv else "none"
        return self.gpu
