# SPDX-License-Identifier: AGPL-3.0-or-later
"""The source comes back: passphrase login, status and replies, follow-up messages, sessions."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import SealedBox
from sqlalchemy import select
from support import (
    Workstation,
    browser_login,
    csrf_token,
    export_and_decrypt,
    file_report,
    file_report_api,
    form_tokens,
    message_payload,
    page_text,
    post_message,
    random_browser_keys,
    reply,
    report_folders,
    source_login,
    the_report,
)

from whistle.core.crypto import (
    Binding,
    Envelope,
    UnitPublicKey,
    UnitSecretKey,
    UnitSigningKey,
    seal_envelope,
)
from whistle.core.enums import ItemKind
from whistle.core.replies import (
    ReplyEnvelope,
    SealedReply,
    open_reply,
    reply_signed_bytes,
    seal_reply,
)
from whistle.server.casework import import_replies, set_status
from whistle.server.intake import add_item
from whistle.server.models import Item, Report


def test_followup_login_shows_status_dates_and_reply(client: FlaskClient, app: Flask,
                                                     workstation: Workstation) -> None:
    phrase = file_report(client)
    reply(app, workstation, "Gracias. Hemos abierto una investigación. ¿Puede indicar la fecha?")
    resp = source_login(client, phrase)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/case")
    html = client.get("/case").get_data(as_text=True)
    assert "Hemos abierto una investigación. ¿Puede indicar la fecha?" in html
    assert the_report(app).received_on.isoformat() in html
    assert 'id="case-status"' in html


def test_followup_normalised_passphrase_logs_in(client: FlaskClient) -> None:
    phrase = file_report(client)
    messy = "  " + phrase.upper().replace(" ", " ,  ") + "\n"
    assert source_login(client, messy).status_code == 302


@pytest.mark.parametrize("wrong", ["", "uno dos tres cuatro cinco seis siete", "x" * 400])
def test_followup_wrong_passphrase_generic_message(client: FlaskClient, wrong: str) -> None:
    file_report(client)
    resp = source_login(client, wrong)
    assert resp.status_code == 400
    assert client.get("/case").status_code == 302, "a wrong passphrase opened a session"


def test_followup_wrong_and_right_take_same_work(client: FlaskClient, app: Flask,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Both run exactly one argon2 derivation: the server's work does not reveal which it was."""
    import whistle.core.passphrase as passphrase

    phrase = file_report(client)
    calls: list[str] = []
    original = passphrase.derive

    def counting(typed: str, params: passphrase.Argon2Params) -> passphrase.SourceKeys:
        calls.append("derive")
        return original(typed, params)

    monkeypatch.setattr(passphrase, "derive", counting)
    source_login(client, "palabra " * 7)
    wrong_calls = len(calls)
    source_login(client, phrase)
    assert wrong_calls == 1 and len(calls) == 2


def test_followup_passphrase_never_in_cookie_or_page(client: FlaskClient) -> None:
    phrase = file_report(client)
    resp = source_login(client, phrase)
    cookies = " ".join(resp.headers.getlist("Set-Cookie"))
    page = client.get("/case").get_data(as_text=True)
    for word in phrase.split():
        assert word not in cookies
    assert phrase not in page


def test_followup_message_form_reaches_unit(client: FlaskClient, app: Flask, workstation: Workstation,
                                            tmp_path: Path) -> None:
    phrase = file_report(client, "Primer informe")
    source_login(client, phrase)
    data = os.urandom(70_000)
    resp = client.post("/case", data={**form_tokens(client, "/case"),
                                      "body": "Dato adicional: fue el 3 de marzo",
                                      "attachments": [(io.BytesIO(data), "prueba.png", "image/png")]},
                       content_type="multipart/form-data")
    assert resp.status_code == 302
    out = export_and_decrypt(app, workstation, tmp_path)
    (folder,) = report_folders(out)
    assert "Primer informe" in (folder / "report.txt").read_text(encoding="utf-8")
    message = (folder / "message-002.txt").read_text(encoding="utf-8")
    assert "Dato adicional: fue el 3 de marzo" in message
    assert (folder / "attachments" / "prueba.png").read_bytes() == data


def test_followup_api_message_sealed_in_browser(client: FlaskClient, app: Flask,
                                                workstation: Workstation, tmp_path: Path) -> None:
    unit = workstation.secret_key.public_key
    keys = file_report_api(client, unit)
    assert browser_login(client, keys.login_key).status_code == 200
    resp = post_message(client, message_payload(unit, keys, 2, "Mensaje cifrado en el navegador"))
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.get_json() == {"ok": True, "channel": "browser"}
    with app.extensions["whistle"].sessions() as db:
        item = db.scalars(select(Item).where(Item.kind == "message")).one()
        assert item.channel == "browser" and item.seq == 2
    out = export_and_decrypt(app, workstation, tmp_path)
    assert "Mensaje cifrado en el navegador" in (report_folders(out)[0] / "message-002.txt").read_text()


def test_followup_api_message_needs_session(client: FlaskClient, workstation: Workstation) -> None:
    payload = message_payload(workstation.secret_key.public_key, random_browser_keys(), 2, "x")
    resp = client.post("/api/v1/messages", data=payload, content_type="multipart/form-data",
                       headers={"X-CSRFToken": csrf_token(client)})
    assert resp.status_code == 401


def test_followup_logout_makes_cookie_worthless(client: FlaskClient) -> None:
    phrase = file_report(client)
    source_login(client, phrase)
    with client.session_transaction() as sess:
        token = sess["source_token"]
    client.post("/logout", data={**form_tokens(client, "/case")})
    with client.session_transaction() as sess:
        sess["source_token"] = token  # an attacker replays the old cookie value
    assert client.get("/case").status_code == 302


def test_followup_idle_session_expires(client: FlaskClient, app: Flask,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from whistle.server.source_sessions import EXPIRY_BUCKET_SECONDS, IDLE_SECONDS, RedisSourceSessionStore

    phrase = file_report(client)
    source_login(client, phrase)
    assert client.get("/case").status_code == 200
    store = app.extensions["whistle"].source_sessions
    if isinstance(store, RedisSourceSessionStore):
        # Redis expires the entry itself: each request re-arms the idle timer ...
        (key,) = list(store._redis.scan_iter(match=store._prefix + "*"))
        # (the expiry is rounded up to a whole bucket: see test_source_sessions.py)
        assert IDLE_SECONDS - 60 < store._redis.ttl(key) <= IDLE_SECONDS + EXPIRY_BUCKET_SECONDS
        store._redis.pexpire(key, 1)  # ... so let 30 idle minutes pass at once
        time.sleep(0.05)
    else:
        later = time.monotonic() + IDLE_SECONDS + 60
        monkeypatch.setattr("whistle.server.source_sessions.time.monotonic", lambda: later)
    assert client.get("/case").status_code == 302
    assert len(store) == 0


def test_followup_forged_token_refused(client: FlaskClient) -> None:
    with client.session_transaction() as sess:
        sess["source_token"] = "forged-token-value"
    assert client.get("/case").status_code == 302


def test_followup_status_and_outcome_visible_to_source(client: FlaskClient, app: Flask) -> None:
    phrase = file_report(client)
    with app.extensions["whistle"].sessions.begin() as db:
        set_status(db, the_report(app).id, "closed", "referred", "tester")
    source_login(client, phrase)
    html = client.get("/case?lang=en").get_data(as_text=True)
    assert "Closed" in html and "Referred to the competent authority" in html


def _plant_reply(app: Flask, reply: SealedReply | None, *, sealed: bytes = b"",
                 signature: bytes | None = None) -> None:
    """Store a reply item directly, bypassing the import checks: what someone with write access
    to the database can do."""
    with app.extensions["whistle"].sessions.begin() as db:
        report = db.scalars(select(Report)).one()
        item = add_item(db, report, seq=len(report.items) + 1, kind=ItemKind.REPLY,
                        sealed_envelope=reply.sealed if reply else sealed, attachments=(), channel=None)
        item.signature = reply.signature if reply else signature


WITHHELD = "could not be verified as coming from the investigation unit was withheld"
UNIT_LABEL = "Reply from the investigation unit"


def test_followup_reply_that_fails_to_open_is_shown_as_error(client: FlaskClient, app: Flask,
                                                             workstation: Workstation) -> None:
    """Signed by the unit for this report and key, yet not openable: an error, never skipped."""
    phrase = file_report(client)
    report = the_report(app)
    sealed = SealedBox(UnitPublicKey(os.urandom(32)).nacl_key).encrypt(b" " * 1024)
    signature = workstation.signing_key.sign(
        reply_signed_bytes(report.id, report.source_public_key, sealed))
    _plant_reply(app, SealedReply(report.id, report.source_public_key, sealed, signature))
    source_login(client, phrase)
    html = page_text(client.get("/case?lang=en").get_data(as_text=True))
    assert "could not be decrypted" in html


@pytest.mark.parametrize("signature", ["none", "made-up", "other-key", "v1-unsigned"])
def test_followup_forged_reply_in_database_is_withheld(client: FlaskClient, app: Flask,
                                                       signature: str) -> None:
    """The issue's forgery: a text sealed to the stored source key without the unit's key, planted
    in the database with no signature, a made-up one, or one by another signing key."""
    phrase = file_report(client)
    report = the_report(app)
    source_key = UnitPublicKey(report.source_public_key)
    text = "Soy la unidad: llame al 0999 000 000"
    forged = seal_reply(text, report.id, source_key, UnitSigningKey.generate())
    if signature == "none":
        _plant_reply(app, None, sealed=forged.sealed, signature=None)
    elif signature == "made-up":
        _plant_reply(app, None, sealed=forged.sealed, signature=os.urandom(64))
    elif signature == "other-key":
        _plant_reply(app, forged)
    else:  # a version-1 reply envelope, as every reply was before replies were signed
        _plant_reply(app, None, sealed=seal_envelope(Envelope(kind="reply", body=text), source_key))
    source_login(client, phrase)
    html = page_text(client.get("/case?lang=en").get_data(as_text=True))
    assert text not in html and "0999" not in html
    assert WITHHELD in html and UNIT_LABEL not in html


def test_followup_key_swap_and_resealed_reply_is_withheld(client: FlaskClient, app: Flask,
                                                          workstation: Workstation) -> None:
    """With write access to the database: swap reports.source_public_key for one's own, read the
    unit's real reply, pass it on re-sealed to the source's key, put the key back. The source sees
    neither text as the unit's."""
    phrase = file_report(client)
    report = the_report(app)
    real_key = report.source_public_key
    attacker = UnitSecretKey.generate()
    state = app.extensions["whistle"]
    with state.sessions.begin() as db:
        db.get(Report, report.id).source_public_key = attacker.public_key.encode()
    # The unit replies to the key the (tampered) manifest shows; the import accepts it.
    text = "Respuesta real de la unidad, leída por el atacante"
    genuine = seal_reply(text, report.id, attacker.public_key, workstation.signing_key)
    with state.sessions.begin() as db:
        import_replies(db, [genuine], "alice", state.unit_sign_key)
    stolen = open_reply(genuine, attacker, state.unit_sign_key)
    assert stolen == text  # the attacker did read it: signing cannot prevent that (item 2 will)
    envelope = ReplyEnvelope(report_id=report.id, recipient=real_key, body=stolen)
    resealed = SealedBox(UnitPublicKey(real_key).nacl_key).encrypt(envelope.to_bytes())
    _plant_reply(app, SealedReply(report.id, real_key, resealed, genuine.signature))
    with state.sessions.begin() as db:
        db.get(Report, report.id).source_public_key = real_key
    source_login(client, phrase)
    html = page_text(client.get("/case?lang=en").get_data(as_text=True))
    assert text not in html and UNIT_LABEL not in html
    assert html.count(WITHHELD) == 2


def _login_in_english(client: FlaskClient, typed: str):  # type: ignore[no-untyped-def]
    client.get("/followup?lang=en")
    return source_login(client, typed)


@pytest.mark.parametrize(("typed", "count"), [
    ("uno dos tres", 3),
    ("  Uno,dos;TRES.\tcuatro  ", 4),  # the same normalisation as the derivation
    ("x" * 400, 1),
    ("a b c d e f g h i", 9),  # 8 is a Spanish passphrase's length (issue 11)
    (", ; .", 0),
])
def test_followup_word_count_told_before_any_lookup(client: FlaskClient, monkeypatch: pytest.MonkeyPatch,
                                                    typed: str, count: int) -> None:
    """A passphrase with the wrong number of words is told how many it had, without a derivation
    or a lookup (so the answer says nothing about which passphrases exist), and the typed text is
    not written back into the page."""
    import whistle.core.passphrase as passphrase

    calls: list[str] = []

    def counting(typed: str, params: passphrase.Argon2Params) -> passphrase.SourceKeys:
        calls.append("derive")
        raise AssertionError("no derivation for a miscounted passphrase")

    monkeypatch.setattr(passphrase, "derive", counting)
    resp = _login_in_english(client, typed)
    html = page_text(resp.get_data(as_text=True))
    assert resp.status_code == 400
    word = "word" if count == 1 else "words"
    assert f"You typed {count} {word}. A receipt passphrase has 7 words" in html
    assert "does not match any report" not in html
    assert calls == []
    if typed.strip(" ,;."):
        assert typed.strip() not in html


def test_followup_word_count_mistakes_never_start_the_backoff(client: FlaskClient) -> None:
    for _ in range(8):
        assert _login_in_english(client, "uno dos tres cuatro cinco seis").status_code == 400
    resp = source_login(client, "palabra " * 7)
    assert resp.status_code == 400
    assert "Too many wrong passphrases" not in resp.get_data(as_text=True)


def test_followup_seven_wrong_words_get_one_generic_message(client: FlaskClient) -> None:
    html = page_text(_login_in_english(client, "Palabra, " * 7).get_data(as_text=True))
    assert "That passphrase does not match any report." in html
    assert "You typed" not in html


def test_followup_passphrase_field_shows_typing_and_never_echoes_it(client: FlaskClient) -> None:
    """A text box (typos show) with no autocompletion, capitals or spelling fixes, a hide control
    and the number of words next to it; a refused passphrase never comes back in the page."""
    import re

    html = client.get("/followup?lang=en").get_data(as_text=True)
    (field,) = re.findall(r'<input[^>]*name="passphrase"[^>]*>', html)
    for attribute in ('type="text"', 'autocomplete="off"', 'autocapitalize="none"',
                      'spellcheck="false"', 'aria-describedby="passphrase-hint"'):
        assert attribute in field, attribute
    assert re.search(r'<input[^>]*type="checkbox"[^>]*id="hide-passphrase"', html)
    assert '<label for="hide-passphrase"' in html
    assert re.search(r'id="passphrase-hint">7 words', html)
    typed = "ventana " * 7
    refused = source_login(client, typed).get_data(as_text=True)
    assert "ventana" not in refused
    (field,) = re.findall(r'<input[^>]*name="passphrase"[^>]*>', refused)
    assert 'value=""' in field


def test_followup_busy_server_shows_the_form(client: FlaskClient, app: Flask,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every argon2 slot taken: 503 with Retry-After, the form and the reason — no bare error page."""
    from whistle.core.passphrase import GateBusyError

    def busy(*args: object, **kwargs: object) -> None:
        raise GateBusyError("busy")

    monkeypatch.setattr(app.extensions["whistle"].gate, "derive", busy)
    resp = _login_in_english(client, "palabra " * 7)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "30"
    assert 'name="passphrase"' in html and "The server is busy." in html
    assert "Back to the start page" not in html


def test_followup_expired_form_shows_the_form(client: FlaskClient) -> None:
    """A login posted with a stale CSRF token gets the form again (with a fresh token)."""
    client.get("/followup?lang=en")
    resp = client.post("/followup", data={"csrf_token": "stale", "passphrase": "palabra " * 7})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert 'name="passphrase"' in html and "Your session expired" in html
    assert "Back to the start page" not in html
    assert "palabra" not in html


# --- Protocol v2: the browser derives, the server checks bindings (docs/protocol.md 5.3) -------


def _stored_envelope(app: Flask, workstation: Workstation, kind: str) -> Envelope:
    from whistle.core.crypto import open_envelope
    from whistle.server.blobstore import read_bytes

    with app.extensions["whistle"].sessions() as db:
        item = db.scalars(select(Item).where(Item.kind == kind).order_by(Item.seq.desc())).first()
        assert item is not None
        return open_envelope(read_bytes(db, item.envelope_blob_id), workstation.secret_key)


def _no_argon2(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    import whistle.core.passphrase as passphrase

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("argon2 ran on the server")

    monkeypatch.setattr(app.extensions["whistle"].gate, "derive", refuse)
    monkeypatch.setattr(passphrase, "derive", refuse)
    monkeypatch.setattr(passphrase, "hash_secret_raw", refuse)


def test_followup_browser_login_opens_a_session_with_no_key(
    client: FlaskClient, app: Flask, workstation: Workstation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The login key the browser derived logs in: one SHA-256 and a lookup, no argon2; the session
    is replaced (new CSRF secret, language kept) and holds no key of the source."""
    keys = file_report_api(client, workstation.secret_key.public_key)
    client.get("/followup?lang=en")
    old_token = csrf_token(client, "/followup")
    _no_argon2(app, monkeypatch)
    resp = browser_login(client, keys.login_key, old_token)
    answer = resp.get_json()
    assert resp.status_code == 200 and answer["ok"] is True and answer["case_url"] == "/case"
    # The answer carries the new session's token (the old one is void): usable at once.
    assert answer["csrf_token"] != old_token
    assert keys.passphrase.split()[0] not in " ".join(resp.headers.getlist("Set-Cookie"))
    with client.session_transaction() as sess:
        assert sess["lang"] == "en"
        found = app.extensions["whistle"].source_sessions.get(sess["source_token"])
    assert found is not None and found.browser and found.secret_key is None and found.case_tag is None
    page = client.get("/case")
    assert page.status_code == 200 and 'data-browser-session="true"' in page.get_data(as_text=True)
    assert csrf_token(client, "/case") != old_token
    assert client.post("/logout", data={"csrf_token": answer["csrf_token"]}).status_code == 302
    assert client.post("/logout", data={"csrf_token": old_token}).status_code == 400


def test_followup_browser_login_same_passphrase_as_the_form(client: FlaskClient, app: Flask,
                                                            workstation: Workstation) -> None:
    """A report filed in the browser opens with the passphrase on the form too (JavaScript off
    later), as a server session that can read replies."""
    keys = file_report_api(client, workstation.secret_key.public_key)
    reply(app, workstation, "Respuesta legible", case_tag=keys.case_tag, seq=1)
    assert source_login(client, keys.passphrase).status_code == 302
    assert "Respuesta legible" in client.get("/case").get_data(as_text=True)


def test_followup_browser_login_wrong_key_counted_and_backed_off(client: FlaskClient,
                                                                 workstation: Workstation) -> None:
    """As /followup: four wrong keys are each 400 ``wrong_passphrase``; the fourth says the wait
    it starts; then 429 with Retry-After before anything is read, even for the right key."""
    keys = file_report_api(client, workstation.secret_key.public_key)
    client.get("/followup?lang=en")
    answers = [browser_login(client, os.urandom(32)) for _ in range(4)]
    assert [a.status_code for a in answers] == [400] * 4
    assert {a.get_json()["error"] for a in answers} == {"wrong_passphrase"}
    assert all("does not match any report" in a.get_json()["message"] for a in answers)
    assert "Too many wrong passphrases" not in answers[2].get_json()["message"]
    assert "Too many wrong passphrases" in answers[3].get_json()["message"]
    refused = browser_login(client, keys.login_key)
    assert refused.status_code == 429 and refused.get_json()["error"] == "http_429"
    assert int(refused.headers["Retry-After"]) >= 1
    with client.session_transaction() as sess:
        assert "source_token" not in sess


@pytest.mark.parametrize("value", [None, "", "AAAA", "A" * 43 + "=", "not base64 at all but 44 ch",
                                   "-" * 43 + "=", " " + "B" * 42 + "=",
                                   "QUFB" * 10 + "QQ=="])  # 31 bytes
def test_followup_browser_login_malformed_key_is_400_and_not_counted(
    client: FlaskClient, workstation: Workstation, value: str | None
) -> None:
    keys = file_report_api(client, workstation.secret_key.public_key)
    token = csrf_token(client, "/followup")
    for _ in range(6):
        data = {} if value is None else {"login_key": value}
        resp = client.post("/api/v1/login", data=data, headers={"X-CSRFToken": token})
        assert resp.status_code == 400 and resp.get_json()["error"] == "bad_login_key"
    # Six malformed keys set no wait: the right key still logs in at once.
    assert browser_login(client, keys.login_key).status_code == 200


def test_followup_browser_login_needs_the_csrf_header(client: FlaskClient,
                                                      workstation: Workstation) -> None:
    keys = file_report_api(client, workstation.secret_key.public_key)
    token = csrf_token(client, "/followup")
    from support import b64

    resp = client.post("/api/v1/login", data={"login_key": b64(keys.login_key), "csrf_token": token})
    assert resp.status_code == 400 and resp.get_json()["error"] == "csrf"
    assert browser_login(client, keys.login_key, "forged").get_json()["error"] == "csrf"
    with client.session_transaction() as sess:
        assert "source_token" not in sess


def test_followup_browser_session_case_carries_sealed_replies_never_plaintext(
    client: FlaskClient, app: Flask, workstation: Workstation
) -> None:
    """In a browser session the server holds no key: each reply is in the page sealed, with its
    signature, for the page's script; the case element says what the script checks against."""
    import base64
    import html as html_lib
    import re

    from whistle.server.blobstore import read_bytes

    keys = file_report_api(client, workstation.secret_key.public_key)
    text = "Texto de la respuesta que solo abre el navegador"
    reply(app, workstation, text, case_tag=keys.case_tag, seq=1)
    _plant_reply(app, None, sealed=b"\1" * 1072, signature=None)  # unsigned: data-signature ""
    browser_login(client, keys.login_key)
    page = client.get("/case?lang=en").get_data(as_text=True)
    assert text not in page and "solo abre" not in page
    report = the_report(app)
    assert f'data-report-id="{report.id}"' in page
    assert f'data-source-public-key="{base64.b64encode(keys.public_key).decode()}"' in page
    assert 'data-next-seq="2"' in page and 'data-browser-session="true"' in page
    sealed = re.findall(r'<li class="entry reply sealed" data-sealed="([^"]*)" data-signature="([^"]*)">',
                        page)
    with app.extensions["whistle"].sessions() as db:
        items = db.scalars(select(Item).where(Item.kind == "reply").order_by(Item.seq)).all()
        stored = [(base64.b64encode(read_bytes(db, i.envelope_blob_id)).decode(),
                   base64.b64encode(i.signature).decode() if i.signature else "") for i in items]
    assert [(html_lib.unescape(a), html_lib.unescape(b)) for a, b in sealed] == stored
    assert stored[1][1] == "" and stored[0][1]
    # What the page's script does with it: verify and open with its own keys.
    opened = open_reply(SealedReply(report.id, keys.public_key, base64.b64decode(stored[0][0]),
                                    base64.b64decode(stored[0][1])), keys.secret_key,
                        app.extensions["whistle"].unit_sign_key, case_tag=keys.case_tag)
    assert opened.body == text and opened.seq == 1


def test_followup_server_session_withholds_wrong_tag_and_repeated_seq(
    client: FlaskClient, app: Flask, workstation: Workstation
) -> None:
    """A server session opens replies with the case tag and numbers checked: a signed v3 reply
    with another case's tag, or a number already shown (a replayed copy), is withheld."""
    phrase = file_report(client)
    from whistle.core.passphrase import derive

    keys = derive(phrase, app.extensions["whistle"].secrets.argon2)
    report = the_report(app)
    recipient = UnitPublicKey(report.source_public_key)
    first = seal_reply("Primera respuesta", report.id, recipient, workstation.signing_key,
                       case_tag=keys.case_tag, seq=1)
    moved = seal_reply("Respuesta de otro caso", report.id, recipient, workstation.signing_key,
                       case_tag=os.urandom(16), seq=2)
    copy = seal_reply("Primera respuesta, otra vez", report.id, recipient,
                      workstation.signing_key, case_tag=keys.case_tag, seq=1)
    second = seal_reply("Segunda respuesta", report.id, recipient, workstation.signing_key,
                        case_tag=keys.case_tag, seq=2)
    state = app.extensions["whistle"]
    with state.sessions.begin() as db:
        import_replies(db, [first, moved, copy, second], "tester", state.unit_sign_key)
    source_login(client, phrase)
    page = client.get("/case?lang=en").get_data(as_text=True)
    assert 'data-browser-session="false"' in page and 'data-sealed=' not in page
    page = page_text(page)
    assert "Primera respuesta" in page and "Segunda respuesta" in page
    assert "otro caso" not in page and "otra vez" not in page
    assert page.count(WITHHELD) == 2


def test_followup_messages_seq_checked(client: FlaskClient, app: Flask,
                                       workstation: Workstation) -> None:
    """``seq`` must be the case's next source number (replies do not count): missing or not a
    number is 400 ``bad_seq``, any other number 409 ``stale_seq``; nothing stored either way."""
    unit = workstation.secret_key.public_key
    keys = file_report_api(client, unit)
    reply(app, workstation, "Una respuesta", case_tag=keys.case_tag, seq=1)
    browser_login(client, keys.login_key)

    def messages() -> int:
        with app.extensions["whistle"].sessions() as db:
            return len(db.scalars(select(Item).where(Item.kind == "message")).all())

    for seq in (None, "", "dos", "-2", "2.0", "٢", "1" * 10):
        payload = message_payload(unit, keys, 2, "x")
        if seq is None:
            payload.pop("seq")
        else:
            payload["seq"] = seq
        resp = post_message(client, payload)
        assert resp.status_code == 400 and resp.get_json()["error"] == "bad_seq", seq
    for seq in (0, 1, 3, 99):
        payload = message_payload(unit, keys, max(seq, 2), "x") | {"seq": str(seq)}
        resp = post_message(client, payload)
        assert resp.status_code == 409 and resp.get_json()["error"] == "stale_seq", seq
        assert resp.get_json()["message"]
    assert messages() == 0
    assert post_message(client, message_payload(unit, keys, 2, "Segundo")).status_code == 201
    # The same again (a replay, or a page that was open meanwhile): stale.
    again = post_message(client, message_payload(unit, keys, 2, "Segundo"))
    assert again.status_code == 409 and again.get_json()["error"] == "stale_seq"
    assert post_message(client, message_payload(unit, keys, 3, "Tercero")).status_code == 201
    assert messages() == 2
    page = client.get("/case").get_data(as_text=True)
    assert 'data-next-seq="4"' in page


def test_followup_form_message_sealed_v2_with_the_case_tag(client: FlaskClient, app: Flask,
                                                           workstation: Workstation) -> None:
    """A JavaScript-off message in a server session: a v2 envelope with the case tag kept in the
    session, the source's key and the next source number (the reply before it does not count)."""
    phrase = file_report(client, "Informe")
    from whistle.core.passphrase import derive

    keys = derive(phrase, app.extensions["whistle"].secrets.argon2)
    assert _stored_envelope(app, workstation, "report").binding == Binding(
        keys.case_tag, 1, keys.public_key_bytes)
    reply(app, workstation, "Una respuesta", case_tag=keys.case_tag, seq=1)
    source_login(client, phrase)
    for number, body in ((2, "Segundo"), (3, "Tercero")):
        resp = client.post("/case", data={**form_tokens(client, "/case"), "body": body},
                           content_type="multipart/form-data")
        assert resp.status_code == 302
        envelope = _stored_envelope(app, workstation, "message")
        assert envelope.version == 2 and envelope.body == body and envelope.category == ""
        assert envelope.binding == Binding(keys.case_tag, number, keys.public_key_bytes)


def test_followup_browser_session_form_message_refused(client: FlaskClient, app: Flask,
                                                       workstation: Workstation) -> None:
    """A browser session has no case tag on the server: a JavaScript-off message there is
    refused (an unbound one would be quarantined), nothing stored, the source told what to do."""
    keys = file_report_api(client, workstation.secret_key.public_key)
    browser_login(client, keys.login_key)
    client.get("/case?lang=en")
    resp = client.post("/case", data={**form_tokens(client, "/case"), "body": "Sin sellar"},
                       content_type="multipart/form-data")
    assert resp.status_code == 400
    assert "log in again with your passphrase" in resp.get_data(as_text=True)
    with app.extensions["whistle"].sessions() as db:
        assert db.scalars(select(Item).where(Item.kind == "message")).all() == []
