# SPDX-License-Identifier: AGPL-3.0-or-later
"""Files that the server and the workstation both write: paths that cannot escape their root, and
atomic writes (a temporary file in the same folder, fsync, rename), after SecureDrop's store."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from whistle.core.errors import WhistleError


class StorageError(WhistleError):
    """A storage operation was refused or failed (unsafe path, missing blob, I/O error)."""


class UnsafePathError(StorageError):
    """A path would resolve outside the root it must stay in."""


def safe_join(root: Path, *parts: str) -> Path:
    """Join ``parts`` under ``root`` and check that the resolved result stays inside it."""
    base = root.resolve()
    for part in parts:
        if not part or "\x00" in part or Path(part).is_absolute():
            raise UnsafePathError(f"unsafe path component {part!r}")
    candidate = base.joinpath(*parts).resolve()
    if candidate != base and base not in candidate.parents:
        raise UnsafePathError(f"{candidate} is outside {base}")
    return candidate


@contextlib.contextmanager
def atomic_open(
    path: Path, mode: int = 0o600, *, check: Callable[[Path], None] | None = None
) -> Iterator[BinaryIO]:
    """Write a file atomically: a temporary file in the same folder, fsync, then rename.

    If the block raises, the temporary file is removed and ``path`` is untouched. ``check``, if
    given, is called with the complete temporary file before the rename; if it raises, the file
    is discarded the same way, so a file that fails its check never appears under ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if check is not None:
            check(Path(tmp))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, mode) as fh:
        fh.write(data)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse to open a directory: best effort.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
