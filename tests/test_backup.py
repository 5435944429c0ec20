# SPDX-License-Identifier: AGPL-3.0-or-later
"""``whistle backup`` and ``whistle restore``: a full round trip into a fresh instance (the unit
still decrypts everything, the source still logs in, the audit chain still verifies), refusal of
damaged or altered backups with nothing written, refusal of a non-empty target without --force,
no plaintext in a backup, and — with PostgreSQL in CI — SQLite and PostgreSQL both ways.

The source instance is the suite's usual one (SQLite here, PostgreSQL in CI's second run); the
restore target is a SQLite file in the test's folder unless a test says otherwise.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import delete, select
from support import (
    RECEIPT,
    TEST_POSTGRES,
    Clock,
    Workstation,
    export_and_decrypt,
    find_needles,
    form_tokens,
    make_account,
    post_form,
    postgres_database,
    reply,
    report_folders,
    source_login,
)

from whistle import cli, create_app
from whistle.server import audit
from whistle.server.config import Config, load_config
from whistle.server.db import make_engine, make_sessionmaker
from whistle.server.instance import InstanceSecrets
from whistle.server.models import BlobChunk, Investigator
from whistle.server.storage import BLOB_CHUNK_SIZE


@dataclass
class Filled:
    """What went into the source instance, to look for after a restore (or in a backup)."""

    tag: str
    phrase: str
    body: str
    attachment_name: str
    attachment: bytes
    reply_text: str
    message: str


@pytest.fixture
def filled(app: Flask, clock: Clock, fast_passwords: None, workstation: Workstation) -> Filled:
    """A report with a two-chunk attachment, a reply, a follow-up message, two accounts and
    audit entries; every text carries a canary."""
    tag = secrets.token_hex(6)
    source = app.test_client()
    data = os.urandom(BLOB_CHUNK_SIZE + 5000) + f"CANARY-FILE-{tag}".encode()
    body, name = f"Informe CANARY-BODY-{tag} ñ", f"CANARY-NAME-{tag}.pdf"
    resp = post_form(source, body, [(name, "application/pdf", data)])
    phrase = RECEIPT.search(resp.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    reply_text = f"Respuesta CANARY-REPLY-{tag}"
    reply(app, workstation, reply_text)
    assert source_login(source, phrase).status_code == 302
    message = f"Mensaje CANARY-MESSAGE-{tag}"
    resp = source.post("/case", data={**form_tokens(source, "/case"), "body": message},
                       content_type="multipart/form-data")
    assert resp.status_code == 302
    make_account(app, clock, "alice")
    make_account(app, clock, "root", is_admin=True)
    with app.extensions["whistle"].sessions.begin() as db:
        audit.record(db, "root", audit.LOGIN)
    return Filled(tag, phrase, body, name, data, reply_text, message)


def _use(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith("WHISTLE_")]:
        monkeypatch.delenv(key)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def target_environ(environ: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A second instance: same unit key, its own data folder, SQLite."""
    return {k: v for k, v in environ.items() if k != "WHISTLE_DATABASE_URL"} | {
        "WHISTLE_DATA_DIR": str(tmp_path / "restored")}


def _config(environ: dict[str, str], tmp_path: Path) -> Config:
    return load_config(environ, cwd=tmp_path)


@pytest.fixture
def backup_file(server_env: Config, filled: Filled, tmp_path: Path,
                capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "backups" / "whistle.zip"
    assert cli.main(["backup", "--out", str(out)]) == 0, capsys.readouterr().err
    assert "a test restore matched every row" in capsys.readouterr().out
    return out


def _restore(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], backup: Path,
             *extra: str) -> int:
    _use(monkeypatch, environ)
    return cli.main(["restore", str(backup), *extra])


def _audit_head(capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert cli.main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ")
    return out.split()[-1]


def test_backup_restore_round_trip_into_fresh_instance(
    backup_file: Path, filled: Filled, app: Flask, workstation: Workstation, environ: dict[str, str],
    target_environ: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source_head = _audit_head(capsys)
    assert _restore(monkeypatch, target_environ, backup_file) == 0, capsys.readouterr().err
    assert "restored" in capsys.readouterr().out
    assert _audit_head(capsys) == source_head

    target = _config(target_environ, tmp_path)
    restored = InstanceSecrets.from_json(target.secrets_path.read_text())
    original = app.extensions["whistle"].secrets
    assert restored.argon2 == original.argon2, "passphrase salt and costs must come back"
    assert restored.flask_secret_key != original.flask_secret_key, "the session key is never copied"
    assert target.secrets_path.stat().st_mode & 0o077 == 0

    app2 = create_app(target)
    try:
        # The unit reads everything back.
        (folder,) = report_folders(export_and_decrypt(app2, workstation, tmp_path, include_all=True))
        assert filled.body in (folder / "report.txt").read_text(encoding="utf-8")
        assert (folder / "attachments" / filled.attachment_name).read_bytes() == filled.attachment
        (message,) = folder.glob("message-*.txt")
        assert filled.message in message.read_text(encoding="utf-8")
        # The source logs in with the same passphrase and reads the unit's reply.
        source = app2.test_client()
        assert source_login(source, filled.phrase).status_code == 302
        assert filled.reply_text in source.get("/case").get_data(as_text=True)
    finally:
        app2.extensions["whistle"].engine.dispose()


def test_backup_holds_no_plaintext_and_no_session_key(backup_file: Path, filled: Filled,
                                                      app: Flask) -> None:
    needles = {
        "report text": f"CANARY-BODY-{filled.tag}".encode(),
        "attachment content": f"CANARY-FILE-{filled.tag}".encode(),
        "attachment name": filled.attachment_name.encode(),
        "reply text": f"CANARY-REPLY-{filled.tag}".encode(),
        "message text": f"CANARY-MESSAGE-{filled.tag}".encode(),
        "passphrase": filled.phrase.encode(),
        "session key": app.extensions["whistle"].secrets.flask_secret_key.encode(),
    }
    # Rows are base64 in the backup: look for every alignment of each needle's base64 too.
    for label, needle in list(needles.items()):
        for shift in range(3):
            encoded = base64.b64encode(b"\0" * shift + needle)[4:-4]
            needles[f"{label} (base64, shift {shift})"] = encoded
    assert find_needles([backup_file], needles) == []
    with zipfile.ZipFile(backup_file) as zf:
        names = set(zf.namelist())
        assert {"manifest.json", "secrets.json", "tables/reports.jsonl"} <= names
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        manifest = json.loads(zf.read("manifest.json"))
    counts = {t["name"]: t["rows"] for t in manifest["tables"]}
    assert counts["reports"] == 1 and counts["items"] == 3 and counts["investigators"] == 2
    assert counts["blob_chunks"] > counts["blobs"], "the two-chunk attachment is in there"


def _rewrite(path: Path, change: dict[str, bytes]) -> None:
    """Rebuild the zip with some members replaced: valid CRCs, so only the hashes can tell."""
    with zipfile.ZipFile(path) as zf:
        members = [(i.filename, zf.read(i.filename)) for i in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(name, change.get(name, data))


def _tamper(path: Path, how: str) -> None:
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        rows = zf.read("tables/investigators.jsonl")
        info = zf.getinfo("tables/blob_chunks.jsonl")
    if how == "flip-byte":
        raw = bytearray(path.read_bytes())
        # The local header's name and extra-field lengths say where the member's data starts.
        start = info.header_offset + 30 + int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28],
                                                         "little") \
            + int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
        raw[start + info.file_size // 2] ^= 0x01
        path.write_bytes(bytes(raw))
    elif how == "edit-row":  # make alice an admin
        _rewrite(path, {"tables/investigators.jsonl": rows.replace(b",false,false,", b",true,false,", 1)})
    elif how == "edit-manifest-count":
        for table in manifest["tables"]:
            if table["name"] == "audit_log":
                table["rows"] -= 1
        _rewrite(path, {"manifest.json": json.dumps(manifest).encode()})
    elif how == "drop-member":
        with zipfile.ZipFile(path) as zf:
            members = [(i.filename, zf.read(i.filename)) for i in zf.infolist()]
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members:
                if name != "tables/audit_log.jsonl":
                    zf.writestr(name, data)


@pytest.mark.parametrize("how", ["flip-byte", "edit-row", "edit-manifest-count", "drop-member"])
def test_backup_restore_refuses_damaged_backup_and_writes_nothing(
    backup_file: Path, target_environ: dict[str, str], tmp_path: Path, how: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    _tamper(backup_file, how)
    capsys.readouterr()
    assert _restore(monkeypatch, target_environ, backup_file) == 1
    err = capsys.readouterr().err
    assert err.startswith("whistle: restore refused: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not Path(target_environ["WHISTLE_DATA_DIR"]).exists(), "something was written"


def test_backup_restore_refuses_non_empty_database_without_force(
    backup_file: Path, filled: Filled, target_environ: dict[str, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    source_head = _audit_head(capsys)
    assert _restore(monkeypatch, target_environ, backup_file) == 0
    target = _config(target_environ, tmp_path)
    secrets_before = target.secrets_path.read_bytes()
    capsys.readouterr()
    assert _restore(monkeypatch, target_environ, backup_file) == 1
    assert "already holds" in capsys.readouterr().err
    assert target.secrets_path.read_bytes() == secrets_before, "secrets changed by a refused restore"

    # --force replaces the contents in one go: afterwards the same rows, once, and a valid chain.
    engine = make_engine(target.database_url)
    with make_sessionmaker(engine).begin() as db:
        db.execute(delete(Investigator).where(Investigator.name == "alice"))
    assert _restore(monkeypatch, target_environ, backup_file, "--force") == 0
    with make_sessionmaker(engine)() as db:
        assert sorted(db.scalars(select(Investigator.name))) == ["alice", "root"]
    engine.dispose()
    assert _audit_head(capsys) == source_head


def test_backup_refuses_damaged_database_and_leaves_no_file(
    server_env: Config, filled: Filled, app: Flask, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with app.extensions["whistle"].sessions.begin() as db:
        db.execute(delete(BlobChunk).where(BlobChunk.seq == 1))  # the attachment's second chunk
    out = tmp_path / "backups" / "b.zip"
    assert cli.main(["backup", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "damaged" in err and err.count("\n") == 1
    assert list(out.parent.iterdir()) == [], "a partial or temporary file was left behind"


def test_backup_discarded_when_test_restore_differs(
    server_env: Config, filled: Filled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The proof is real: a restore that loses anything makes the backup fail."""
    from whistle.server import backup_file as backup_format

    original = backup_format.TableCodec.decode

    def lossy(self: backup_format.TableCodec, line: bytes) -> dict[str, object]:
        row = original(self, line)
        if self.table.name == "investigators":
            row["totp_last_step"] += 1
        return row

    monkeypatch.setattr(backup_format.TableCodec, "decode", lossy)
    out = tmp_path / "backups" / "b.zip"
    assert cli.main(["backup", "--out", str(out)]) == 1
    assert "differs from the database; backup discarded" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []


@pytest.mark.skipif(not TEST_POSTGRES, reason="needs WHISTLE_TEST_POSTGRES (CI's second run)")
def test_backup_restore_into_postgresql_gives_identical_rows(
    backup_file: Path, target_environ: dict[str, str], tmp_path: Path, clock: Clock,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Restore into a fresh PostgreSQL database (moving a drop off SQLite), back that up again:
    every table hashes the same. New accounts still get fresh ids (sequences moved on)."""
    with postgres_database("whistle_restore_") as url:
        pg_environ = target_environ | {"WHISTLE_DATABASE_URL": url}
        assert _restore(monkeypatch, pg_environ, backup_file) == 0, capsys.readouterr().err
        again = tmp_path / "again.zip"
        assert cli.main(["backup", "--out", str(again)]) == 0, capsys.readouterr().err
        hashes = []
        for path in (backup_file, again):
            with zipfile.ZipFile(path) as zf:
                hashes.append(json.loads(zf.read("manifest.json"))["rows_sha256"])
        assert hashes[0] == hashes[1]
        app2 = create_app(_config(pg_environ, tmp_path))
        try:
            make_account(app2, clock, "carol")
        finally:
            app2.extensions["whistle"].engine.dispose()
