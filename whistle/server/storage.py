# SPDX-License-Identifier: AGPL-3.0-or-later
"""Server storage: the database blob store and spool files for uploads in flight.
(Confined paths and atomic file writes, which the workstation needs too, are whistle.core.files.)

:class:`DatabaseBlobStore` implements the blob store interface (:mod:`whistle.server.blobstore`):
blobs live in the database as fixed-size chunks so that a report and its attachments are one
transaction and one backup. They are written from and read back to iterators, never held whole.
No other module touches the chunk tables.
Spool files hold ciphertext only, for the time between receiving an upload and committing it.
"""

from __future__ import annotations

import contextlib
import errno
import tempfile
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

from sqlalchemy import Connection, Engine, Table, delete, event, insert, select, update
from sqlalchemy.engine import ExceptionContext

from whistle.core.crypto import random_id
from whistle.core.files import StorageError
from whistle.server.blobstore import (
    BlobDamagedError,
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    Transaction,
)
from whistle.server.models import Blob, BlobChunk

if TYPE_CHECKING:
    from whistle.server.config import Config

BLOB_CHUNK_SIZE = 512 * 1024
# The chunk store's tables, used through Core (see DatabaseBlobStore).
_BLOBS = cast(Table, Blob.__table__)
_CHUNKS = cast(Table, BlobChunk.__table__)
_DELETE_BATCH = 500
_LIST_PAGE = 1000


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


class DatabaseBlobStore:
    """The blob store (:class:`whistle.server.blobstore.BlobStore`) kept in the database itself:
    a ``blobs`` row (id, size) and its ``blob_chunks`` rows of :data:`BLOB_CHUNK_SIZE` bytes
    (the last one shorter; an empty blob has one empty chunk). Core statements only, so it works
    on an ORM session and on a plain connection (backup and restore) alike, and no chunk is
    ever held by a session."""

    tables = frozenset({"blobs", "blob_chunks"})

    def write(self, tx: Transaction, pieces: Iterable[bytes]) -> BlobInfo:
        """Add a blob from ciphertext pieces of any size; nothing is committed here."""
        return self.restore(tx, random_id(16), pieces)

    def restore(self, tx: Transaction, blob_id: str, pieces: Iterable[bytes]) -> BlobInfo:
        """Add a blob under ``blob_id``; the caller commits it with the rows that refer to it."""
        # The blob row first (the chunks' foreign key), its size once at the end: updating it per
        # chunk cost one UPDATE per 512 KiB (bench/upload.py: a third of the time on PostgreSQL).
        tx.execute(insert(_BLOBS), {"id": blob_id, "size": 0})
        chunk_insert = insert(_CHUNKS)
        buf = bytearray()
        seq = size = 0

        def put(data: bytes) -> None:
            nonlocal seq, size
            try:
                tx.execute(chunk_insert, {"blob_id": blob_id, "seq": seq, "data": data})
            except OSError as exc:
                # A driver writing to a full local disk; the database's own reports of a full
                # disk are translated by translate_disk_full. The caller's transaction rolls back.
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
        tx.execute(update(_BLOBS).where(_BLOBS.c.id == blob_id).values(size=size))
        return BlobInfo(blob_id, size)

    def size(self, tx: Transaction, blob_id: str) -> int:
        """The blob's recorded size; raises :class:`BlobNotFoundError`."""
        size = tx.execute(select(_BLOBS.c.size).where(_BLOBS.c.id == blob_id)).scalar_one_or_none()
        if size is None:
            raise BlobNotFoundError(f"blob {blob_id} not found")
        return int(size)

    def read(self, tx: Transaction, blob_id: str) -> Iterator[bytes]:
        """The blob's chunks in order; raises :class:`BlobNotFoundError` at once if unknown."""
        return self._chunks(tx, blob_id, self.size(tx, blob_id))

    @staticmethod
    def _chunks(tx: Transaction, blob_id: str, size: int) -> Iterator[bytes]:
        # One query per chunk, so memory stays at one chunk whatever the driver buffers.
        seq = seen = 0
        while True:
            data = tx.execute(
                select(_CHUNKS.c.data).where(_CHUNKS.c.blob_id == blob_id, _CHUNKS.c.seq == seq)
            ).scalar_one_or_none()
            if data is None:
                break
            seen += len(data)
            yield bytes(data)
            seq += 1
        if seen != size:
            raise BlobDamagedError(f"blob {blob_id} is damaged: {seen} of {size} bytes present")

    def delete(self, tx: Transaction, blob_ids: Collection[str]) -> None:
        """Delete blobs and their chunks; SQLite's ``secure_delete`` zeroes the freed pages."""
        ids = sorted(set(blob_ids))
        # In batches: a database limits the parameters of one statement (SQLite: 32,766).
        for start in range(0, len(ids), _DELETE_BATCH):
            batch = ids[start : start + _DELETE_BATCH]
            # Chunks explicitly rather than by the foreign key's cascade, which SQLite applies only
            # with PRAGMA foreign_keys on (db.make_engine sets it; a bare connection might not).
            tx.execute(delete(_CHUNKS).where(_CHUNKS.c.blob_id.in_(batch)))
            tx.execute(delete(_BLOBS).where(_BLOBS.c.id.in_(batch)))

    def list(self, tx: Transaction) -> Iterator[BlobInfo]:
        """Every blob by id in byte order, read a page at a time (bounded memory)."""
        # PostgreSQL sorts text by locale; "C" is byte order, which is what SQLite does.
        dialect = tx.dialect if isinstance(tx, Connection) else tx.get_bind().dialect
        key = _BLOBS.c.id.collate("C") if dialect.name == "postgresql" else _BLOBS.c.id
        last: str | None = None
        while True:
            query = select(_BLOBS.c.id, _BLOBS.c.size).order_by(key).limit(_LIST_PAGE)
            if last is not None:
                query = query.where(key > last)
            page = tx.execute(query).all()
            yield from (BlobInfo(row.id, row.size) for row in page)
            if len(page) < _LIST_PAGE:
                return
            last = page[-1].id


def blob_store_for(config: Config) -> BlobStore:
    """The blob store ``config`` asks for. Only the database store exists for now; a second
    backend is chosen here (and given to db.make_sessionmaker by the app and the commands)."""
    del config  # no setting chooses a backend yet
    return DatabaseBlobStore()
