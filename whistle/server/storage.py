# SPDX-License-Identifier: AGPL-3.0-or-later
"""Server storage: ciphertext blobs in the database and spool files for uploads in flight.
(Confined paths and atomic file writes, which the workstation needs too, are whistle.core.files.)

Blobs live in the database as fixed-size chunks so that a report and its attachments are one
transaction and one backup. They are written from and read back to iterators, never held whole.
Spool files hold ciphertext only, for the time between receiving an upload and committing it.
"""

from __future__ import annotations

import contextlib
import errno
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from sqlalchemy import Engine, event, insert, select
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.orm import Session

from whistle.core.crypto import random_id
from whistle.core.files import StorageError
from whistle.server.models import Blob, BlobChunk

BLOB_CHUNK_SIZE = 512 * 1024


class DiskFullError(StorageError):
    """The disk (or the database) is full: the write was abandoned and nothing was stored.

    The application answers 507 (app.py). Raised for ENOSPC from spool files and, through
    :func:`translate_disk_full`, for a database that reports a full disk."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError or a DB-API error) means the disk is full."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    # SQLite: SQLITE_FULL; PostgreSQL: SQLSTATE 53100 (disk_full), psycopg 3 or psycopg2.
    if getattr(exc, "sqlite_errorcode", None) == 13:  # sqlite3.SQLITE_FULL
        return True
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code == "53100" or "No space left on device" in str(exc)


def translate_disk_full(engine: Engine) -> None:
    """Make ``engine`` raise :class:`DiskFullError` instead of a generic database error when the
    database reports a full disk, at execute or commit time alike; the open transaction is
    rolled back by its ``begin()`` block as for any error."""

    def handle_error(context: ExceptionContext) -> None:
        if context.original_exception is not None and is_disk_full(context.original_exception):
            raise DiskFullError("the database reports a full disk") from context.original_exception

    event.listen(engine, "handle_error", handle_error)


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
        with self._full_disk_guard():
            self._fh.write(data)
        self.size += len(data)
        return len(data)

    @contextlib.contextmanager
    def _full_disk_guard(self) -> Iterator[None]:
        # Buffered writes may report ENOSPC on write or only on flush: both become DiskFullError.
        try:
            yield
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            # The spool is anonymous: closing it frees what was written so far.
            with contextlib.suppress(OSError):
                self._fh.close()
            raise DiskFullError("no space left for the spool file") from exc

    def iter_chunks(self, size: int = BLOB_CHUNK_SIZE) -> Iterator[bytes]:
        with self._full_disk_guard():
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
    # The blob row first (the chunks' foreign key), its size once at the end: updating it per
    # chunk cost one UPDATE per 512 KiB (bench/upload.py: a third of the time on PostgreSQL).
    session.flush()
    # Chunks go in through Core: inserted at once, never held by the session, so a large blob
    # never accumulates in memory.
    chunk_insert = insert(BlobChunk)
    buf = bytearray()
    seq = size = 0

    def put(data: bytes) -> None:
        nonlocal seq, size
        try:
            session.execute(chunk_insert, {"blob_id": blob.id, "seq": seq, "data": data})
        except OSError as exc:
            # A driver writing to a full local disk; the database's own reports of a full disk
            # are translated by translate_disk_full. The caller's transaction rolls back.
            if is_disk_full(exc):
                raise DiskFullError("no space left for the blob") from exc
            raise
        seq += 1
        size += len(data)

    for piece in pieces:
        if not buf and len(piece) == BLOB_CHUNK_SIZE:
            put(bytes(piece))  # a spool file's pieces are exactly one chunk: no copy
            continue
        buf += piece
        while len(buf) >= BLOB_CHUNK_SIZE:
            with memoryview(buf) as view:
                chunk = bytes(view[:BLOB_CHUNK_SIZE])
            del buf[:BLOB_CHUNK_SIZE]
            put(chunk)
    if buf or seq == 0:
        put(bytes(buf))
    blob.size = size
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
