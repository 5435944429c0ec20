# SPDX-License-Identifier: AGPL-3.0-or-later
"""The first schema: reports, items, attachments and ciphertext blobs in chunks.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
    )
    op.create_table(
        "blob_chunks",
        sa.Column("blob_id", sa.String(32), sa.ForeignKey("blobs.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "reports",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("received_on", sa.Date, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("sealed_by", sa.String(10), nullable=False),
        sa.Column("login_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("source_public_key", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("report_id", sa.String(32), sa.ForeignKey("reports.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("created_on", sa.Date, nullable=False),
        sa.Column("sealed_by", sa.String(10), nullable=False),
        sa.Column("exported", sa.Boolean, nullable=False),
        sa.Column("envelope_blob_id", sa.String(32), sa.ForeignKey("blobs.id"), nullable=False),
        sa.UniqueConstraint("report_id", "seq"),
    )
    op.create_table(
        "attachments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("item_id", sa.String(32), sa.ForeignKey("items.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("blob_id", sa.String(32), sa.ForeignKey("blobs.id"), nullable=False),
        sa.UniqueConstraint("item_id", "seq"),
    )


def downgrade() -> None:
    for table in ("attachments", "items", "reports", "blob_chunks", "blobs"):
        op.drop_table(table)
