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
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

STATUSES = ("received", "acknowledged", "investigating", "closed")
SEALED_BY = ("browser", "server")
ITEM_KINDS = ("report", "message", "reply")


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
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    received_on: Mapped[dt.date] = mapped_column(Date, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="received")
    sealed_by: Mapped[str] = mapped_column(String(10), nullable=False)
    # SHA-256 of the login key derived from the passphrase: one indexed lookup per login.
    login_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False, unique=True)
    source_public_key: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    items: Mapped[list[Item]] = relationship(
        back_populates="report", cascade="all, delete-orphan", order_by="Item.seq"
    )


class Item(Base):
    """A sealed envelope (report, follow-up message or reply) and its attachments."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("report_id", "seq"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    report_id: Mapped[str] = mapped_column(
        ForeignKey("reports.id", ondelete="CASCADE"), nullable=False, index=True
    )
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    created_on: Mapped[dt.date] = mapped_column(Date, nullable=False)
    sealed_by: Mapped[str] = mapped_column(String(10), nullable=False)
    exported: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    envelope_blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"), nullable=False)
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
