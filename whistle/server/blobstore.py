# SPDX-License-Identifier: AGPL-3.0-or-later
"""The blob store interface: where the ciphertext of envelopes and attachments lives.

Every caller (intake, casework, export, backup and restore, the source's follow-up pages) goes
through :class:`BlobStore`; only its implementation knows how blobs are kept. Today there is one,
:class:`whistle.server.storage.DatabaseBlobStore` (fixed-size chunks in the database, so a report
and its blobs are one transaction and one backup). A file or object-store backend is a second
implementation of this protocol, handed to :func:`whistle.server.db.make_sessionmaker`; callers
do not change.

Every method takes the caller's open transaction (an ORM ``Session`` or a Core ``Connection``):
a store writes in it and never commits, so a report and its blobs appear together or not at all.
Blobs go in and come out as iterators of bytes, never whole in memory.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

from whistle.core.files import StorageError

# The caller's open transaction, which a store writes in and never commits.
Transaction = Session | Connection
# Where a session (and its sessionmaker) keeps its store: see make_sessionmaker.
SESSION_INFO_KEY = "whistle.blob_store"


class BlobNotFoundError(StorageError):
    """No blob has this id (never written, deleted, or rolled back)."""


class BlobDamagedError(StorageError):
    """A blob's stored bytes do not add up to its recorded size: part of it is missing."""


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob: its random id (32 hex digits) and its size in bytes."""

    id: str
    size: int


class BlobStore(Protocol):
    """Ciphertext blobs, written and read as streams inside the caller's transaction."""

    @property
    def tables(self) -> frozenset[str]:
        """The database tables the store keeps to itself: a backup copies blobs through
        :meth:`list` and :meth:`read`, never as rows of these tables."""
        ...

    def write(self, tx: Transaction, pieces: Iterable[bytes]) -> BlobInfo:
        """Store a new blob from pieces of any size under a fresh random id; nothing committed.

        Raises :class:`whistle.server.storage.DiskFullError` if there is no room."""
        ...

    def restore(self, tx: Transaction, blob_id: str, pieces: Iterable[bytes]) -> BlobInfo:
        """Store a blob under a given id (a restore from backup); otherwise as :meth:`write`."""
        ...

    def read(self, tx: Transaction, blob_id: str) -> Iterator[bytes]:
        """The blob's bytes in order, a bounded piece at a time.

        Raises :class:`BlobNotFoundError` at once for an unknown id, and
        :class:`BlobDamagedError` while iterating if stored bytes are missing."""
        ...

    def size(self, tx: Transaction, blob_id: str) -> int:
        """The blob's size in bytes; raises :class:`BlobNotFoundError`."""
        ...

    def delete(self, tx: Transaction, blob_ids: Collection[str]) -> None:
        """Delete these blobs (unknown ids are ignored). The rows that referred to them must be
        gone already. Erasing freed space is the backend's duty (SQLite: ``secure_delete``)."""
        ...

    def list(self, tx: Transaction) -> Iterator[BlobInfo]:
        """Every blob, ordered by id in byte order (the order a backup writes them in)."""
        ...


def read_bytes(session: Session, blob_id: str) -> bytes:
    """A small blob (a sealed envelope) whole, in memory, from the session's store; attachments
    are streamed instead."""
    return b"".join(blob_store(session).read(session, blob_id))


def blob_store(session: Session) -> BlobStore:
    """The store of a session made by :func:`whistle.server.db.make_sessionmaker`.

    Fail closed: a session made some other way has no store, rather than silently writing
    blobs somewhere the configured backend would never find them."""
    store = session.info.get(SESSION_INFO_KEY)
    if store is None:
        raise StorageError("this database session has no blob store (use db.make_sessionmaker)")
    return store  # type: ignore[no-any-return]


def sessions_blob_store(sessions: sessionmaker[Session]) -> BlobStore:
    """The store every session of ``sessions`` uses (see :func:`blob_store`)."""
    with sessions() as session:
        return blob_store(session)
