# SPDX-License-Identifier: AGPL-3.0-or-later
"""Reply signature: the unit's Ed25519 signature stored with each reply.

Replies are now signed by the unit's signing key (``keys/unit-sign.pub``); the signature is stored
beside the sealed reply so the source's page can check it again before showing the reply. Replies
stored before this revision have none (NULL) and are never shown as the unit's: nothing proves
who wrote them (docs/security.md).

SQLite alters by copying the table: ``whistle.server.migrate`` turns foreign keys off around it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("signature", sa.LargeBinary(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("signature")
