"""Atomic writes: complete or absent, previous contents kept on failure, normal (umask) permissions."""

from __future__ import annotations

import os
import stat

import pytest

from xtc.atomic import atomic_dir, atomic_path, atomic_write_json, atomic_write_text


def test_files_get_umask_permissions_not_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_failure_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "m.json") as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert (tmp_path / "m.json").read_text().strip() == '{\n  "v": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_dir_replaces_the_whole_directory_only_on_success(tmp_path):
    with atomic_dir(tmp_path / "model") as d:
        (d / "old.bin").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "model") as d:
            (d / "new.bin").write_text("2")
            raise ValueError("boom")
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["old.bin"]
    with atomic_dir(tmp_path / "model") as d:
        (d / "new.bin").write_text("2")
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["new.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
