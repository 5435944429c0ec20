# SPDX-License-Identifier: AGPL-3.0-or-later
"""Channel: how a report or message came in, instead of who sealed it.

``sealed_by`` had two values for a source's items ("browser", "server") and "unit" for replies.
Every intake channel now files through ``whistle.server.intake.file_report`` and is recorded as a
``channel`` (``whistle.core.enums.Channel``): browser → ``browser``, server → ``server-form``; a
reply, which does not come in through intake, has none (NULL on ``items``).

SQLite alters by copying the table: ``whistle.server.migrate`` turns foreign keys off around it
(as for 0002 and 0003), so copying ``reports`` and ``items`` cascades nothing.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The mapping is written out in the SQL below, not taken from whistle.core.enums: a migration
# must not change when the application's enums do.


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("channel", sa.String(16), nullable=True))
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("channel", sa.String(16), nullable=True))
    op.execute("UPDATE reports SET channel = CASE sealed_by WHEN 'browser' THEN 'browser' "
               "WHEN 'server' THEN 'server-form' ELSE NULL END")
    # A reply ("unit") came from the workstation, not through intake: no channel.
    op.execute("UPDATE items SET channel = CASE sealed_by WHEN 'browser' THEN 'browser' "
               "WHEN 'server' THEN 'server-form' ELSE NULL END")
    # A report whose sealed_by was neither value cannot exist (the code wrote only those two);
    # were one there, NOT NULL below fails the whole migration rather than guess (fail closed).
    with op.batch_alter_table("reports") as batch:
        batch.alter_column("channel", existing_type=sa.String(16), nullable=False)
        batch.drop_column("sealed_by")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("sealed_by")


def downgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("sealed_by", sa.String(10), nullable=True))
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("sealed_by", sa.String(10), nullable=True))
    # Any channel but the browser was sealed by the server; a reply was sealed by the unit.
    op.execute("UPDATE reports SET sealed_by = "
               "CASE WHEN channel = 'browser' THEN 'browser' ELSE 'server' END")
    op.execute("UPDATE items SET sealed_by = CASE WHEN kind = 'reply' THEN 'unit' "
               "WHEN channel = 'browser' THEN 'browser' ELSE 'server' END")
    with op.batch_alter_table("reports") as batch:
        batch.alter_column("sealed_by", existing_type=sa.String(10), nullable=False)
        batch.drop_column("channel")
    with op.batch_alter_table("items") as batch:
        batch.alter_column("sealed_by", existing_type=sa.String(10), nullable=False)
        batch.drop_column("channel")
