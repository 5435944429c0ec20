# SPDX-License-Identifier: AGPL-3.0-or-later
"""Storage: paths that cannot escape their root, atomic file writes, and ciphertext blobs.

Blobs live in the database as fixed-size chunks so that a report and its attachments are one
transaction and one backup. They are written from and read back to iterators, never held whole.
Spool files hold ciphertext only, for the time between receiving an upload and committing it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from .crypto import random_id
from .models import Blob, BlobChunk

BLOB_CHUNK_SIZE = 512 * 1024


class StorageError(Exception):
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
def atomic_open(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Write a file atomically: a temporary file in the same folder, fsync, then rename.

    If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
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


class SpoolFile:
    """An anonymous ciphertext buffer on disk for one upload, gone when closed or on crash.

    The file is unlinked at creation where the OS allows (``TemporaryFile``), so nothing remains
    after the process dies. Only ciphertext is ever written to it.
    """

    def __init__(self, spool_dir: Path) -> None:
        spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fh: IO[bytes] = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115
        self.size = 0

    def write(self, data: bytes) -> int:
        self._fh.write(data)
        self.size += len(data)
        return len(data)

    def iter_chunks(self, size: int = BLOB_CHUNK_SIZE) -> Iterator[bytes]:
        self._fh.flush()
        self._fh.seek(0)
        while piece := self._fh.read(size):
            yield piece

    def close(self) -> None:
        self._fh.close()


def write_blob(session: Session, pieces: Iterable[bytes]) -> Blob:
    """Add a blob to ``session`` from ciphertext pieces of any size; nothing is committed here.

    The caller commits the blob with the rows that refer to it, so they appear together or not.
    """
    blob = Blob(id=random_id(16), size=0)
    session.add(blob)
    buf = bytearray()
    seq = 0
    for piece in pieces:
        buf += piece
        while len(buf) >= BLOB_CHUNK_SIZE:
            chunk = BlobChunk(blob_id=blob.id, seq=seq, data=bytes(buf[:BLOB_CHUNK_SIZE]))
            del buf[:BLOB_CHUNK_SIZE]
            session.add(chunk)
            # Flush and forget each chunk so a large blob never accumulates in the session.
            session.flush()
            session.expunge(chunk)
            seq += 1
            blob.size += BLOB_CHUNK_SIZE
    if buf or seq == 0:
        session.add(BlobChunk(blob_id=blob.id, seq=seq, data=bytes(buf)))
        blob.size += len(buf)
    session.flush()
    return blob


def iter_blob(session: Session, blob_id: str) -> Iterator[bytes]:
    """Yield a blob's chunks in order, one query per chunk so memory stays at one chunk."""
    blob = session.get(Blob, blob_id)
    if blob is None:
        raise StorageError(f"blob {blob_id} not found")
    seq = 0
    seen = 0
    while True:
        data = session.execute(
            select(BlobChunk.data).where(BlobChunk.blob_id == blob_id, BlobChunk.seq == seq)
        ).scalar_one_or_none()
        if data is None:
            break
        seen += len(data)
        yield data
        seq += 1
    if seen != blob.size:
        raise StorageError(f"blob {blob_id} is damaged: {seen} of {blob.size} bytes present")


def read_blob(session: Session, blob_id: str) -> bytes:
    """A small blob (a sealed envelope) whole, in memory."""
    return b"".join(iter_blob(session, blob_id))
