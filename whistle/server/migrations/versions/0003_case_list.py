# SPDX-License-Identifier: AGPL-3.0-or-later
"""Case list: per-report counters (replies, new messages) and covering indexes.

The investigators' list showed, per case, the number of replies and of follow-up messages not yet
exported, and filtered "overdue" on "no reply yet": subqueries over ``items`` for every case.
Two counters on ``reports`` answer both; ``whistle.server.intake.add_item`` and
``whistle.server.export.export_bundle`` keep them current. The indexes let every (filter, sort) of the
list be answered from an index alone (docs/performance.md).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("replies", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("new_messages", sa.Integer, nullable=False, server_default="0"))
    op.execute("UPDATE reports SET "
               "replies = (SELECT count(*) FROM items "
               "WHERE items.report_id = reports.id AND items.kind = 'reply'), "
               "new_messages = (SELECT count(*) FROM items "
               "WHERE items.report_id = reports.id AND items.kind = 'message' "
               "AND items.exported = false)")
    with op.batch_alter_table("reports") as batch:
        batch.drop_index("ix_reports_status_received")
        batch.drop_index("ix_reports_received")
        batch.drop_index("ix_reports_updated")
        batch.create_index("ix_reports_status_received", ["status", "received_on", "id", "replies",
                                                            "updated_on"])
        batch.create_index("ix_reports_status_updated", ["status", "updated_on", "id"])
        batch.create_index("ix_reports_received", ["received_on", "id", "status"])
        batch.create_index("ix_reports_updated", ["updated_on", "id", "status"])


def downgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.drop_index("ix_reports_updated")
        batch.drop_index("ix_reports_received")
        batch.drop_index("ix_reports_status_updated")
        batch.drop_index("ix_reports_status_received")
        batch.create_index("ix_reports_status_received", ["status", "received_on", "id"])
        batch.create_index("ix_reports_received", ["received_on", "id"])
        batch.create_index("ix_reports_updated", ["updated_on", "id"])
        batch.drop_column("new_messages")
        batch.drop_column("replies")
