# SPDX-License-Identifier: AGPL-3.0-or-later
"""Follow-up and investigators: case dates and outcome, accounts, the audit log, list indexes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("outcome", sa.String(32), nullable=True))
        batch.add_column(sa.Column("acknowledged_on", sa.Date, nullable=True))
        batch.add_column(sa.Column("updated_on", sa.Date, nullable=True))
    # Existing cases were last updated the day they arrived.
    op.execute("UPDATE reports SET updated_on = received_on")
    with op.batch_alter_table("reports") as batch:
        batch.alter_column("updated_on", existing_type=sa.Date, nullable=False)
        # The investigators' list filters by status and sorts by date: 100,000 cases stay fast.
        batch.create_index("ix_reports_status_received", ["status", "received_on", "id"])
        batch.create_index("ix_reports_received", ["received_on", "id"])
        batch.create_index("ix_reports_updated", ["updated_on", "id"])
    op.create_index("ix_items_report_kind", "items", ["report_id", "kind", "exported"])

    op.create_table(
        "investigators",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("totp_secret", sa.String(64), nullable=False),
        sa.Column("totp_last_step", sa.Integer, nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("session_version", sa.Integer, nullable=False),
        sa.Column("created_on", sa.Date, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("report_id", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("investigators")
    op.drop_index("ix_items_report_kind", "items")
    with op.batch_alter_table("reports") as batch:
        batch.drop_index("ix_reports_updated")
        batch.drop_index("ix_reports_received")
        batch.drop_index("ix_reports_status_received")
        batch.drop_column("updated_on")
        batch.drop_column("acknowledged_on")
        batch.drop_column("outcome")
