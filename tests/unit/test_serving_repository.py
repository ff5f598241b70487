"""Publishing versions into a model repository: temp name + rename, integer versions, removal, lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc.errors import ModelNameError, ServingError
from hpc.serving.repository import Repository


def _write(files: dict[str, str]) -> object:
    def build(stage: Path) -> None:
        for name, text in files.items():
            (stage / name).write_text(text)
    return build


def test_publish_renames_a_complete_version_into_place(tmp_path: Path) -> None:
    repo = Repository.at(tmp_path / "repo")
    assert repo.next_version("mlp") == 1
    seen: list[Path] = []

    def build(stage: Path) -> None:
        assert not (tmp_path / "repo" / "mlp" / "1").exists()  # Triton never sees it half-built
        assert stage.parent == repo.staging_dir
        (stage / "model.py").write_text("x")
        seen.append(stage)

    final = repo.publish("mlp", 1, build)
    assert final == tmp_path / "repo" / "mlp" / "1" and (final / "model.py").read_text() == "x"
    assert not seen[0].exists()
    repo.publish("mlp", 2, _write({"model.py": "y"}))  # type: ignore[arg-type]
    (repo.model_dir("mlp") / "notes").mkdir()
    (repo.model_dir("mlp") / "0").mkdir()
    (repo.model_dir("mlp") / "config.pbtxt").write_text("")
    assert repo.versions("mlp") == [1, 2] and repo.next_version("mlp") == 3


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    repo = Repository.at(tmp_path)

    def broken(stage: Path) -> None:
        (stage / "half").write_text("x")
        raise ServingError("conversion failed")

    with pytest.raises(ServingError, match="conversion failed"):
        repo.publish("mlp", 1, broken)
    assert repo.versions("mlp") == [] and list(repo.staging_dir.iterdir()) == []


def test_existing_version_is_never_overwritten(tmp_path: Path) -> None:
    repo = Repository.at(tmp_path)
    repo.publish("mlp", 1, _write({"a": "1"}))  # type: ignore[arg-type]
    with pytest.raises(ServingError, match="already exists"):
        repo.publish("mlp", 1, _write({"a": "2"}))  # type: ignore[arg-type]
    assert (repo.version_dir("mlp", 1) / "a").read_text() == "1"


def test_remove_version_and_config(tmp_path: Path) -> None:
    repo = Repository.at(tmp_path)
    repo.publish("mlp", 1, _write({"a": "1"}))  # type: ignore[arg-type]
    repo.write_config("mlp", 'name: "mlp"\n')
    assert repo.read_config("mlp") == 'name: "mlp"\n'
    repo.remove_version("mlp", 1)
    repo.remove_version("mlp", 7)  # absent: nothing to do
    assert repo.versions("mlp") == [] and list(repo.staging_dir.iterdir()) == []
    assert repo.next_version("mlp") == 2  # a rolled-back version's number is not reused


@pytest.mark.parametrize("name", ["../x", "a/b", ".hpc-tf", ".."])
def test_paths_refuse_traversal(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelNameError):
        Repository.at(tmp_path).model_dir(name)


def test_one_handoff_per_model_at_a_time(tmp_path: Path) -> None:
    repo = Repository.at(tmp_path)
    with repo.lock("mlp"):
        with pytest.raises(ServingError, match="another hand-off"), repo.lock("mlp"):
            pass
        with repo.lock("other"):
            pass
    with repo.lock("mlp"):
        pass
