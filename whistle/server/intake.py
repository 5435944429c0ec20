# SPDX-License-Identifier: AGPL-3.0-or-later
"""Storing a new report: one transaction holding the report, its envelope and attachments."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from whistle.core.crypto import random_id
from whistle.core.passphrase import Argon2Params, DerivationGate, SourceKeys, generate
from whistle.server.models import Attachment, Item, Report
from whistle.server.storage import write_blob


class ChunkSource(Protocol):
    def iter_chunks(self) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class Receipt:
    """What the source is shown once: the passphrase. Never stored."""

    report_id: str
    passphrase: str


def today() -> dt.date:
    """The current date in UTC: the only time whistle records, at day granularity."""
    return dt.datetime.now(dt.UTC).date()


def new_passphrase(gate: DerivationGate, params: Argon2Params, lang: str) -> tuple[str, SourceKeys]:
    """Generate a passphrase and derive its keys (under the gate: argon2 holds much memory)."""
    phrase = generate(lang)
    return phrase, gate.derive(phrase, params)


def store_report(
    sessions: sessionmaker[Session],
    *,
    keys: SourceKeys,
    sealed_envelope: bytes,
    attachments: Iterable[ChunkSource],
    sealed_by: str,
) -> str:
    """Write the report, its sealed envelope and attachment streams in one transaction.

    Either everything is committed or nothing is: a crash or error midway leaves no row.
    Raises :class:`sqlalchemy.exc.IntegrityError` if the login hash already exists.
    """
    day = today()
    with sessions.begin() as session:
        report = Report(
            id=random_id(),
            received_on=day,
            status="received",
            updated_on=day,
            sealed_by=sealed_by,
            login_hash=keys.login_hash,
            source_public_key=keys.public_key_bytes,
        )
        session.add(report)
        add_item(session, report, seq=1, kind="report", sealed_envelope=sealed_envelope,
                 attachments=attachments, sealed_by=sealed_by)
        return report.id


def add_item(
    session: Session,
    report: Report,
    *,
    seq: int,
    kind: str,
    sealed_envelope: bytes,
    attachments: Iterable[ChunkSource],
    sealed_by: str,
) -> Item:
    """Add one item (report, message or reply) with its blobs to an open transaction."""
    envelope_blob = write_blob(session, [sealed_envelope])
    item = Item(id=random_id(), seq=seq, kind=kind, created_on=today(),
                sealed_by=sealed_by, exported=False, envelope_blob_id=envelope_blob.id)
    # Through the relationship, so the report's item list is current within the transaction.
    report.items.append(item)
    # The case list's counters (models.Report), kept here, where every item is added. A stored
    # report is incremented in SQL (SET replies = replies + 1): two requests adding to the same
    # case at once cannot lose one.
    counter = {"reply": "replies", "message": "new_messages"}.get(kind)
    if counter is not None:
        if inspect(report).persistent:
            setattr(report, counter, getattr(Report, counter) + 1)
        else:
            setattr(report, counter, (getattr(report, counter) or 0) + 1)
    session.flush()
    for index, source in enumerate(attachments):
        blob = write_blob(session, source.iter_chunks())
        session.add(Attachment(id=random_id(), item_id=item.id, seq=index, blob_id=blob.id))
        session.flush()
    return item


def is_duplicate_login(exc: IntegrityError) -> bool:
    """Whether an IntegrityError came from the unique login hash (a 1-in-2^91 event)."""
    return "login_hash" in str(exc.orig)
