# SPDX-License-Identifier: AGPL-3.0-or-later
"""Alembic migrations: an empty database reaches the models' schema, and an old database holding
data is upgraded and read back — on SQLite and, in the second CI run, on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, delete, insert
from support import Workstation, export_and_decrypt, report_folders, source_login

from whistle import cli, create_app
from whistle.core.crypto import AttachmentRef, Envelope, encrypt_stream, new_stream_key, seal_envelope
from whistle.core.passphrase import derive, generate
from whistle.server.config import Config
from whistle.server.db import make_engine
from whistle.server.instance import load_or_create_secrets
from whistle.server.migrate import current_revision, head_revision, upgrade_database
from whistle.server.models import Base, Item
from whistle.server.storage import BLOB_CHUNK_SIZE


def test_migrate_empty_database_reaches_model_schema(config: Config) -> None:
    engine = make_engine(config.database_url)
    assert current_revision(engine) is None
    upgrade_database(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                 Base.metadata)
    assert diffs == []
    upgrade_database(engine)  # idempotent
    engine.dispose()


def test_migrate_old_database_with_data_upgrades_and_reads_back(
    config: Config, workstation: Workstation, tmp_path: Path
) -> None:
    """A database from the first release (revision 0001), holding a report with an attachment,
    is upgraded to the current schema; the unit still decrypts it and the source still logs in."""
    secrets = load_or_create_secrets(config)
    engine = make_engine(config.database_url)
    upgrade_database(engine, "0001")
    assert current_revision(engine) == "0001"

    phrase = generate("es")
    keys = derive(phrase, secrets.argon2)
    data = os.urandom(BLOB_CHUNK_SIZE + 1000)  # two database chunks
    key = new_stream_key()
    stream = io.BytesIO()
    encrypt_stream(io.BytesIO(data), stream, key)
    cipher = stream.getvalue()
    sealed = seal_envelope(Envelope(kind="report", category="corruption", body="Informe antiguo",
                                    attachments=(AttachmentRef("viejo.pdf", "application/pdf",
                                                               len(data), key),)),
                           workstation.secret_key.public_key)
    day = dt.date(2026, 1, 15)
    old = MetaData()
    old.reflect(engine)
    t = {name: Table(name, old) for name in ("blobs", "blob_chunks", "reports", "items", "attachments")}
    with engine.begin() as conn:
        conn.execute(insert(t["blobs"]), [{"id": "b" * 32, "size": len(sealed)},
                                          {"id": "c" * 32, "size": len(cipher)}])
        conn.execute(insert(t["blob_chunks"]), [
            {"blob_id": "b" * 32, "seq": 0, "data": sealed},
            {"blob_id": "c" * 32, "seq": 0, "data": cipher[:BLOB_CHUNK_SIZE]},
            {"blob_id": "c" * 32, "seq": 1, "data": cipher[BLOB_CHUNK_SIZE:]}])
        conn.execute(insert(t["reports"]), [{
            "id": "0123456789abcdef", "received_on": day, "status": "received", "sealed_by": "server",
            "login_hash": keys.login_hash, "source_public_key": keys.public_key_bytes}])
        conn.execute(insert(t["items"]), [{
            "id": "1" * 16, "report_id": "0123456789abcdef", "seq": 1, "kind": "report",
            "created_on": day, "sealed_by": "server", "exported": False, "envelope_blob_id": "b" * 32}])
        conn.execute(insert(t["attachments"]), [{
            "id": "2" * 16, "item_id": "1" * 16, "seq": 0, "blob_id": "c" * 32}])
    engine.dispose()

    app = create_app(config)  # upgrades on start
    state = app.extensions["whistle"]
    assert current_revision(state.engine) == head_revision()
    out = export_and_decrypt(app, workstation, tmp_path)
    (folder,) = report_folders(out)
    assert "Informe antiguo" in (folder / "report.txt").read_text(encoding="utf-8")
    assert (folder / "attachments" / "viejo.pdf").read_bytes() == data
    client = app.test_client()
    assert source_login(client, phrase).status_code == 302
    html = client.get("/case?lang=en").get_data(as_text=True)
    assert "2026-01-15" in html  # updated_on was filled from received_on


def test_migrate_0003_backfills_case_list_counters(config: Config) -> None:
    """A database at 0002 holding a report with 2 replies and 3 follow-up messages (1 of them
    exported) gets replies = 2 and new_messages = 2 from migration 0003; a report with no
    follow-up gets 0 and 0."""
    engine = make_engine(config.database_url)
    upgrade_database(engine, "0002")
    old = MetaData()
    old.reflect(engine)
    t = {name: Table(name, old) for name in ("blobs", "blob_chunks", "reports", "items")}
    day = dt.date(2026, 3, 2)
    kinds = [("report", True), ("message", True), ("reply", False), ("message", False),
             ("reply", False), ("message", False)]
    with engine.begin() as conn:
        conn.execute(insert(t["blobs"]), [{"id": "b" * 32, "size": 4}])
        conn.execute(insert(t["blob_chunks"]), [{"blob_id": "b" * 32, "seq": 0, "data": b"\0" * 4}])
        conn.execute(insert(t["reports"]), [
            {"id": rid, "received_on": day, "updated_on": day, "status": "received",
             "sealed_by": "server", "login_hash": bytes([n]) * 32, "source_public_key": b"k" * 32}
            for n, rid in enumerate(("a" * 16, "c" * 16))])
        conn.execute(insert(t["items"]), [
            {"id": f"{seq:016x}", "report_id": "a" * 16, "seq": seq, "kind": kind,
             "created_on": day, "sealed_by": "unit" if kind == "reply" else "server",
             "exported": exported, "envelope_blob_id": "b" * 32}
            for seq, (kind, exported) in enumerate(kinds, 1)] + [
            {"id": "f" * 16, "report_id": "c" * 16, "seq": 1, "kind": "report", "created_on": day,
             "sealed_by": "server", "exported": False, "envelope_blob_id": "b" * 32}])
    upgrade_database(engine)
    assert current_revision(engine) == head_revision()
    new = MetaData()
    new.reflect(engine)
    reports = Table("reports", new)
    with engine.connect() as conn:
        got = dict((r.id, (r.replies, r.new_messages)) for r in conn.execute(
            reports.select().with_only_columns(reports.c.id, reports.c.replies,
                                               reports.c.new_messages)))
    assert got == {"a" * 16: (2, 2), "c" * 16: (0, 0)}
    engine.dispose()


def test_migrate_0004_replaces_sealed_by_with_channel(
    config: Config, workstation: Workstation, tmp_path: Path
) -> None:
    """A database at 0003 holding a server-sealed report with a message and a reply, and a
    browser-sealed report, gets channel server-form / browser from migration 0004 (a reply: none),
    loses sealed_by, and the stored report still exports, decrypts and says its channel."""
    engine = make_engine(config.database_url)
    upgrade_database(engine, "0003")
    old = MetaData()
    old.reflect(engine)
    t = {name: Table(name, old) for name in ("blobs", "blob_chunks", "reports", "items")}
    sealed = seal_envelope(Envelope(kind="report", category="corruption", body="Informe de 0003"),
                           workstation.secret_key.public_key)
    day = dt.date(2026, 4, 1)
    with engine.begin() as conn:
        conn.execute(insert(t["blobs"]), [{"id": "b" * 32, "size": len(sealed)}])
        conn.execute(insert(t["blob_chunks"]), [{"blob_id": "b" * 32, "seq": 0, "data": sealed}])
        conn.execute(insert(t["reports"]), [
            {"id": rid, "received_on": day, "updated_on": day, "status": "received",
             "sealed_by": sealed_by, "login_hash": bytes([n]) * 32, "source_public_key": b"k" * 32,
             "replies": 0, "new_messages": 0}
            for n, (rid, sealed_by) in enumerate((("a" * 16, "server"), ("c" * 16, "browser")))])
        conn.execute(insert(t["items"]), [
            {"id": f"{seq:016x}", "report_id": "a" * 16, "seq": seq, "kind": kind, "created_on": day,
             "sealed_by": sealed_by, "exported": False, "envelope_blob_id": "b" * 32}
            for seq, kind, sealed_by in ((1, "report", "server"), (2, "message", "browser"),
                                         (3, "reply", "unit"))] + [
            {"id": "f" * 16, "report_id": "c" * 16, "seq": 1, "kind": "report", "created_on": day,
             "sealed_by": "browser", "exported": False, "envelope_blob_id": "b" * 32}])
    upgrade_database(engine)
    assert current_revision(engine) == head_revision()
    new = MetaData()
    new.reflect(engine)
    reports, items = Table("reports", new), Table("items", new)
    assert "sealed_by" not in reports.c and "sealed_by" not in items.c
    with engine.connect() as conn:
        got_reports = {r.id: r.channel for r in conn.execute(
            reports.select().with_only_columns(reports.c.id, reports.c.channel))}
        got_items = {(r.report_id, r.seq): r.channel for r in conn.execute(
            items.select().with_only_columns(items.c.report_id, items.c.seq, items.c.channel))}
    assert got_reports == {"a" * 16: "server-form", "c" * 16: "browser"}
    assert got_items == {("a" * 16, 1): "server-form", ("a" * 16, 2): "browser",
                         ("a" * 16, 3): None, ("c" * 16, 1): "browser"}
    engine.dispose()

    app = create_app(config)
    with app.extensions["whistle"].sessions.begin() as db:
        # The message row reused the report's envelope (kind "report"): the workstation would
        # rightly refuse it, so only the reports go into the bundle.
        db.execute(delete(Item).where(Item.kind != "report"))
    out = export_and_decrypt(app, workstation, tmp_path)
    texts = {f.name: (f / "report.txt").read_text(encoding="utf-8") for f in report_folders(out)}
    assert "Channel: Form without JavaScript (encrypted in server memory" in texts["a" * 16]
    assert "Channel: Browser (encrypted in the browser" in texts["c" * 16]


def test_migrate_upgrade_command(server_env: Config, capsys) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(server_env.database_url)
    upgrade_database(engine, "0001")
    engine.dispose()
    assert cli.main(["upgrade"]) == 0
    assert head_revision() in capsys.readouterr().out
    engine = make_engine(server_env.database_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_migrate_refuses_unversioned_database(config: Config) -> None:
    """Tables without a migration history (not made by this whistle): refuse, one clear line."""
    import pytest

    from whistle.server.instance import InstanceError

    engine = make_engine(config.database_url)
    Base.metadata.create_all(engine)
    engine.dispose()
    with pytest.raises(InstanceError, match="no migration history"):
        create_app(config)
