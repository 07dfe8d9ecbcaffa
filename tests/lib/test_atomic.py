from __future__ import annotations

from pathlib import Path

import pytest

from scripts.lib.atomic import atomic_target, write_text_atomic


def test_write_text_atomic_keeps_the_old_file_when_writing_fails(tmp_path: Path):
    path = tmp_path / "out" / "report.md"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text(encoding="utf-8") == "second"
    with pytest.raises(TypeError):
        write_text_atomic(path, None)  # type: ignore[arg-type]
    assert path.read_text(encoding="utf-8") == "second"
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]


def test_atomic_target_renames_only_after_success(tmp_path: Path):
    path = tmp_path / "model.bin"
    with pytest.raises(RuntimeError):
        with atomic_target(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed half way")
    assert list(tmp_path.iterdir()) == []
    with atomic_target(path) as tmp:
        tmp.write_bytes(b"whole")
    assert path.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["model.bin"]
