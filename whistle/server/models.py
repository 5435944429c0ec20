# SPDX-License-Identifier: AGPL-3.0-or-later
"""Database models (SQLAlchemy 2). What a seized database reveals is exactly what is here.

No column holds text a source wrote, a passphrase, an address, a User-Agent or a time of day:
dates are ``Date`` (day granularity), identifiers are random (they reveal no order), and every
report, message and attachment is a ciphertext blob stored as fixed-size chunks.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from whistle.core.enums import Status

# The vocabularies of status, outcome, kind and channel columns are whistle.core.enums (Status,
# Outcome, ItemKind, Channel); the columns hold their values as plain text.


class Base(DeclarativeBase):
    pass


class Blob(Base):
    """One ciphertext: a sealed envelope or an encrypted attachment stream."""

    __tablename__ = "blobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    # No ORM relationship to the chunks on purpose: loading them would pull a whole blob into
    # memory. storage.py streams them one by one; the database cascades their deletion.


class BlobChunk(Base):
    __tablename__ = "blob_chunks"
    blob_id: Mapped[str] = mapped_column(
        ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class Report(Base):
    """A case: one source, one passphrase, the items that went back and forth."""

    __tablename__ = "reports"
    # The investigators' list filters by status (and "overdue": open, old, no reply) and sorts by
    # a date: each (filter, sort) is answered from one of these indexes alone, without reading the
    # table, so 100,000 cases stay fast (migration 0003, docs/performance.md).
    __table_args__ = (
        Index("ix_reports_status_received", "status", "received_on", "id", "replies", "updated_on"),
        Index("ix_reports_status_updated", "status", "updated_on", "id"),
        Index("ix_reports_received", "received_on", "id", "status"),
        Index("ix_reports_updated", "updated_on", "id", "status"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    received_on: Mapped[dt.date] = mapped_column(Date, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default=Status.RECEIVED.value)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    acknowledged_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    # The last day anything happened on the case (status, reply, message), shown to the source.
    updated_on: Mapped[dt.date] = mapped_column(Date, nullable=False)
    # How the report came in (core.enums.Channel): shown to the unit, exported in the manifest.
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    # SHA-256 of the login key derived from the passphrase: one indexed lookup per login.
    login_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False, unique=True)
    source_public_key: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    # Counters for the case list, so it needs no subquery over items per case. Changed only where
    # items are added (intake.add_item) and marked exported (export.export_bundle).
    replies: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    new_messages: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    items: Mapped[list[Item]] = relationship(
        back_populates="report", cascade="all, delete-orphan", order_by="Item.seq"
    )


class Item(Base):
    """A sealed envelope (report, follow-up message or reply) and its attachments."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("report_id", "seq"),
        Index("ix_items_report_kind", "report_id", "kind", "exported"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    report_id: Mapped[str] = mapped_column(
        ForeignKey("reports.id", ondelete="CASCADE"), nullable=False, index=True
    )
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    created_on: Mapped[dt.date] = mapped_column(Date, nullable=False)
    # How a source's report or message came in; None for a reply (the unit's, not intake).
    channel: Mapped[str | None] = mapped_column(String(16), nullable=True)
    exported: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    envelope_blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"), nullable=False)
    # A reply's detached Ed25519 signature by the unit's signing key (whistle.core.replies):
    # checked on import and again before the source is shown the reply. None for a source's
    # items, and for a reply stored before replies were signed (never shown as the unit's).
    signature: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    report: Mapped[Report] = relationship(back_populates="items")
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="item", cascade="all, delete-orphan", order_by="Attachment.seq"
    )


class Attachment(Base):
    """An encrypted attachment stream; its name and type live only inside the envelope."""

    __tablename__ = "attachments"
    __table_args__ = (UniqueConstraint("item_id", "seq"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    item_id: Mapped[str] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), nullable=False, index=True
    )
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"), nullable=False)
    item: Mapped[Item] = relationship(back_populates="attachments")


class Investigator(Base):
    """An investigator or admin account. Investigators are not anonymous; sources are."""

    __tablename__ = "investigators"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(String(200), nullable=False)
    totp_secret: Mapped[str] = mapped_column(String(64), nullable=False)
    # The last TOTP time step accepted: a code is never accepted twice.
    totp_last_step: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    is_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Bumped on disable, password or 2FA reset: every session issued before is void.
    session_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_on: Mapped[dt.date] = mapped_column(Date, nullable=False)


class AuditEntry(Base):
    """One investigator or admin action; each entry hashes the one before it.

    ``at`` is to the minute: it records when an investigator acted, which is accountability, and
    never when a source did anything.
    """

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(40), nullable=False)
    report_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="")
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)

