"""Atomic writes (biomtl.atomic): all or nothing, no temporaries left, and the user's umask respected."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from biomtl.atomic import atomic_dir, atomic_write_bytes, atomic_write_text, recover_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_new_files_and_directories_follow_the_umask(tmp_path, umask):
    """Not the 0o600 / 0o700 that tempfile gives its temporaries."""
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "text\n")
        atomic_write_bytes(tmp_path / "b.bin", b"\x00")
        atomic_dir(tmp_path / "d", lambda tmp: (tmp / "f.txt").write_text("inside\n"))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "b.bin") == 0o666 & ~umask
    assert _mode(tmp_path / "d") == 0o777 & ~umask
    assert (tmp_path / "a.txt").read_text() == "text\n" and (tmp_path / "d" / "f.txt").read_text() == "inside\n"


def test_replacing_leaves_only_the_new_version(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old\n")
    atomic_write_text(tmp_path / "a.txt", "new\n")
    atomic_dir(tmp_path / "d", lambda tmp: (tmp / "v1").write_text("1"))
    atomic_dir(tmp_path / "d", lambda tmp: (tmp / "v2").write_text("2"))
    assert (tmp_path / "a.txt").read_text() == "new\n"
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["v2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "d"]


def test_a_failed_write_changes_nothing(tmp_path):
    atomic_dir(tmp_path / "d", lambda tmp: (tmp / "v1").write_text("1"))

    def fail(tmp: Path) -> None:
        (tmp / "half").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_dir(tmp_path / "d", fail)
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["v1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_recover_puts_back_the_previous_version_and_removes_temporaries(tmp_path):
    """A kill between the two renames of a swap leaves ``.d.old`` and no ``d``; a kill while writing leaves
    a ``.d.<random>`` temporary."""
    (tmp_path / ".d.old").mkdir()
    (tmp_path / ".d.old" / "v1").write_text("1")
    (tmp_path / ".d.1a2b3c4d").mkdir()
    recover_dir(tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert (tmp_path / "d" / "v1").read_text() == "1"
