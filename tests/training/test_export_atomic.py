"""Model directories appear atomically: a failed build leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.export import staging_dir


def _build_half_then_fail(target: Path) -> None:
    with staging_dir(target) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")


def test_failed_build_leaves_no_directory(tmp_path: Path) -> None:
    target = tmp_path / "m" / "1"
    with pytest.raises(RuntimeError, match="boom"):
        _build_half_then_fail(target)
    assert not target.exists()
    assert list((tmp_path / "m").iterdir()) == []


def test_success_renames_and_force_replaces(tmp_path: Path) -> None:
    target = tmp_path / "m" / "1"
    with staging_dir(target) as tmp:
        (tmp / "a").write_text("first")
    assert (target / "a").read_text() == "first"
    with pytest.raises(FileExistsError), staging_dir(target) as tmp:
        (tmp / "a").write_text("second")
    assert (target / "a").read_text() == "first"
    with staging_dir(target, force=True) as tmp:
        (tmp / "a").write_text("third")
    assert (target / "a").read_text() == "third"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]
