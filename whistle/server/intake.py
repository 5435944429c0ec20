# SPDX-License-Identifier: AGPL-3.0-or-later
"""Filing a report, whatever the channel: issue a receipt passphrase and store the sealed report,
its envelope and attachments in one transaction.

:func:`file_report` is the one intake path. The JavaScript-off form, the browser's JSON API (and
later a command-line import or a chat bridge) seal the report their own way, then all call it. It
knows nothing of HTTP: it raises :class:`whistle.core.errors.WhistleError` subclasses, and each
interface maps them to its own answer in one place (the web app's error handlers: 503, 500).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from whistle.core.crypto import random_id
from whistle.core.enums import Channel, ItemKind, Language, Status
from whistle.core.errors import WhistleError
from whistle.core.passphrase import Argon2Params, DerivationGate, SourceKeys, generate
from whistle.server.blobstore import blob_store
from whistle.server.models import Attachment, Item, Report

# A fresh passphrase collides with a stored one once in 2^91; three in a row means something
# else is wrong (a broken random source), and filing must stop rather than loop.
PASSPHRASE_ATTEMPTS = 3


class ChunkSource(Protocol):
    """An attachment's ciphertext, readable as chunks (more than once: a retry reads it again)."""

    def iter_chunks(self) -> Iterator[bytes]: ...


class IntakeError(WhistleError):
    """A report could not be filed; nothing of it was stored."""


class PassphraseCollisionError(IntakeError):
    """Every fresh passphrase tried already belonged to a stored report (a 1-in-2^91 event, so in
    practice a broken random source); nothing was stored."""


@dataclass(frozen=True)
class Receipt:
    """What the source is shown once: the passphrase (never stored; kept out of ``repr`` so it
    cannot reach a log line by accident), and what was recorded."""

    report_id: str
    passphrase: str = field(repr=False)
    channel: Channel


def today() -> dt.date:
    """The current date in UTC: the only time whistle records, at day granularity."""
    return dt.datetime.now(dt.UTC).date()


def new_passphrase(gate: DerivationGate, params: Argon2Params, lang: Language
                   ) -> tuple[str, SourceKeys]:
    """Generate a passphrase and derive its keys (under the gate: argon2 holds much memory).

    Raises :class:`whistle.core.passphrase.GateBusyError` when no derivation slot frees in time.
    """
    phrase = generate(lang.value)
    return phrase, gate.derive(phrase, params)


def file_report(
    sessions: sessionmaker[Session],
    gate: DerivationGate,
    params: Argon2Params,
    *,
    sealed_envelope: bytes,
    attachments: Sequence[ChunkSource],
    channel: Channel,
    language: Language,
) -> Receipt:
    """File one sealed report: issue a passphrase in ``language``, store the report under it with
    its ``channel``; return the receipt (the passphrase is shown once, never stored).

    ``sealed_envelope`` and ``attachments`` are ciphertext already, sealed by the browser or by the
    channel's own code; this function never sees a plaintext. Raises, with nothing stored:
    :class:`whistle.core.passphrase.GateBusyError` when every argon2 slot stays taken (busy: try
    again shortly), :class:`PassphraseCollisionError` when every passphrase tried was taken.
    Database errors propagate unchanged (the web app tells "unavailable" from a bug).
    """
    for _attempt in range(PASSPHRASE_ATTEMPTS):
        phrase, keys = new_passphrase(gate, params, language)
        try:
            report_id = store_report(sessions, keys=keys, sealed_envelope=sealed_envelope,
                                     attachments=attachments, channel=channel)
        except IntegrityError as exc:
            if is_duplicate_login(exc):
                continue  # the transaction was rolled back: try a fresh passphrase
            raise
        return Receipt(report_id=report_id, passphrase=phrase, channel=channel)
    raise PassphraseCollisionError(
        f"{PASSPHRASE_ATTEMPTS} fresh passphrases in a row were already in use; nothing was stored")


def store_report(
    sessions: sessionmaker[Session],
    *,
    keys: SourceKeys,
    sealed_envelope: bytes,
    attachments: Iterable[ChunkSource],
    channel: Channel,
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
            # Plain text into the columns: a driver may dump an enum by name (psycopg does for Enum).
            status=Status.RECEIVED.value,
            updated_on=day,
            channel=Channel(channel).value,
            login_hash=keys.login_hash,
            source_public_key=keys.public_key_bytes,
        )
        session.add(report)
        add_item(session, report, seq=1, kind=ItemKind.REPORT, sealed_envelope=sealed_envelope,
                 attachments=attachments, channel=channel)
        return report.id


def add_item(
    session: Session,
    report: Report,
    *,
    seq: int,
    kind: ItemKind,
    sealed_envelope: bytes,
    attachments: Iterable[ChunkSource],
    channel: Channel | None,
) -> Item:
    """Add one item (report, message or reply) with its blobs to an open transaction.

    ``channel`` is how a source's item arrived; a reply (from the unit, not through intake) has none.
    """
    # Checked against the vocabularies: an unknown kind or channel fails before anything is written.
    kind, channel = ItemKind(kind), Channel(channel) if channel is not None else None
    blobs = blob_store(session)
    envelope_blob = blobs.write(session, [sealed_envelope])
    item = Item(id=random_id(), seq=seq, kind=kind.value, created_on=today(),
                channel=channel.value if channel is not None else None, exported=False,
                envelope_blob_id=envelope_blob.id)
    # Through the relationship, so the report's item list is current within the transaction.
    report.items.append(item)
    # The case list's counters (models.Report), kept here, where every item is added. A stored
    # report is incremented in SQL (SET replies = replies + 1): two requests adding to the same
    # case at once cannot lose one.
    counter = {ItemKind.REPLY: "replies", ItemKind.MESSAGE: "new_messages"}.get(kind)
    if counter is not None:
        if inspect(report).persistent:
            setattr(report, counter, getattr(Report, counter) + 1)
        else:
            setattr(report, counter, (getattr(report, counter) or 0) + 1)
    session.flush()
    for index, source in enumerate(attachments):
        blob = blobs.write(session, source.iter_chunks())
        session.add(Attachment(id=random_id(), item_id=item.id, seq=index, blob_id=blob.id))
        session.flush()
    return item


def is_duplicate_login(exc: IntegrityError) -> bool:
    """Whether an IntegrityError came from the unique login hash (a 1-in-2^91 event)."""
    return "login_hash" in str(exc.orig)
