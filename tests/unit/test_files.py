"""Whole-file replacement: the new content or the old, exact permissions, no temp left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.common.files import write_atomic


def test_replaces_whole_with_exact_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "gateway.key"
    path.write_bytes(b"old")
    # a temp file left by a process that died under this pid does not block the write
    stale = tmp_path / f".gateway.key.tmp-{os.getpid()}"
    stale.write_bytes(b"half")
    old_umask = os.umask(0o077)
    try:
        write_atomic(path, b"new" * 10_000, 0o644)
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new" * 10_000
    assert stat.S_IMODE(path.stat().st_mode) == 0o644, "the umask must not narrow it"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.key"]
