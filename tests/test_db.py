# SPDX-License-Identifier: AGPL-3.0-or-later
"""The SQLite files are private whatever the umask, and a WAL checkpoint leaves no old pages.

These tests always use SQLite (the behaviour is SQLite's), also on the run with PostgreSQL.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from whistle import create_app
from whistle.server.config import load_config
from whistle.server.db import checkpoint_wal, make_engine
from whistle.server.instance import load_or_create_secrets


@pytest.fixture
def umask() -> Iterator[None]:
    """Restores the process umask whatever a test sets it to."""
    old = os.umask(0o077)
    os.umask(old)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_db_sqlite_files_private_whatever_umask(environ: dict[str, str], tmp_path: Path,
                                                umask: None, mask: int) -> None:
    env = {k: v for k, v in environ.items() if k != "WHISTLE_DATABASE_URL"}
    os.umask(mask)
    cfg = load_config(env, cwd=tmp_path)
    load_or_create_secrets(cfg, time_cost=1, memory_cost_kib=8)
    app = create_app(cfg)  # creates the database and migrates it: the WAL and -shm exist now
    engine = app.extensions["whistle"].engine
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE canary (x TEXT)"))
            conn.execute(text("INSERT INTO canary VALUES ('written under a loose umask')"))
        database = Path(engine.url.database or "")
        files = [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]
        assert all(f.exists() for f in files), files
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert _mode(cfg.data_dir) == 0o700
    finally:
        engine.dispose()


def test_db_existing_sqlite_file_is_tightened(tmp_path: Path, umask: None) -> None:
    os.umask(0o022)
    path = tmp_path / "old.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # as an older install left it
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    engine.dispose()
    path.chmod(0o644)
    engine = make_engine(f"sqlite:///{path}")
    try:
        assert _mode(path) == 0o600
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
    finally:
        engine.dispose()


def test_db_checkpoint_wal_truncates_and_leaves_no_deleted_bytes(tmp_path: Path) -> None:
    path = tmp_path / "wal.sqlite3"
    canary = os.urandom(24).hex().encode()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x BLOB)"))
            conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": canary * 200})
        wal = path.with_name(path.name + "-wal")
        assert canary in wal.read_bytes()  # the insert went to the WAL first
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM t"))
        assert checkpoint_wal(engine)
        assert wal.stat().st_size == 0
        leftovers = [p.name for p in tmp_path.iterdir() if p.is_file() and canary in p.read_bytes()]
        assert leftovers == []
    finally:
        engine.dispose()
