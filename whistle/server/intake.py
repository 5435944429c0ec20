# SPDX-License-Identifier: AGPL-3.0-or-later
"""Filing a report, whatever the channel: store the sealed report, its envelope and attachments
under the source's login hash and public key, in one transaction.

:func:`file_report` is the one intake path. The caller supplies the source's keys: on the
JavaScript path the browser drew the passphrase and derived them (the server never sees the
passphrase or the seed, and runs no argon2); on the server-derived paths (the JavaScript-off form,
and later a command-line import or a chat bridge) :func:`file_derived_report` draws a passphrase,
derives under the gate, lets the caller seal the envelope with the derived keys, and files it.
Nothing here knows of HTTP: it raises :class:`whistle.core.errors.WhistleError` subclasses, and
each interface maps them to its own answer in one place (the web app's error handlers).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
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


class LoginTakenError(IntakeError):
    """The login hash is already stored: the passphrase behind it is another report's. Nothing
    was stored; the source draws a new passphrase and derives again."""


class BadSourceKeysError(IntakeError):
    """A login hash or source public key is not 32 bytes, or is all zeros; nothing was stored."""


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
    *,
    login_hash: bytes,
    source_public_key: bytes,
    sealed_envelope: bytes,
    attachments: Sequence[ChunkSource],
    channel: Channel,
) -> str:
    """File one sealed report under ``login_hash`` (SHA-256 of the login key) and the source's
    X25519 ``source_public_key``, recording its ``channel``; return the report id.

    ``sealed_envelope`` and ``attachments`` are ciphertext already, sealed by the browser or by
    the channel's own code; this function never sees a plaintext, a passphrase or a secret key.
    Raises, with nothing stored: :class:`LoginTakenError` when the login hash is already stored,
    :class:`BadSourceKeysError` when a key is malformed. Database errors propagate unchanged (the
    web app tells "unavailable" from a bug).
    """
    for value in (login_hash, source_public_key):
        if len(value) != 32 or not any(value):
            raise BadSourceKeysError("a login hash and a source key are 32 bytes, not all zero")
    try:
        return store_report(sessions, login_hash=login_hash, source_public_key=source_public_key,
                            sealed_envelope=sealed_envelope, attachments=attachments,
                            channel=channel)
    except IntegrityError as exc:
        if is_duplicate_login(exc):
            # The transaction was rolled back: nothing of this report is stored.
            raise LoginTakenError("this login hash belongs to a stored report") from None
        raise


@dataclass(frozen=True)
class SealedItem:
    """One item sealed by its channel: the envelope sealed to the unit key and its attachments."""

    sealed_envelope: bytes
    attachments: Sequence[ChunkSource] = ()


def file_report_with_messages(
    sessions: sessionmaker[Session],
    *,
    login_hash: bytes,
    source_public_key: bytes,
    report: SealedItem,
    messages: Sequence[SealedItem],
    channel: Channel,
) -> str:
    """:func:`file_report` for a channel that sealed a report and its first follow-up messages
    before filing (the WhatsApp bridge seals each chat message as it arrives, as item 1, 2, 3 …
    of the case): all of them in one transaction, the messages as items 2, 3 … in the order
    given, each recording ``channel``. Same errors as :func:`file_report`, nothing stored."""
    for value in (login_hash, source_public_key):
        if len(value) != 32 or not any(value):
            raise BadSourceKeysError("a login hash and a source key are 32 bytes, not all zero")
    try:
        return store_report(sessions, login_hash=login_hash, source_public_key=source_public_key,
                            sealed_envelope=report.sealed_envelope, attachments=report.attachments,
                            channel=channel, messages=messages)
    except IntegrityError as exc:
        if is_duplicate_login(exc):
            raise LoginTakenError("this login hash belongs to a stored report") from None
        raise


def file_derived_report(
    sessions: sessionmaker[Session],
    gate: DerivationGate,
    params: Argon2Params,
    *,
    seal: Callable[[SourceKeys], bytes],
    attachments: Sequence[ChunkSource],
    channel: Channel,
    language: Language,
) -> Receipt:
    """The server-derived path: issue a passphrase in ``language``, derive its keys (under the
    gate), seal the envelope with ``seal(keys)`` (which binds it to the keys' case tag and public
    key), and file it; return the receipt (the passphrase is shown once, never stored).

    A passphrase already in use (its login hash is taken) is replaced by a fresh one and the
    envelope sealed again, at most :data:`PASSPHRASE_ATTEMPTS` times. Raises, with nothing stored:
    :class:`whistle.core.passphrase.GateBusyError` when every argon2 slot stays taken (busy: try
    again shortly), :class:`PassphraseCollisionError` when every passphrase tried was taken;
    whatever ``seal`` raises propagates.
    """
    for _attempt in range(PASSPHRASE_ATTEMPTS):
        phrase, keys = new_passphrase(gate, params, language)
        try:
            report_id = file_report(sessions, login_hash=keys.login_hash,
                                    source_public_key=keys.public_key_bytes,
                                    sealed_envelope=seal(keys), attachments=attachments,
                                    channel=channel)
        except LoginTakenError:
            continue  # try a fresh passphrase
        return Receipt(report_id=report_id, passphrase=phrase, channel=channel)
    raise PassphraseCollisionError(
        f"{PASSPHRASE_ATTEMPTS} fresh passphrases in a row were already in use; nothing was stored")


def store_report(
    sessions: sessionmaker[Session],
    *,
    login_hash: bytes,
    source_public_key: bytes,
    sealed_envelope: bytes,
    attachments: Iterable[ChunkSource],
    channel: Channel,
    messages: Sequence[SealedItem] = (),
) -> str:
    """Write the report, its sealed envelope and attachment streams (and ``messages``, items
    2, 3 …) in one transaction.

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
            login_hash=login_hash,
            source_public_key=source_public_key,
        )
        session.add(report)
        add_item(session, report, seq=1, kind=ItemKind.REPORT, sealed_envelope=sealed_envelope,
                 attachments=attachments, channel=channel)
        for seq, message in enumerate(messages, 2):
            add_item(session, report, seq=seq, kind=ItemKind.MESSAGE,
                     sealed_envelope=message.sealed_envelope, attachments=message.attachments,
                     channel=channel)
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
    """Whether an IntegrityError came from the unique login hash (a 1-in-2^91 event for a fresh
    passphrase; on the JavaScript path also a client that files twice with the same keys)."""
    return "login_hash" in str(exc.orig)
