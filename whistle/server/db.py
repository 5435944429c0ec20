# SPDX-License-Identifier: AGPL-3.0-or-later
"""Database engine and sessions: SQLite (WAL, secure_delete) by default, PostgreSQL by URL."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from whistle.server.blobstore import SESSION_INFO_KEY, BlobStore
from whistle.server.models import Base
from whistle.server.storage import DatabaseBlobStore


def make_engine(url: str) -> Engine:
    """An engine with the pragmas whistle relies on when the database is SQLite."""
    if url.startswith("sqlite"):
        _private_sqlite_files(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL: readers never block the one writer. secure_delete: deleted ciphertext is
            # overwritten with zeros rather than left in free pages. foreign_keys: cascades work.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA secure_delete=ON")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        # psycopg 3 is the driver whistle ships with; plain postgresql:// would mean psycopg2.
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url, pool_pre_ping=True)


def _private_sqlite_files(url: str) -> None:
    """Create the SQLite file 0600 before SQLite does, whatever the process umask.

    sqlite3 creates a missing database 0644 minus the umask (world-readable under the usual
    0022), and creates its -wal and -shm files with the database file's own mode: so making the
    database 0600 first makes all three private. An existing file from an older install is
    tightened too.
    """
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # sqlite3 reports the missing folder itself, as it always has
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        # An empty file is a valid empty database. fchmod: a umask such as 0o200 would have
        # left the owner unable to write.
        os.fchmod(fd, 0o600)
        os.close(fd)
    for side in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        try:
            st = os.lstat(side)
        except FileNotFoundError:
            continue
        # Only our own regular files: a read-only tool run by another user must still open it.
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.chmod(side, 0o600)


def checkpoint_wal(engine: Engine) -> bool:
    """On SQLite, copy the WAL into the database and truncate it to zero bytes; True if complete.

    Called after a case is deleted: secure_delete zeroes the freed pages, but until a checkpoint
    the WAL still holds earlier copies of them (and a WAL is reused, not shrunk, so old frames can
    linger past later checkpoints). TRUNCATE waits (busy timeout) for readers to move on, then
    leaves an empty WAL. A no-op returning True on other databases.
    """
    if engine.dialect.name != "sqlite":
        return True
    with engine.connect() as conn:
        # Outside any transaction: pysqlite begins one only before a DML statement.
        row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    busy = bool(row[0])
    if busy:
        # Nothing about the case here; the next checkpoint (or this one retried) completes it.
        logging.getLogger(__name__).warning("WAL checkpoint after a deletion was incomplete")
    return not busy


def make_sessionmaker(engine: Engine, blobs: BlobStore | None = None) -> sessionmaker[Session]:
    """Sessions on ``engine`` that carry the blob store (``blobstore.blob_store(session)``):
    ``blobs``, or the database store, the only one so far."""
    return sessionmaker(engine, expire_on_commit=False, info={SESSION_INFO_KEY: blobs or DatabaseBlobStore()})


def create_schema(engine: Engine) -> None:
    """Create every table that does not exist yet (idempotent)."""
    Base.metadata.create_all(engine)
