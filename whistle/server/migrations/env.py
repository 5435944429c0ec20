# SPDX-License-Identifier: AGPL-3.0-or-later
"""Alembic environment: always driven from whistle.server.migrate with a live connection."""

from __future__ import annotations

from alembic import context

from whistle.server.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through 'whistle upgrade', which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things: batch mode copies the table, inside the transaction.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
