# SPDX-License-Identifier: AGPL-3.0-or-later
"""Schema migrations with Alembic: ``whistle init`` and ``whistle upgrade`` bring any database,
SQLite or PostgreSQL, to the current schema inside one transaction."""

from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from whistle.core.errors import WhistleError

HEAD = "head"


class MigrationError(WhistleError):
    """The database cannot be brought to the current schema safely."""


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", "whistle.server:migrations")
    return cfg


def head_revision() -> str:
    """The newest revision this version of whistle knows."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None  # noqa: S101 - the package always ships revisions
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: empty, never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_database(engine: Engine, revision: str = HEAD) -> None:
    """Apply every migration up to ``revision`` (idempotent)."""
    current = current_revision(engine)
    if revision == HEAD and current == head_revision():
        return
    if current is None and inspect(engine).get_table_names():
        # Tables but no migration history: made by a pre-release that had no migrations, or not
        # a whistle database at all. Refuse rather than guess.
        raise MigrationError("the database has tables but no migration history; it was not made "
                             "by this version of whistle. Restore a backup into an empty database.")
    cfg = _alembic_config()
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # SQLite alters a table by copying it and dropping the old one; with foreign keys on,
            # that DROP would cascade and delete every item of every report. The pragma only
            # takes effect outside a transaction, hence before begin().
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left dangling references: {broken[:3]}")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
