# SPDX-License-Identifier: AGPL-3.0-or-later
"""The backup file format: rows as canonical JSON lines, the manifest, and a checking reader.

A backup is a zip of stored (uncompressed) members:

- ``tables/<table>.jsonl``: one JSON array per row, columns in the schema's order, bytes as
  standard base64, dates and times as ISO text, rows in primary-key order (byte order on any
  database). The encoding is canonical: encoding the rows read back from a restored database
  gives the same bytes, so one SHA-256 per table proves a restore identical to its source;
- the blobs, copied through the blob store (:mod:`whistle.server.blobstore`) whatever its backend,
  as two members of the same kind: ``tables/blobs.jsonl`` (id, size) and
  ``tables/blob_chunks.jsonl`` (blob id, number, data: the blob cut into :data:`CHUNK_SIZE`
  pieces, an empty blob one empty piece). :data:`BLOBS` and :data:`BLOB_CHUNKS` define them here,
  not the database models; they happen to match the database store's tables, so backups made
  before the store had an interface read and restore unchanged. The store's own tables are not
  carried as rows;
- ``secrets.json``: the instance secrets without Flask's session key (see :mod:`whistle.server.backup`);
- ``manifest.json``: format, version, day, schema revision, and per table its columns, row count
  and the SHA-256 of its member.

No Flask and no database connection here: :class:`BackupReader` trusts nothing in the file and
streams it, one row at a time, however large the backup.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)

from whistle.core.crypto import is_version
from whistle.core.errors import WhistleError
from whistle.server.instance import InstanceError, InstanceSecrets
from whistle.server.models import Base

FORMAT = "whistle-backup"
MANIFEST = "manifest.json"
SECRETS = "secrets.json"
# One line holds one row; the largest is a 512 KiB blob chunk, about 700 KB as base64.
MAX_LINE = 4 * 1024 * 1024
MAX_MANIFEST = 16 * 1024 * 1024
MAX_SECRETS = 64 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
# The blobs' members (see the module docstring): the format's own tables, not the models.
CHUNK_SIZE = 512 * 1024
_FORMAT = MetaData()
BLOBS = Table("blobs", _FORMAT, Column("id", String(32), primary_key=True),
              Column("size", Integer, nullable=False))
BLOB_CHUNKS = Table("blob_chunks", _FORMAT, Column("blob_id", String(32), primary_key=True),
                    Column("seq", Integer, primary_key=True),
                    Column("data", LargeBinary, nullable=False))


class BackupError(WhistleError):
    """A backup cannot be written, read or restored; the message is one line."""


def member_name(table: str) -> str:
    """The zip member holding a table's rows."""
    return f"tables/{table}.jsonl"


def schema_tables() -> list[Table]:
    """Every table of the database schema, the blob store's included, parents first."""
    return list(Base.metadata.sorted_tables)


def row_tables(store_tables: Collection[str]) -> list[Table]:
    """The schema's tables a backup carries as rows, parents before children (the order rows
    are restored in): all but ``store_tables``, which the blob store keeps to itself."""
    return [t for t in schema_tables() if t.name not in store_tables]


def member_tables(store_tables: Collection[str]) -> list[Table]:
    """Every table a backup holds a member for: the blobs' two, then the rows' tables."""
    return [BLOBS, BLOB_CHUNKS, *row_tables(store_tables)]


def rechunk(pieces: Iterable[bytes], size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """A blob's bytes as the format cuts them: ``size`` bytes a piece, the last shorter, and one
    empty piece for an empty blob. The same bytes give the same pieces whatever the store's own
    piece sizes, so a backup's hashes do not depend on the backend."""
    buf = bytearray()
    emitted = False
    for piece in pieces:
        if not buf and len(piece) == size:
            emitted = True
            yield piece  # already the format's size: no copy
            continue
        buf += piece
        while len(buf) >= size:
            with memoryview(buf) as view:
                chunk = bytes(view[:size])
            del buf[:size]
            emitted = True
            yield chunk
    if buf or not emitted:
        yield bytes(buf)


def rows_sha256(entries: list[dict[str, Any]]) -> str:
    """One SHA-256 over every table's name and SHA-256: the whole database in one value."""
    return hashlib.sha256("".join(f"{e['name']}:{e['sha256']}\n" for e in entries).encode()).hexdigest()


# --- Rows as JSON lines ------------------------------------------------------------------------

Codec = tuple[Callable[[Any], object], Callable[[Any], Any]]


def _typed(kind: type, parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        if type(value) is not kind:  # JSON true is not 1, and 1 is not "1"
            raise ValueError(f"expected {kind.__name__}, got {type(value).__name__}")
        return parse(value)
    return decode


def _codec(column: Column[Any]) -> Codec:
    kind = column.type
    if isinstance(kind, LargeBinary):
        return (lambda v: base64.b64encode(bytes(v)).decode("ascii"),
                _typed(str, lambda v: base64.b64decode(v, validate=True)))
    if isinstance(kind, DateTime):
        return (lambda v: v.isoformat(), _typed(str, dt.datetime.fromisoformat))
    if isinstance(kind, Date):
        return (lambda v: v.isoformat(), _typed(str, dt.date.fromisoformat))
    if isinstance(kind, Boolean):
        return (bool, _typed(bool, bool))
    if isinstance(kind, Integer):
        return (int, _typed(int, int))
    if isinstance(kind, String):
        return (str, _typed(str, str))
    # A new column type needs an encoding here before backups can carry it.
    raise BackupError(f"column {column} has a type backups do not handle: {kind}")


class TableCodec:
    """Encodes a table's rows as canonical JSON lines, and decodes them back (checking types)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.columns = [c.name for c in table.columns]
        self._codecs = [_codec(c) for c in table.columns]
        self._nullable = [bool(c.nullable) for c in table.columns]

    def encode(self, row: Any) -> bytes:
        """One row (values in column order) as one line of UTF-8 JSON."""
        values = [None if v is None else enc(v) for v, (enc, _) in zip(row, self._codecs, strict=True)]
        return (json.dumps(values, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")

    def decode(self, line: bytes) -> dict[str, Any]:
        """One line back to a row for ``table.insert()``; raise :class:`BackupError` if malformed."""
        try:
            values = json.loads(line)
            if not isinstance(values, list) or len(values) != len(self.columns):
                raise ValueError("wrong number of columns")
            row: dict[str, Any] = {}
            for name, value, (_, dec), nullable in zip(self.columns, values, self._codecs,
                                                       self._nullable, strict=True):
                if value is None and not nullable:
                    raise ValueError(f"{name} may not be empty")
                row[name] = None if value is None else dec(value)
            return row
        except ValueError as exc:  # JSONDecodeError, binascii.Error, bad dates: all ValueError
            raise BackupError(f"table {self.table.name}: malformed row: {exc}") from exc


class BlobCheck:
    """Every blob's chunks are numbered 0, 1, 2 … and their lengths add up to the blob's size."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.seen: dict[str, tuple[int, int]] = {}

    def feed(self, table: str, row: Mapping[Any, Any]) -> None:
        """Look at one row of any table, in primary-key order."""
        if table == BLOBS.name:
            self.sizes[row["id"]] = row["size"]
        elif table == BLOB_CHUNKS.name:
            count, total = self.seen.get(row["blob_id"], (0, 0))
            if row["seq"] != count:
                raise BackupError(f"blob {row['blob_id']}: chunk {row['seq']} where {count} belongs")
            self.seen[row["blob_id"]] = (count + 1, total + len(row["data"]))

    def finish(self) -> tuple[int, int]:
        """Check every blob; return how many there are and their total size."""
        for blob_id, size in self.sizes.items():
            count, total = self.seen.get(blob_id, (0, 0))
            if count == 0 or total != size:
                raise BackupError(f"blob {blob_id} is damaged: {total} of {size} bytes in {count} chunk(s)")
        orphans = set(self.seen) - set(self.sizes)
        if orphans:
            raise BackupError(f"chunks of a missing blob {sorted(orphans)[0]}")
        return len(self.sizes), sum(self.sizes.values())


# --- Reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableEntry:
    """A table as the manifest describes it."""

    name: str
    member: str
    columns: list[str]
    rows: int
    sha256: str


class BackupReader:
    """Opens a backup and checks its structure, manifest and schema before any row is read.

    ``store_tables`` are the blob store's own tables (``BlobStore.tables``), which a backup does
    not carry as rows."""

    def __init__(self, path: Path, store_tables: Collection[str]) -> None:
        self.path = path
        self.tables = member_tables(store_tables)
        try:
            self._zip = zipfile.ZipFile(path, "r")
        except (OSError, zipfile.BadZipFile) as exc:
            raise BackupError(f"{path} is not a readable backup: {exc}") from exc
        try:
            self._open()
        except BaseException:
            self._zip.close()
            raise

    def __enter__(self) -> BackupReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    def _open(self) -> None:
        infos = self._zip.infolist()
        if len({i.filename for i in infos}) != len(infos):
            raise BackupError("backup has duplicate members")
        if any(i.compress_type != zipfile.ZIP_STORED or i.flag_bits & 0x1 for i in infos):
            raise BackupError("backup has compressed or encrypted members; refused")
        try:
            doc = json.loads(self._small(MANIFEST, MAX_MANIFEST))
        except ValueError as exc:
            raise BackupError(f"backup manifest is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not is_version(doc.get("v"), 1):
            raise BackupError("not a version-1 whistle backup")
        try:
            self.entries = {e["name"]: TableEntry(e["name"], e["member"], e["columns"], e["rows"],
                                                  e["sha256"]) for e in doc["tables"]}
            self.blob_stats: tuple[int, int] = (doc["blobs"], doc["blob_bytes"])
            self.schema_revision: str | None = doc["schema_revision"]
            self.created_on: str = doc["created_on"]
            self.whistle_version: str = doc["whistle_version"]
            all_rows, secrets_sha = doc["rows_sha256"], doc["secrets_sha256"]
        except (KeyError, TypeError) as exc:
            raise BackupError(f"backup manifest is malformed: missing {exc}") from exc
        expected = {t.name: [c.name for c in t.columns] for t in self.tables}
        if set(self.entries) != set(expected):
            raise BackupError(f"backup tables {sorted(self.entries)} are not this version of whistle's "
                              f"{sorted(expected)}")
        for entry in self.entries.values():
            if (entry.member != member_name(entry.name) or type(entry.rows) is not int or entry.rows < 0
                    or not isinstance(entry.sha256, str) or not _HEX64.match(entry.sha256)):
                raise BackupError(f"backup manifest entry for table {entry.name} is malformed")
            if entry.columns != expected[entry.name]:
                raise BackupError(f"backup table {entry.name} has columns {entry.columns}; this "
                                  f"version of whistle has {expected[entry.name]}")
        if {i.filename for i in infos} != {MANIFEST, SECRETS} | {e.member for e in self.entries.values()}:
            raise BackupError("backup members do not match its manifest")
        if all_rows != rows_sha256([e.__dict__ for e in self.entries.values()]):
            raise BackupError("backup manifest's table hashes do not add up (damaged or altered)")
        raw = self._small(SECRETS, MAX_SECRETS)
        if hashlib.sha256(raw).hexdigest() != secrets_sha:
            raise BackupError("backup secrets.json does not match the manifest (damaged or altered)")
        self.secrets_doc = _secrets(raw)

    def _small(self, name: str, limit: int) -> bytes:
        try:
            if self._zip.getinfo(name).file_size > limit:
                raise BackupError(f"backup {name} is too large")
            return self._zip.read(name)
        except KeyError as exc:
            raise BackupError(f"backup has no {name}") from exc
        except (zipfile.BadZipFile, OSError) as exc:
            raise BackupError(f"backup {name} is unreadable: {exc}") from exc

    def rows(self, table: Table, blobs: BlobCheck) -> Iterator[tuple[dict[str, Any], int]]:
        """A table's rows, decoded, each with its size in the file. The member's row count and
        SHA-256 are checked at its end: a consumer that reaches the end read exactly what the
        manifest lists, or got a :class:`BackupError`."""
        entry, codec = self.entries[table.name], TableCodec(table)
        digest, count = hashlib.sha256(), 0
        try:
            # zipfile's own readline peeks a few bytes at a time: buffer it, a megabyte at once.
            member = cast(io.RawIOBase, self._zip.open(entry.member))  # it has readinto()
            with io.BufferedReader(member, buffer_size=1 << 20) as fh:
                while line := fh.readline(MAX_LINE + 1):
                    count += 1
                    if len(line) > MAX_LINE or not line.endswith(b"\n") or count > entry.rows:
                        raise BackupError(f"backup {entry.member} does not match the manifest at row {count}")
                    digest.update(line)
                    row = codec.decode(line)
                    blobs.feed(table.name, row)
                    yield row, len(line)
        except (zipfile.BadZipFile, OSError) as exc:  # a bad CRC shows up here
            raise BackupError(f"backup {entry.member} is damaged: {exc}") from exc
        if count != entry.rows or digest.hexdigest() != entry.sha256:
            raise BackupError(f"backup {entry.member} does not match the manifest (damaged or altered)")

    def validate(self) -> None:
        """Read and decode every row, check every hash and every blob; change nothing."""
        blobs = BlobCheck()
        for table in self.tables:
            for _ in self.rows(table, blobs):
                pass
        if blobs.finish() != self.blob_stats:
            raise BackupError("backup blob totals do not match the manifest")


def _secrets(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or "flask_secret_key" in doc:
            raise ValueError("unexpected contents")
        InstanceSecrets.from_json(json.dumps(doc | {"flask_secret_key": "checked"}))  # nosec B105 - a placeholder
    except (ValueError, InstanceError) as exc:
        raise BackupError(f"backup secrets.json is malformed: {exc}") from exc
    return doc
