# SPDX-License-Identifier: AGPL-3.0-or-later
"""Backup and restore of a whistle server: ``whistle backup`` and ``whistle restore``.

A backup is a logical, database-agnostic copy (format: :mod:`whistle.server.backup_file`) of exactly
what the server holds: the database — ciphertext and the metadata docs/security.md lists — and
the instance secrets *without* Flask's session key. The passphrase salt and argon2 costs must be
in it, or no source could ever log in again after a restore; the session key is left out because
whoever held a backup could otherwise forge investigators' session cookies, and restore makes a
new one (everyone logs in again). So a backup reveals what a copy of the database reveals.

The dump is one consistent snapshot, streamed table by table with bounded memory, and it is
proven before it appears under its name: read back, restored into a scratch SQLite database and
compared row for row. Restore accepts an empty database of any URL, which is also how a drop
moves from SQLite to PostgreSQL. The hashes catch damage and careless edits, not someone who
rewrites a backup and its manifest together: nothing kept on the server could (whoever can do
that can rewrite the database itself). No Flask here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import secrets
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, Select, String, Table, event, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from whistle import __version__
from whistle.core.files import StorageError, atomic_open, atomic_write
from whistle.server.backup_file import (
    BLOB_CHUNKS,
    BLOBS,
    FORMAT,
    MANIFEST,
    SECRETS,
    BackupError,
    BackupReader,
    BlobCheck,
    TableCodec,
    member_name,
    rechunk,
    row_tables,
    rows_sha256,
    schema_tables,
)
from whistle.server.blobstore import BlobStore
from whistle.server.config import Config
from whistle.server.db import make_engine
from whistle.server.instance import InstanceError, InstanceSecrets, init_instance
from whistle.server.migrate import upgrade_database
from whistle.server.storage import DatabaseBlobStore, blob_store_for

__all__ = ["BackupError", "BackupSummary", "create_backup", "restore_backup"]

YIELD_PER = 16  # rows fetched at once: 16 blob chunks of 512 KiB is 8 MiB
BATCH_ROWS, BATCH_BYTES = 500, 8 * 1024 * 1024


@dataclass(frozen=True)
class BackupSummary:
    """What a backup holds, or what a restore wrote."""

    path: Path
    tables: int
    rows: int
    blobs: int
    blob_bytes: int
    schema_revision: str | None


# --- Engines and transactions ----------------------------------------------------------------


def _engine(url: str, *, write: bool) -> Engine:
    """An engine whose transactions are real ones on SQLite too.

    Python's sqlite3 begins a transaction only before a write, so consecutive SELECTs would each
    see a different moment; an explicit BEGIN makes a backup one consistent snapshot (WAL lets
    the server keep writing meanwhile), and BEGIN IMMEDIATE makes a restore one write transaction.
    """
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"

        @event.listens_for(engine, "connect")
        def _manual(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin)

    return engine


@contextlib.contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # READ COMMITTED would let each table come from a different moment.
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _ordered(table: Table, dialect: str) -> Select[Any]:
    # PostgreSQL sorts text by locale; "C" is byte order, which is what SQLite does, so a table's
    # SHA-256 is the same whichever database it is read from.
    keys = [c.collate("C") if dialect == "postgresql" and isinstance(c.type, String) else c
            for c in (table.primary_key.columns or table.columns)]
    return select(*table.columns).order_by(*keys)


def _scan(conn: Connection, table: Table, codec: TableCodec) -> Iterator[bytes]:
    result = conn.execution_options(yield_per=YIELD_PER).execute(_ordered(table, conn.dialect.name))
    for row in result:
        yield codec.encode(row)


def _blob_lines(conn: Connection, store: BlobStore, codec: TableCodec, blobs: BlobCheck) -> Iterator[bytes]:
    for info in store.list(conn):
        row = {"id": info.id, "size": info.size}
        blobs.feed(BLOBS.name, row)
        yield codec.encode((info.id, info.size))


def _chunk_lines(conn: Connection, store: BlobStore, codec: TableCodec, blobs: BlobCheck) -> Iterator[bytes]:
    # Each blob streamed through the store, one piece at a time: never a whole blob in memory.
    for info in store.list(conn):
        for seq, data in enumerate(rechunk(store.read(conn, info.id))):
            blobs.feed(BLOB_CHUNKS.name, {"blob_id": info.id, "seq": seq, "data": data})
            yield codec.encode((info.id, seq, data))


def _members(conn: Connection, store: BlobStore, blobs: BlobCheck
             ) -> Iterator[tuple[Table, TableCodec, Iterator[bytes]]]:
    """Every member's table, codec and lines, in the order a backup writes them: the blobs
    through the store, then the other tables' rows."""
    codec = TableCodec(BLOBS)
    yield BLOBS, codec, _blob_lines(conn, store, codec, blobs)
    codec = TableCodec(BLOB_CHUNKS)
    yield BLOB_CHUNKS, codec, _chunk_lines(conn, store, codec, blobs)
    for table in row_tables(store.tables):
        codec = TableCodec(table)
        yield table, codec, _scan(conn, table, codec)


def _revision(conn: Connection) -> str | None:
    """The Alembic revision (migration) the database is at."""
    return ",".join(sorted(MigrationContext.configure(conn).get_current_heads())) or None


def _db_error(exc: SQLAlchemyError) -> str:
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]


# --- Backup ----------------------------------------------------------------------------------


def _secrets_member(config: Config) -> bytes:
    try:
        raw = config.secrets_path.read_text(encoding="utf-8")
        InstanceSecrets.from_json(raw)
    except (OSError, InstanceError) as exc:
        raise BackupError(f"cannot read the instance secrets: {exc}") from exc
    doc = json.loads(raw)
    doc.pop("flask_secret_key", None)
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def _add_member(zf: zipfile.ZipFile, name: str) -> IO[bytes]:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # no time of day, as elsewhere
    info.compress_type = zipfile.ZIP_STORED
    return zf.open(info, "w", force_zip64=True)


def create_backup(config: Config, out: Path, *, work_dir: Path | None = None) -> BackupSummary:
    """Write a backup of ``config``'s database and secrets to ``out``, proven restorable.

    Before the file appears under its name it is read back and restored into a scratch SQLite
    database in ``work_dir`` (default: next to ``out``; it needs as much room as the database),
    and every table's row count and SHA-256 and every blob's length are compared with the
    source. Raises :class:`BackupError`; then ``out`` is left as it was.
    """
    secrets_bytes = _secrets_member(config)
    store = blob_store_for(config)
    engine = _engine(config.database_url, write=False)
    entries: list[dict[str, Any]] = []
    try:
        with atomic_open(out, 0o640, check=lambda tmp: _prove_restorable(tmp, work_dir or out.parent)
                         ) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            blobs = BlobCheck()
            with _snapshot(engine) as conn:
                revision = _revision(conn)
                for table, codec, lines in _members(conn, store, blobs):
                    digest, rows = hashlib.sha256(), 0
                    with _add_member(zf, member_name(table.name)) as member:
                        for line in lines:
                            member.write(line)
                            digest.update(line)
                            rows += 1
                    entries.append({"name": table.name, "member": member_name(table.name),
                                    "columns": codec.columns, "rows": rows, "sha256": digest.hexdigest()})
            n_blobs, n_bytes = blobs.finish()
            with _add_member(zf, SECRETS) as member:
                member.write(secrets_bytes)
            manifest = {
                "format": FORMAT, "v": 1, "whistle_version": __version__,
                "created_on": dt.datetime.now(dt.UTC).date().isoformat(),
                "source_database": engine.dialect.name, "schema_revision": revision,
                "tables": entries, "rows_sha256": rows_sha256(entries),
                "secrets_sha256": hashlib.sha256(secrets_bytes).hexdigest(),
                "blobs": n_blobs, "blob_bytes": n_bytes,
            }
            with _add_member(zf, MANIFEST) as member:
                member.write((json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    except SQLAlchemyError as exc:
        raise BackupError(f"reading the database failed, no backup written: {_db_error(exc)}") from exc
    except StorageError as exc:  # a damaged or missing blob
        raise BackupError(f"reading the blobs failed, no backup written: {exc}") from exc
    except OSError as exc:
        raise BackupError(f"cannot write {out}: {exc}") from exc
    finally:
        engine.dispose()
    return BackupSummary(path=out, tables=len(entries), rows=sum(e["rows"] for e in entries),
                         blobs=n_blobs, blob_bytes=n_bytes, schema_revision=revision)


def _prove_restorable(path: Path, work_dir: Path) -> None:
    """Restore ``path`` into a scratch SQLite database and compare it with the manifest.

    The scratch instance keeps its blobs in the database store, whichever store the server uses:
    what is proven is that the file restores, and reads back, identically."""
    store = DatabaseBlobStore()
    with tempfile.TemporaryDirectory(prefix=".whistle-verify-", dir=work_dir) as scratch:
        engine = _engine(f"sqlite:///{Path(scratch) / 'verify.sqlite3'}", write=True)
        try:
            upgrade_database(engine)  # the schema the migrations make, as on a real target
            with BackupReader(path, store.tables) as backup, engine.begin() as conn:
                _load(conn, backup, store)
            blobs = BlobCheck()
            with _snapshot(engine) as conn:
                for table, _codec, lines in _members(conn, store, blobs):
                    entry = backup.entries[table.name]
                    digest, rows = hashlib.sha256(), 0
                    for line in lines:
                        digest.update(line)
                        rows += 1
                    if (rows, digest.hexdigest()) != (entry.rows, entry.sha256):
                        raise BackupError(f"a test restore of table {table.name} differs from the "
                                          "database; backup discarded")
            if blobs.finish() != backup.blob_stats:
                raise BackupError("a test restore's blobs differ from the database; backup discarded")
        except SQLAlchemyError as exc:
            raise BackupError(f"a test restore failed, backup discarded: {_db_error(exc)}") from exc
        except StorageError as exc:
            raise BackupError(f"a test restore failed, backup discarded: {exc}") from exc
        finally:
            engine.dispose()


def _load(conn: Connection, backup: BackupReader, store: BlobStore) -> int:
    """Write every blob and row of ``backup`` in the caller's transaction; return how many rows
    (counting the blobs' two members' lines as rows, as the manifest does)."""
    blobs = BlobCheck()
    total = _load_blobs(conn, backup, store, blobs)
    for table in row_tables(store.tables):
        batch: list[dict[str, Any]] = []
        size = 0
        for row, nbytes in backup.rows(table, blobs):
            batch.append(row)
            size += nbytes
            if len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
                conn.execute(table.insert(), batch)
                total, batch, size = total + len(batch), [], 0
        if batch:
            conn.execute(table.insert(), batch)
            total += len(batch)
    if blobs.finish() != backup.blob_stats:
        raise BackupError("backup blob totals do not match the manifest")
    return total


def _load_blobs(conn: Connection, backup: BackupReader, store: BlobStore, blobs: BlobCheck) -> int:
    """Give every blob of ``backup`` to the store, streamed: both members are in blob id order,
    so each blob's pieces are the run of chunk lines under its id, read alongside."""
    chunks = backup.rows(BLOB_CHUNKS, blobs)
    lines = 0
    current = next(chunks, None)

    def pieces(blob_id: str) -> Iterator[bytes]:
        nonlocal current, lines
        while current is not None and current[0]["blob_id"] == blob_id:
            data: bytes = current[0]["data"]
            lines += 1
            current = next(chunks, None)
            yield data

    for row, _ in backup.rows(BLOBS, blobs):
        lines += 1
        info = store.restore(conn, row["id"], pieces(row["id"]))
        if info.size != row["size"]:
            raise BackupError(f"blob {row['id']} is damaged: {info.size} of {row['size']} bytes")
    # Chunks of no listed blob: read to the end, so the member's hash is checked and
    # BlobCheck.finish names the orphan.
    while current is not None:
        lines += 1
        current = next(chunks, None)
    return lines


# --- Restore ---------------------------------------------------------------------------------


def _existing_rows(url: str) -> int:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not (parsed.database and Path(parsed.database).exists()):
        return 0  # rather than create the file just to look into it
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            return sum(conn.execute(select(func.count()).select_from(t)).scalar_one()
                       for t in schema_tables() if t.name in present)
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot read the target database: {_db_error(exc)}") from exc
    finally:
        engine.dispose()


def restore_backup(config: Config, path: Path, *, force: bool = False) -> BackupSummary:
    """Restore a backup into ``config``'s database and secrets: all of it, or nothing.

    The whole backup is checked first (structure, hashes, every row decodes, blob lengths), then
    written in one transaction. A database that holds rows is refused unless ``force``; its rows
    are then replaced in that same transaction. The instance secrets get the backup's passphrase
    salt and costs and a new Flask session key. Raises :class:`BackupError`.
    """
    store = blob_store_for(config)
    with BackupReader(path, store.tables) as backup:
        backup.validate()
        existing = _existing_rows(config.database_url)
        if existing and not force:
            raise BackupError(f"the database already holds {existing} rows; restoring would replace "
                              "them all: use --force")
        try:
            _, engine = init_instance(config)
        except SQLAlchemyError as exc:
            raise BackupError(f"cannot prepare the target database: {_db_error(exc)}") from exc
        engine.dispose()
        old_secrets = config.secrets_path.read_bytes()
        doc = backup.secrets_doc | {"flask_secret_key": secrets.token_urlsafe(48)}
        engine = _engine(config.database_url, write=True)
        try:
            with engine.connect() as conn:
                target = _revision(conn)
            if backup.schema_revision and target != backup.schema_revision:
                # Columns could differ. Restore with the version that made the backup (the manifest
                # names it), then run 'whistle upgrade'.
                raise BackupError(f"the backup is at schema revision {backup.schema_revision}, the "
                                  f"database at {target}: restore with whistle "
                                  f"{backup.whistle_version}, then upgrade")
            atomic_write(config.secrets_path, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
            with engine.begin() as conn:
                if force:
                    for table in reversed(row_tables(store.tables)):
                        conn.execute(table.delete())
                    store.delete(conn, [blob.id for blob in store.list(conn)])
                rows = _load(conn, backup, store)
                if conn.dialect.name == "postgresql":
                    _advance_sequences(conn)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                atomic_write(config.secrets_path, old_secrets)
            if isinstance(exc, SQLAlchemyError):
                raise BackupError(f"restore failed, the database is unchanged: {_db_error(exc)}") from exc
            if isinstance(exc, StorageError):
                raise BackupError(f"restore failed, the database is unchanged: {exc}") from exc
            raise
        finally:
            engine.dispose()
    return BackupSummary(path=path, tables=len(backup.entries), rows=rows, blobs=backup.blob_stats[0],
                         blob_bytes=backup.blob_stats[1], schema_revision=backup.schema_revision)


def _advance_sequences(conn: Connection) -> None:
    # Rows came with their ids; a serial column's sequence must move past them, or the next
    # account created would collide with a restored one.
    for table in schema_tables():
        column = table.autoincrement_column
        if column is not None:
            highest = select(func.max(column)).scalar_subquery()
            conn.execute(select(func.setval(func.pg_get_serial_sequence(table.name, column.name),
                                            func.coalesce(highest, 0) + 1, False)))
