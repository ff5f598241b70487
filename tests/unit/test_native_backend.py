"""hpc-tf's onnxruntime backend build (hpc.serving.native_backend): what is missing is one line with the fix,
and a build is cached (its serving and the joined batches are tests/integration/test_serving_formats_triton.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hpc.errors import ServingError
from hpc.serving import native_backend


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_no_header_names_where_it_looked_and_how_to_get_it(empty_cache: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_backend, "header_dirs", lambda: [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ServingError) as err:
        native_backend.onnxruntime_backend()
    assert err.value.message == (f"format onnx needs ONNX Runtime's C API header onnxruntime_c_api.h, found in none "
                                 f"of: {tmp_path / 'a'}, {tmp_path / 'b'}")
    assert err.value.hint is not None and "libonnxruntime-dev" in err.value.hint and "python-onnx" in err.value.hint
    assert not list(empty_cache.rglob("*.so*"))


@pytest.mark.parametrize(("text", "refusal", "detail"), [
    ("#error not ONNX Runtime's header\n", "building hpc-tf's onnxruntime backend failed (exit 1)",
     "error: #error not ONNX Runtime's header"),
    ("#define ORT_API_VERSION 999\n", "{header} is ONNX Runtime 1.999's, newer than the venv's onnxruntime 1.",
     "hint: use the headers of ONNX Runtime 1."),
])
def test_a_header_that_cannot_serve_is_one_error_and_leaves_no_file(empty_cache: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, text: str,
                                                                   refusal: str, detail: str) -> None:
    """One that does not compile (the compiler's first error is shown), and one newer than the venv's
    onnxruntime (it would build, then fail every load inside tritonserver)."""
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.fail("no C++ compiler on this machine (tests/install expects g++)")
    header = tmp_path / "include" / native_backend.HEADER
    header.parent.mkdir()
    header.write_text(text)
    monkeypatch.setattr(native_backend, "header_dirs", lambda: [header.parent])
    with pytest.raises(ServingError) as err:
        native_backend.onnxruntime_backend()
    assert err.value.reason.startswith(refusal.format(header=header))
    assert detail in str(err.value)
    assert not [p for p in empty_cache.rglob("*") if p.is_file()]  # no half-written library for the next node


def test_the_build_is_cached_per_source_and_library(empty_cache: Path) -> None:
    built = native_backend.onnxruntime_backend()
    library = built / native_backend.LIBRARY_NAME
    assert library.is_file() and built.parent == empty_cache / "hpc-tf" / "triton-backends"
    first = library.stat().st_mtime_ns
    assert native_backend.onnxruntime_backend() == built and library.stat().st_mtime_ns == first  # not rebuilt


def test_a_cache_others_can_write_is_not_loaded(empty_cache: Path) -> None:
    built = native_backend.onnxruntime_backend()
    assert all((p.stat().st_mode & 0o077) == 0 for p in (empty_cache / "hpc-tf", built.parent, built))  # 0700
    built.chmod(0o777)  # as if another user (or a group) could put their own library there
    with pytest.raises(ServingError) as err:
        native_backend.onnxruntime_backend()
    assert err.value.reason == (f"{built} in hpc-tf's backend cache is not yours alone (a symlink, another owner, "
                                "or writable by group or others): tritonserver would load code from it")
