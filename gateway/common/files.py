"""Files replaced whole and durably: the one way this project writes a small file that
must survive a crash or power loss in either its old or its new form, never half.

Used for signing keys, the event log's signed counter and (for the directory fsync)
the outbox's compaction.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "write_atomic"]


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Write ``data`` to ``path`` via a same-directory temp file, fsync, rename, fsync dir.

    The temp file is created with ``mode`` from the start (and set exactly, whatever
    the umask), so a secret is never on disk with wider permissions, even for an
    instant. A temp file left by a process that died under the same pid is replaced.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:  # a write may take less than it was given
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename still happened
    finally:
        os.close(fd)
