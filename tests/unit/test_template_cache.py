"""Compiled templates are code: they are cached only where no other user can write them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpc.render.script import render_script, template_environment
from hpc.resolve import ResolvedJob, resolve
from hpc.site.load import load_site
from hpc.spec import load_spec_text


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "hpc-tf" / "templates"


def job(tmp_path: Path) -> ResolvedJob:
    env = {"HOME": str(tmp_path), "USER": "alice"}
    loaded = load_spec_text("name: a\ncommand: x\n", "job.yaml", tmp_path)
    return resolve(loaded, load_site("local", environ=env), "r", env)


def test_a_fresh_private_cache_is_created_and_used(cache: Path, tmp_path: Path) -> None:
    render_script(job(tmp_path))
    assert list(cache.iterdir()), "no compiled template was cached"
    assert cache.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("planted", ["templates", "hpc-tf"])
def test_a_world_writable_cache_someone_else_made_is_not_used(cache: Path, tmp_path: Path, planted: str) -> None:
    cache.mkdir(parents=True)
    victim = cache if planted == "templates" else cache.parent
    victim.chmod(0o777)
    assert template_environment().bytecode_cache is None
    render_script(job(tmp_path))
    assert list(cache.iterdir()) == []


def test_a_symlink_in_place_of_the_cache_is_not_followed(cache: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    cache.parent.mkdir(parents=True)
    cache.symlink_to(elsewhere)
    render_script(job(tmp_path))
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user (CI runs as root)")
def test_a_cache_owned_by_another_user_is_not_used(cache: Path, tmp_path: Path) -> None:
    cache.mkdir(parents=True, mode=0o700)
    os.chown(cache, 65534, 65534)
    assert template_environment().bytecode_cache is None
