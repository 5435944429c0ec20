# SPDX-License-Identifier: AGPL-3.0-or-later
"""Investigators' case work in the web UI, and the whole two-way round trip.

submit → export → decrypt → reply → import → the source reads the reply → the source answers →
export → decrypt shows the answer; once through the command line, once through the web UI.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from support import (
    RECEIPT,
    Account,
    Clock,
    Workstation,
    api_payload,
    csrf_token,
    find_needles,
    form_tokens,
    investigator_login,
    make_account,
    post_api,
    post_form,
    report_folders,
    source_login,
)

from whistle import cli, create_app
from whistle.core.bundle import BundleReader
from whistle.server.config import load_config
from whistle.server.instance import load_or_create_secrets
from whistle.server.models import AuditEntry, Item, Report
from whistle.workstation.decrypt import decrypt_bundle


@pytest.fixture
def inv(app: Flask, investigator: Account) -> FlaskClient:
    client = app.test_client()
    assert investigator_login(client, investigator).status_code == 303
    return client


def file_report(app: Flask, body: str) -> tuple[FlaskClient, str]:
    source = app.test_client()
    resp = post_form(source, body, [("foto.jpg", "image/jpeg", b"\xff\xd8 jpeg bytes")])
    return source, RECEIPT.search(resp.get_data(as_text=True)).group(1)  # type: ignore[union-attr]


BUNDLE_REFRESH = re.compile(
    r'<meta http-equiv="refresh" content="0; url=(/investigator/bundle/[0-9a-f]{32})">')


def download(inv: FlaskClient, form: dict[str, str]) -> tuple[bytes, str]:
    """Press a download button as a browser does: the post sends it back to the case list, which
    fetches the waiting bundle by itself. Returns the bundle and the list page it came from."""
    resp = inv.post("/investigator/bundle", data=form)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/investigator/")
    page = inv.get(resp.headers["Location"]).get_data(as_text=True)
    match = BUNDLE_REFRESH.search(page)
    assert match, "the case list does not fetch the bundle"
    resp = inv.get(match.group(1))
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    assert "attachment" in resp.headers["Content-Disposition"]
    return resp.get_data(), page


def report_id(app: Flask) -> str:
    with app.extensions["whistle"].sessions() as db:
        return db.scalars(select(Report.id)).one()


def test_investigator_case_list_shows_case_and_deadlines(app: Flask, inv: FlaskClient) -> None:
    file_report(app, "Falta de medicamentos")
    rid = report_id(app)
    html = inv.get("/investigator/?lang=en").get_data(as_text=True)
    # The channel column: the form posted with JavaScript off.
    assert rid[:8] in html and "<td>Form without JavaScript</td>" in html
    with app.extensions["whistle"].sessions() as db:
        received = db.get(Report, rid).received_on  # type: ignore[union-attr]
    import datetime as dt

    assert (received + dt.timedelta(days=7)).isoformat() in html
    assert rid[:8] not in inv.get("/investigator/?status=closed").get_data(as_text=True)
    assert inv.get("/investigator/?status=nonsense").status_code == 400
    assert inv.get("/investigator/?page=x").status_code == 400


def test_investigator_status_change_visible_to_source(app: Flask, inv: FlaskClient) -> None:
    source, phrase = file_report(app, "texto")
    rid = report_id(app)
    token = csrf_token(inv, f"/investigator/case/{rid}")
    resp = inv.post(f"/investigator/case/{rid}/status", data={
        "csrf_token": token, "status": "closed", "outcome": "duplicate"})
    assert resp.status_code == 303
    source_login(source, phrase)
    html = source.get("/case?lang=en").get_data(as_text=True)
    assert "Already being handled under another report" in html
    with app.extensions["whistle"].sessions() as db:
        entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "status_change")).one()
        assert entry.actor == "alice" and entry.report_id == rid


def test_investigator_delete_case_needs_confirmation(app: Flask, inv: FlaskClient) -> None:
    file_report(app, "texto")
    rid = report_id(app)
    token = csrf_token(inv, f"/investigator/case/{rid}")
    inv.post(f"/investigator/case/{rid}/delete", data={"csrf_token": token, "confirm": "nope"})
    assert inv.get(f"/investigator/case/{rid}").status_code == 200
    resp = inv.post(f"/investigator/case/{rid}/delete", data={"csrf_token": token, "confirm": rid[:8]})
    assert resp.status_code == 303
    assert inv.get(f"/investigator/case/{rid}").status_code == 404
    with app.extensions["whistle"].sessions() as db:
        assert db.scalars(select(Item)).all() == []


def test_investigator_delete_case_leaves_no_ciphertext_on_disk(
        environ: dict[str, str], tmp_path: Path, clock: Clock, fast_passwords: None) -> None:
    """After a deletion no byte of the case's ciphertext is left in the database, -wal or -shm.

    Always on SQLite (the WAL is SQLite's), also on the run with PostgreSQL.
    """
    env = {k: v for k, v in environ.items() if k != "WHISTLE_DATABASE_URL"}
    cfg = load_config(env, cwd=tmp_path)
    load_or_create_secrets(cfg, time_cost=1, memory_cost_kib=8)
    app = create_app(cfg)
    app.config.update(TESTING=True)
    try:
        payload = api_payload(app.extensions["whistle"].unit_key, "canario",
                              [("informe.pdf", "application/pdf", os.urandom(200_000))])
        envelope = payload["report"][0].getvalue()  # type: ignore[index]
        attachment = payload["attachment"][0][0].getvalue()  # type: ignore[index]
        # Slices from the middle of each ciphertext: random bytes no other file can hold.
        needles = {"envelope": envelope[200:232], "attachment": attachment[100_000:100_032]}
        assert post_api(app.test_client(), payload).status_code == 201

        def on_disk() -> list[str]:
            return find_needles([f for f in cfg.data_dir.rglob("*") if f.is_file()], needles)

        assert sorted(h.split(" in ")[0] for h in on_disk()) == ["attachment", "envelope"]
        inv = app.test_client()
        assert investigator_login(inv, make_account(app, clock, "alice")).status_code == 303
        rid = report_id(app)
        token = csrf_token(inv, f"/investigator/case/{rid}")
        resp = inv.post(f"/investigator/case/{rid}/delete", data={"csrf_token": token,
                                                                  "confirm": rid[:8]})
        assert resp.status_code == 303
        assert on_disk() == []
        wal = Path(str(app.extensions["whistle"].engine.url.database) + "-wal")
        assert wal.exists() and wal.stat().st_size == 0
    finally:
        app.extensions["whistle"].engine.dispose()


def test_investigator_bad_replies_upload_imports_nothing(app: Flask, inv: FlaskClient) -> None:
    file_report(app, "texto")
    token = csrf_token(inv, "/investigator/replies")
    for junk in (b"not json", b'{"format": "whistle-replies", "v": 1, "replies": []}'):
        resp = inv.post("/investigator/replies", data={
            "csrf_token": token, "replies": (io.BytesIO(junk), "replies.json")},
            content_type="multipart/form-data")
        assert resp.status_code == 400
    with app.extensions["whistle"].sessions() as db:
        assert db.scalars(select(Item).where(Item.kind == "reply")).all() == []


def _new_messages(html: str) -> list[str]:
    """The "New messages" column of the case list, row by row."""
    return [cell.strip() for cell in re.findall(r'<td class="count">(.*?)</td>', html, re.S)]


def test_investigator_download_list_shows_no_new_messages_after(
        app: Flask, inv: FlaskClient, workstation: Workstation) -> None:
    """"Download everything new" used to answer with the file alone: the list on the screen kept
    its new-message counts until a reload. Now the list shown after the download is fresh, a
    reload of it exports nothing again, and the bundle is fetched once."""
    unit = app.extensions["whistle"].unit_key
    client = app.test_client()
    assert post_api(client, api_payload(unit, "texto", [])).status_code == 201
    with app.extensions["whistle"].sessions() as db:
        rid = db.scalars(select(Report.id)).one()
    export_first = inv.post("/investigator/bundle",
                            data={"csrf_token": csrf_token(inv, "/investigator/"), "scope": "new"})
    assert export_first.status_code == 303
    inv.get(BUNDLE_REFRESH.search(inv.get("/investigator/").get_data(as_text=True)).group(1))  # type: ignore[union-attr]
    # A follow-up message from the source, as the follow-up page files it: one new message.
    from whistle.core.crypto import Envelope, seal_envelope
    from whistle.core.enums import Channel
    from whistle.server.casework import add_message

    with app.extensions["whistle"].sessions.begin() as db:
        add_message(db, rid, seal_envelope(Envelope(kind="message", body="más datos"), unit), (),
                    Channel.BROWSER)
    token = csrf_token(inv, "/investigator/")
    assert _new_messages(inv.get("/investigator/").get_data(as_text=True)) == ["1"]
    bundle, page = download(inv, {"csrf_token": token, "scope": "new"})
    assert zipfile.is_zipfile(io.BytesIO(bundle))
    assert _new_messages(page) == [""]
    # Reloading the list after the download neither exports again nor fetches the bundle again.
    again = inv.get("/investigator/").get_data(as_text=True)
    assert _new_messages(again) == [""] and not BUNDLE_REFRESH.search(again)
    with app.extensions["whistle"].sessions() as db:
        actions = [e.action for e in db.scalars(select(AuditEntry))]
    assert actions.count("bundle_download") == 2


def test_investigator_bundle_fetched_once_by_its_own_session(
        app: Flask, inv: FlaskClient, clock: Clock, fast_passwords: None) -> None:
    assert post_api(app.test_client(), api_payload(app.extensions["whistle"].unit_key, "texto",
                                                   [])).status_code == 201
    resp = inv.post("/investigator/bundle",
                    data={"csrf_token": csrf_token(inv, "/investigator/"), "scope": "new"})
    url = BUNDLE_REFRESH.search(inv.get(resp.headers["Location"]).get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    other = app.test_client()
    assert investigator_login(other, make_account(app, clock, "bruno")).status_code == 303
    assert other.get(url).status_code == 404
    assert inv.get(url).status_code == 200
    assert inv.get(url).status_code == 404
    assert list((app.extensions["whistle"].config.spool_dir / "bundles").iterdir()) == []


REFUSED = "The replies file was refused and nothing was imported."
NOT_A_REPLIES_FILE = ("This is not a replies file made with 'whistle reply' by this version of "
                      "whistle, or it was damaged on the way. Make it again on the workstation.")


def _spanish(app: Flask, msgid: str, **params: object) -> str:
    """``msgid`` as the Spanish investigator page shows it (HTML-escaped): the catalogue's words
    once translated, the msgid until then; never the exception's English detail."""
    from flask_babel import force_locale, gettext
    from markupsafe import escape

    with app.test_request_context(), force_locale("es"):
        return str(escape(gettext(msgid, **params)))


def _error_block(html: str) -> list[str]:
    """The paragraphs of the page's error notices (templates/_macros.html, kind "error")."""
    blocks = re.findall(r'<div class="notice notice-error" role="alert">(.*?)</div>', html, re.S)
    return [p.strip() for block in blocks for p in re.findall(r"<p>(.*?)</p>", block, re.S)]


def test_investigator_replies_upload_refusal_is_a_translated_error(
        app: Flask, inv: FlaskClient, workstation: Workstation, tmp_path: Path) -> None:
    """The same file twice: the second is refused in the error style, in the page's language,
    and no English from the server's exception ("reply 1: already imported") shows."""
    from whistle.core.crypto import UnitPublicKey
    from whistle.core.replies import dump_replies, seal_reply

    assert post_api(app.test_client(), api_payload(app.extensions["whistle"].unit_key, "texto",
                                                   [])).status_code == 201
    with app.extensions["whistle"].sessions() as db:
        report = db.scalars(select(Report)).one()
        rid, source_key = report.id, report.source_public_key
    data = dump_replies([seal_reply("Recibido.", rid, UnitPublicKey(source_key),
                                    workstation.signing_key)])
    token = csrf_token(inv, "/investigator/replies")

    def upload(payload: bytes):  # type: ignore[no-untyped-def]
        return inv.post("/investigator/replies", data={
            "csrf_token": token, "replies": (io.BytesIO(payload), "replies.json")},
            content_type="multipart/form-data")

    assert upload(data).status_code == 303
    inv.get("/investigator/")  # the success flash, shown once
    resp = upload(data)
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert _error_block(html) == [
        _spanish(app, REFUSED),
        _spanish(app, "Reply %(number)d (case %(case)s) was imported before: this file was already "
                      "uploaded.", number=1, case=rid[:8])]
    assert "already imported" not in html and "reply 1:" not in html
    assert 'class="notice notice-info"' not in html
    resp = upload(b"not json")
    assert _error_block(resp.get_data(as_text=True)) == [_spanish(app, REFUSED),
                                                         _spanish(app, NOT_A_REPLIES_FILE)]


def _forged_replies_file(app: Flask, signature: bytes | None) -> bytes:
    """The issue's forgery: a text sealed to the stored source key without the unit's key, in a
    replies file; with a made-up signature, or none (a version-1 file, as before signing)."""
    from whistle.core.crypto import UnitPublicKey, UnitSigningKey
    from whistle.core.replies import SealedReply, dump_replies, seal_reply

    with app.extensions["whistle"].sessions() as db:
        report = db.scalars(select(Report)).one()
    forged = seal_reply("Soy la unidad. Responda con su nombre.", report.id,
                        UnitPublicKey(report.source_public_key), UnitSigningKey.generate())
    if signature is None:
        import json

        doc = json.loads(dump_replies([forged]))
        doc["v"] = 1
        for entry in doc["replies"]:
            del entry["signature"]
        return json.dumps(doc).encode()
    return dump_replies([SealedReply(forged.report_id, forged.recipient, forged.sealed, signature)])


@pytest.mark.parametrize("signature", [None, bytes(64), b"\x07" * 64])
def test_investigator_forged_replies_upload_is_refused(app: Flask, inv: FlaskClient,
                                                      signature: bytes | None) -> None:
    file_report(app, "texto")
    token = csrf_token(inv, "/investigator/replies")
    resp = inv.post("/investigator/replies", data={
        "csrf_token": token,
        "replies": (io.BytesIO(_forged_replies_file(app, signature)), "replies.json")},
        content_type="multipart/form-data")
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    case = report_id(app)[:8]
    reason = (_spanish(app, "Reply %(number)d (case %(case)s) is not signed with the unit's signing "
                       "key: it was not made with the unit's key, or it was altered.",
                       number=1, case=case) if signature
              else _spanish(app, NOT_A_REPLIES_FILE))
    assert _error_block(html) == [_spanish(app, REFUSED), reason]
    with app.extensions["whistle"].sessions() as db:
        assert db.scalars(select(Item).where(Item.kind == "reply")).all() == []


@pytest.mark.parametrize("signature", [None, bytes(64)])
def test_investigator_forged_replies_import_command_is_refused(
        app: Flask, server_env: object, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        signature: bytes | None) -> None:
    file_report(app, "texto")
    path = tmp_path / "forged.json"
    path.write_bytes(_forged_replies_file(app, signature))
    assert cli.main(["import-replies", str(path)]) == 1
    err = capsys.readouterr().err
    assert "nothing imported" in err and len(err.strip().splitlines()) == 1
    assert ("reply 1" in err and "signing key" in err) if signature else "version-1" in err
    with app.extensions["whistle"].sessions() as db:
        assert db.scalars(select(Item).where(Item.kind == "reply")).all() == []


def _read_reply_and_answer(source: FlaskClient, phrase: str, reply_text: str, answer: str) -> None:
    assert source_login(source, phrase).status_code == 302
    html = source.get("/case").get_data(as_text=True)
    assert reply_text in html
    resp = source.post("/case", data={**form_tokens(source, "/case"), "body": answer},
                       content_type="multipart/form-data")
    assert resp.status_code == 302


def test_roundtrip_through_command_line(app: Flask, workstation: Workstation, server_env: object,
                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, phrase = file_report(app, "Cobran por turnos en el hospital")
    bundle = tmp_path / "b1.zip"
    assert cli.main(["export", "--out", str(bundle)]) == 0
    decrypt_bundle(bundle, workstation.secret_key, tmp_path / "cases")
    (folder,) = report_folders(tmp_path / "cases")
    assert "Cobran por turnos" in (folder / "report.txt").read_text(encoding="utf-8")

    reply_text = "Gracias. ¿En qué fecha ocurrió? — Unidad de investigación"
    (tmp_path / "reply.txt").write_text(reply_text, encoding="utf-8")
    replies = tmp_path / "replies.json"
    assert cli.main(["reply", str(bundle), "--report", folder.name[:8], "--text-file",
                     str(tmp_path / "reply.txt"), "--out", str(replies), "--key",
                     str(workstation.key_file), "--passphrase-file",
                     str(workstation.passphrase_file)]) == 0
    assert cli.main(["import-replies", str(replies)]) == 0
    assert cli.main(["import-replies", str(replies)]) == 1  # the same file twice: refused
    assert "already imported" in capsys.readouterr().err

    _read_reply_and_answer(source, phrase, reply_text, "Fue el 12 de noviembre, en la mañana")
    assert cli.main(["export", "--out", str(tmp_path / "b2.zip")]) == 0
    decrypt_bundle(tmp_path / "b2.zip", workstation.secret_key, tmp_path / "cases")
    messages = sorted(folder.glob("message-*.txt"))
    assert len(messages) == 1
    assert "Fue el 12 de noviembre" in messages[0].read_text(encoding="utf-8")


def test_roundtrip_through_web_ui(app: Flask, inv: FlaskClient, workstation: Workstation,
                                  tmp_path: Path) -> None:
    source, phrase = file_report(app, "Irregularidades en compras públicas")
    token = csrf_token(inv, "/investigator/")
    bundle = tmp_path / "ui.zip"
    bundle.write_bytes(download(inv, {"csrf_token": token, "scope": "new"})[0])
    assert zipfile.is_zipfile(bundle)
    with BundleReader(bundle) as reader:
        (report,) = reader.reports
    assert list((app.extensions["whistle"].config.spool_dir / "bundles").iterdir()) == []

    reply_text = "Recibimos su denuncia; la investigación está en curso."
    (tmp_path / "reply.txt").write_text(reply_text, encoding="utf-8")
    replies = tmp_path / "replies.json"
    assert cli.main(["reply", str(bundle), "--report", report.id, "--text-file",
                     str(tmp_path / "reply.txt"), "--out", str(replies), "--key",
                     str(workstation.key_file), "--passphrase-file",
                     str(workstation.passphrase_file)]) == 0
    resp = inv.post("/investigator/replies", data={
        "csrf_token": token, "replies": (io.BytesIO(replies.read_bytes()), "replies.json")},
        content_type="multipart/form-data")
    assert resp.status_code == 303

    _read_reply_and_answer(source, phrase, reply_text, "Tengo copias de las facturas")
    (tmp_path / "ui2.zip").write_bytes(download(inv, {"csrf_token": token, "scope": "selected",
                                                      "report": report.id})[0])
    decrypt_bundle(tmp_path / "ui2.zip", workstation.secret_key, tmp_path / "cases")
    (folder,) = report_folders(tmp_path / "cases")
    assert "Irregularidades en compras" in (folder / "report.txt").read_text(encoding="utf-8")
    assert any("Tengo copias de las facturas" in p.read_text(encoding="utf-8")
               for p in folder.glob("message-*.txt"))
    with app.extensions["whistle"].sessions() as db:
        actions = [e.action for e in db.scalars(select(AuditEntry).order_by(AuditEntry.seq))]
    assert actions.count("bundle_download") == 2 and "replies_upload" in actions
    assert re.fullmatch(r"[0-9a-f]{16}", report.id)
