"""hpc-tf's own Triton backend for format ``onnx`` (``native/onnxruntime_backend.cc``), compiled on first use.

Why: the tritonserver bundled in nvidia-pytriton has the python backend only, and its stub's round trip per
request costs far more than ONNX Runtime's run of a model (BENCHMARKS.md figure 6). This backend runs
ONNX Runtime inside tritonserver. It is built with the system's C++ compiler against ONNX Runtime's C API
header (``onnxruntime_c_api.h``: Debian's and Ubuntu's ``libonnxruntime-dev``, or the ``include/`` directory
of any ONNX Runtime release no newer than the venv's onnxruntime) and loads the onnxruntime library of this
venv, the one the hand-off's parity check ran, so the served outputs are the ones the check saw.

Cached per user in ``$XDG_CACHE_HOME/hpc-tf/triton-backends/`` under a key of the source, the header and the
library: written under a temporary name and renamed, so replica jobs starting together on a shared home
never load a half-written file; a changed source or a new onnxruntime builds anew.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from hpc.errors import ServingError

BACKEND_NAME = "onnxruntime"  # the backend Triton's platform onnxruntime_onnx maps to
LIBRARY_NAME = f"libtriton_{BACKEND_NAME}.so"
SOURCE_DIR = Path(__file__).with_name("native")
SOURCES = ("onnxruntime_backend.cc", "triton_backend_api.h")
HEADER = "onnxruntime_c_api.h"
BUILD_TIMEOUT_S = 300
HEADER_HINT = ("install ONNX Runtime's C headers: apt install libonnxruntime-dev (Debian 13, Ubuntu 24.04), or "
               "put an ONNX Runtime release's include/ directory at {}; or serve with --format python-onnx")


def header_dirs() -> list[Path]:
    """Where ``onnxruntime_c_api.h`` is looked for: the venv's own include directory first."""
    return [Path(sys.prefix) / "include" / "onnxruntime", Path("/usr/local/include/onnxruntime"),
            Path("/usr/include/onnxruntime")]


def find_header() -> Path:
    for directory in header_dirs():
        if (directory / HEADER).is_file():
            return directory
    raise ServingError(f"format onnx needs ONNX Runtime's C API header {HEADER}, found in none of: "
                       f"{', '.join(map(str, header_dirs()))}", hint=HEADER_HINT.format(header_dirs()[0]))


def onnxruntime_library() -> Path:
    """The venv's onnxruntime shared library (found without importing onnxruntime)."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise ServingError("onnxruntime is not installed",
                           hint="install the serving extra: pip install 'hpc-tf[serving]'")
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    found = sorted(capi.glob("libonnxruntime.so*"), key=lambda p: len(p.name))
    if not found:
        raise ServingError(f"no libonnxruntime.so in {capi}", hint="reinstall onnxruntime")
    return found[-1].resolve()  # the fully versioned name: the file itself


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hpc-tf" / "triton-backends"


def build_key(library: Path) -> str:
    """Of the source and the library, not the header: a compute node without the header uses the build its login
    node made in the shared home (the header's API version is checked against the library's when building)."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((SOURCE_DIR / name).read_bytes())
    digest.update(f"{library}\0{library.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def onnxruntime_backend() -> Path:
    """The directory Triton loads backend ``onnxruntime`` from (it holds ``libtriton_onnxruntime.so``), built
    now if this user's cache lacks it; a ServingError says what is missing and how to get it."""
    library = onnxruntime_library()
    if any(c in str(library) for c in '"\\\n'):
        raise ServingError(f"the onnxruntime library's path cannot be compiled into the backend: {library!r}",
                           hint="install the venv under a path without quotes or backslashes")
    try:
        target = cache_dir() / f"{BACKEND_NAME}-{build_key(library)}"
        if not (target / LIBRARY_NAME).is_file():
            _build(target, library)
        _check_own(target / LIBRARY_NAME)
    except OSError as err:
        raise ServingError(f"hpc-tf's backend cache {cache_dir()}: {err.strerror or err}"
                           + (f" ({err.filename})" if err.filename else ""),
                           hint="set XDG_CACHE_HOME to a directory of your own") from None
    return target


def _check_own(library: Path) -> None:
    """tritonserver runs whatever library this is: it and the directories hpc-tf made for it must be this
    user's alone to change (a cache on a shared or group-writable path could be given another's code)."""
    for path in (cache_dir().parent, cache_dir(), library.parent, library):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise ServingError(f"{path} in hpc-tf's backend cache is not yours alone (a symlink, another owner, or "
                               "writable by group or others): tritonserver would load code from it",
                               hint=f"remove {cache_dir().parent}, or set XDG_CACHE_HOME to a directory of your own")


def _build(target: Path, library: Path) -> None:
    header_dir = find_header()
    _check_api_version(header_dir / HEADER, library)
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise ServingError("format onnx compiles hpc-tf's Triton backend once, and no C++ compiler is on PATH",
                           hint="install g++ (or load your cluster's compiler module), or serve with --format "
                                "python-onnx")
    cache_dir().parent.parent.mkdir(parents=True, exist_ok=True)  # ~/.cache itself: as the user has it
    for directory in (cache_dir().parent, cache_dir(), target):  # created this user's alone (mkdir -p would not)
        directory.mkdir(mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{LIBRARY_NAME}.", dir=target)
    os.close(fd)
    argv = [compiler, "-std=c++17", "-O2", "-fmax-errors=3", "-fPIC", "-shared", "-fvisibility=hidden",
            f"-I{header_dir}", f"-I{SOURCE_DIR}", f'-DHPCTF_ORT_LIBRARY="{library}"', str(SOURCE_DIR / SOURCES[0]),
            "-o", tmp, "-ldl"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "error" in line][:3]  # the first say why
            detail = "\n".join(errors or done.stderr.strip().splitlines()[-10:])
            raise ServingError(f"building hpc-tf's onnxruntime backend failed (exit {done.returncode}):\n{detail}",
                               hint=f"is {header_dir / HEADER} ONNX Runtime's? else serve with --format python-onnx")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target / LIBRARY_NAME)
    except subprocess.TimeoutExpired:
        raise ServingError(f"building hpc-tf's onnxruntime backend took over {BUILD_TIMEOUT_S} s") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _check_api_version(header: Path, library: Path) -> None:
    """A header newer than the library builds, but the library then has no such API version and every load
    fails inside tritonserver: refused here, where the fix can be named."""
    wanted = re.search(r"^#define ORT_API_VERSION (\d+)", header.read_text(errors="replace"), re.MULTILINE)
    have = re.search(r"\.so\.1\.(\d+)", library.name)
    if wanted and have and int(wanted.group(1)) > int(have.group(1)):
        raise ServingError(f"{header} is ONNX Runtime 1.{wanted.group(1)}'s, newer than the venv's "
                           f"onnxruntime 1.{have.group(1)} ({library.name})",
                           hint=f"use the headers of ONNX Runtime 1.{have.group(1)} or older, or upgrade onnxruntime")


def add_to(backends: Path) -> dict[str, str]:
    """Add this backend to a tritonserver's backend directory where it has no onnxruntime of its own;
    returns {backend: why it is missing} when it cannot be built here."""
    if (backends / BACKEND_NAME).exists():
        return {}
    try:
        built = onnxruntime_backend()
    except ServingError as err:
        return {BACKEND_NAME: err.reason + (f" ({err.hint})" if err.hint else "")}
    (backends / BACKEND_NAME).mkdir()
    (backends / BACKEND_NAME / LIBRARY_NAME).symlink_to(built / LIBRARY_NAME)
    return {}
