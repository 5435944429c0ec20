# SPDX-License-Identifier: AGPL-3.0-or-later
"""The WhatsApp channel (issue 14): the webhook, the guided conversation, sealing on arrival,
filing through the intake path, idempotency, cancelling, limits, hostile payloads.

The bridge runs in-process (Flask's test client posts Meta's webhooks) and talks to a stand-in
of the Graph API on loopback (tests/whatsapp_standin.py) that records what it is sent and serves
media. The canary over every byte at rest is tests/test_whatsapp_canary.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from support import Workstation, report_folders
from whatsapp_standin import (
    PHONE_NUMBER_ID,
    VERIFY_TOKEN,
    WEB_ADDRESS,
    GraphStandIn,
    location,
    media,
    sign,
    start_standin,
    status_webhook,
    text,
    webhook,
    whatsapp_environ,
)

from whistle import create_app
from whistle.core.passphrase import derive
from whistle.server.config import ConfigError, load_config
from whistle.server.export import export_bundle
from whistle.server.instance import load_or_create_secrets
from whistle.server.models import Item, Report
from whistle.server.whatsapp.bridge import Bridge
from whistle.server.whatsapp.payload import parse, signature_ok
from whistle.workstation.decrypt import decrypt_bundle

NUMBER = "593991234567"


@pytest.fixture
def standin() -> Iterator[GraphStandIn]:
    s = start_standin()
    yield s
    s.close()


def make_wa_app(environ: dict[str, str], tmp_path: Path, standin: GraphStandIn,
                **extra: str) -> Flask:
    env = environ | whatsapp_environ(standin) | extra
    config = load_config(env, cwd=tmp_path)
    load_or_create_secrets(config, time_cost=1, memory_cost_kib=8)
    app = create_app(config)
    app.config.update(TESTING=True)
    return app


@pytest.fixture
def wa_app(environ: dict[str, str], tmp_path: Path, standin: GraphStandIn) -> Iterator[Flask]:
    app = make_wa_app(environ, tmp_path, standin)
    yield app
    app.extensions["whistle_whatsapp"].close()
    app.extensions["whistle"].engine.dispose()


def bridge_of(app: Flask) -> Bridge:
    found = app.extensions["whistle_whatsapp"]
    assert isinstance(found, Bridge)
    return found


def post(client: FlaskClient, body: bytes, signature: str | None = "valid"):  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = sign(body) if signature == "valid" else signature
    return client.post("/whatsapp/webhook", data=body, headers=headers)


def say(app: Flask, *messages: dict[str, object]) -> None:
    """Deliver one webhook holding ``messages`` and wait for the bridge to handle it."""
    resp = post(app.test_client(), webhook(*messages))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert bridge_of(app).join(20)


def count(app: Flask, model: type) -> int:
    with app.extensions["whistle"].sessions() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def start_account(app: Flask, number: str = NUMBER, category: str = "4") -> None:
    """Greet, choose a category (corruption by default) and skip its questions."""
    say(app, text(number, "hola"))
    say(app, text(number, category))
    for _ in app.extensions["whistle"].config.questionnaire.questions_for("corruption"):
        say(app, text(number, "0"))


# --- configuration and the webhook's doors ----------------------------------------------------


def test_whatsapp_config_refuses_to_start_without_its_settings(environ: dict[str, str],
                                                               tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ | {"WHISTLE_INTERFACE": "whatsapp"}, cwd=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "WHISTLE_WHATSAPP_APP_SECRET" in message and "WHISTLE_WHATSAPP_WEB_ADDRESS" in message
    env = environ | whatsapp_environ(start_standin()) | {"WHISTLE_WHATSAPP_PHONE_NUMBER_ID": "+593 99"}
    with pytest.raises(ConfigError, match="PHONE_NUMBER_ID"):
        load_config(env, cwd=tmp_path)


def test_whatsapp_interface_serves_only_the_webhook(wa_app: Flask) -> None:
    client = wa_app.test_client()
    assert client.get("/").status_code == 404
    assert client.get("/submit").status_code == 404
    assert client.get("/investigator/login").status_code == 404


def test_whatsapp_verification_handshake(wa_app: Flask) -> None:
    client = wa_app.test_client()
    ok = client.get(f"/whatsapp/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}"
                    "&hub.challenge=1158201444")
    assert ok.status_code == 200 and ok.get_data() == b"1158201444"
    for query in ("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
                  f"hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1",
                  f"hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}",
                  "hub.mode=subscribe&hub.verify_token=%C3%A9&hub.challenge=1"):
        resp = client.get("/whatsapp/webhook?" + query)
        assert resp.status_code == 403, query
        assert b"1158201444" not in resp.get_data()


def test_whatsapp_signature_refused_and_accepted(wa_app: Flask, standin: GraphStandIn) -> None:
    client = wa_app.test_client()
    body = webhook(text(NUMBER, "hola"))
    forged = "sha256=" + hashlib.sha256(body).hexdigest()
    for signature in (None, "", forged, sign(body, "another-secret"), "sha256=" + "é" * 64,
                      sign(body).upper(), sign(body)[:-2], "sha1=" + "0" * 40):
        resp = post(client, body, signature)
        assert resp.status_code == 403, signature
    assert bridge_of(wa_app).join(5)
    assert standin.sent == [] and len(bridge_of(wa_app).store) == 0  # type: ignore[arg-type]
    # The same bytes signed with the app secret are accepted; a signature over other bytes is not.
    assert post(client, body + b" ", sign(body)).status_code == 403
    assert post(client, body).status_code == 200
    assert bridge_of(wa_app).join(10)
    assert standin.texts_to(NUMBER), "the accepted message got no answer"
    assert signature_ok("s", b"x", None) is False


def test_whatsapp_length_checked_before_the_body(wa_app: Flask) -> None:
    client = wa_app.test_client()
    big = b"{" + b" " * (4 * 1024 * 1024) + b"}"
    assert post(client, big).status_code == 413


def test_whatsapp_parse_reads_every_message_and_skips_the_rest() -> None:
    body = webhook(text(NUMBER, "uno"), text(NUMBER, "dos"))
    assert [m.text for m in parse(body, PHONE_NUMBER_ID)] == ["uno", "dos"]
    assert parse(body, "999") == []  # another number of the same app
    assert parse(status_webhook(NUMBER), PHONE_NUMBER_ID) == []
    assert parse(b"\xff\xfe", PHONE_NUMBER_ID) == [] and parse(b"[]", PHONE_NUMBER_ID) == []
    assert "593991234567" not in repr(parse(body, PHONE_NUMBER_ID)[0])


# --- a whole conversation --------------------------------------------------------------------


def test_whatsapp_full_conversation_filed_and_decrypted_byte_for_byte(
        wa_app: Flask, standin: GraphStandIn, workstation: Workstation, tmp_path: Path) -> None:
    photo = os.urandom(300_000)
    document = os.urandom(1_500_000)
    voice = b"OggS" + os.urandom(90_000)
    say(wa_app, text(NUMBER, "Hola"))
    replies = standin.texts_to(NUMBER)
    assert len(replies) == 2 and WEB_ADDRESS in replies[0]
    assert "*cancel" in replies[0] and "1. " in replies[1]  # *cancel* or, in Spanish, *cancelar*
    say(wa_app, text(NUMBER, "2"))  # medication: province, facility, month, medication
    for answer in ("pichincha", "Hospital Carlos Andrade Marín", "03/2025", "metformina 850 mg"):
        say(wa_app, text(NUMBER, answer))
    say(wa_app, text(NUMBER, "No me entregaron la metformina en tres visitas."))
    say(wa_app, media(NUMBER, "image", standin.add_media(photo, "image/jpeg"), "image/jpeg",
                      caption="la receta"))
    say(wa_app, media(NUMBER, "document", standin.add_media(document, "application/pdf"),
                      "application/pdf", filename="constancia.pdf", caption="constancia"))
    say(wa_app, media(NUMBER, "audio", standin.add_media(voice, "audio/ogg; codecs=opus"),
                      "audio/ogg; codecs=opus", voice=True))
    say(wa_app, location(NUMBER, -0.2105, -78.4918, "Hospital del Sur"))
    assert count(wa_app, Report) == 0, "nothing is filed before the confirmation"
    say(wa_app, text(NUMBER, "listo"))
    assert "*send*" in standin.texts_to(NUMBER)[-1] or "*enviar*" in standin.texts_to(NUMBER)[-1]
    say(wa_app, text(NUMBER, "Enviar"))
    receipt, passphrase = standin.texts_to(NUMBER)[-2:]
    assert WEB_ADDRESS in receipt and len(passphrase.split()) == 8

    state = wa_app.extensions["whistle"]
    with state.sessions() as db:
        report = db.scalars(select(Report)).one()
        assert report.channel == "whatsapp"
        assert [(i.seq, i.kind, i.channel) for i in sorted(report.items, key=lambda i: i.seq)] == [
            (1, "report", "whatsapp"), (2, "message", "whatsapp"), (3, "message", "whatsapp"),
            (4, "message", "whatsapp"), (5, "message", "whatsapp")]
        # The passphrase sent in the chat is the report's: the source can follow up on the web.
        assert derive(passphrase, state.secrets.argon2).login_hash == report.login_hash
    assert len(bridge_of(wa_app).spools) == 0

    bundle = tmp_path / "bundle.zip"
    export_bundle(state.sessions, bundle, unit_fingerprint="test")
    with zipfile.ZipFile(bundle) as zf:
        assert '"channel": "whatsapp"' in zf.read("manifest.json").decode() or \
            '"channel":"whatsapp"' in zf.read("manifest.json").decode()
    out = tmp_path / "out"
    decrypt_bundle(bundle, workstation.secret_key, out)
    (folder,) = report_folders(out)
    report_txt = (folder / "report.txt").read_text(encoding="utf-8")
    assert "No me entregaron la metformina en tres visitas." in report_txt
    assert "Medication not delivered" in report_txt and "Binding: checked" in report_txt
    assert "Channel: WhatsApp" in report_txt
    assert (folder / "attachments" / "foto-2.jpg").read_bytes() == photo
    assert (folder / "attachments" / "constancia.pdf").read_bytes() == document
    assert (folder / "attachments" / "nota-de-voz-4.ogg").read_bytes() == voice
    messages = sorted(folder.glob("message-*.txt"))
    assert [m.name for m in messages] == ["message-002.txt", "message-003.txt", "message-004.txt",
                                          "message-005.txt"]
    assert "la receta" in messages[0].read_text(encoding="utf-8")
    assert "Hospital del Sur" in messages[3].read_text(encoding="utf-8")
    assert not (out / "QUARANTINE.txt").exists()


def test_whatsapp_answers_sealed_as_fields(wa_app: Flask, standin: GraphStandIn,
                                           workstation: Workstation, tmp_path: Path) -> None:
    from whistle.core.crypto import open_envelope
    from whistle.server.blobstore import read_bytes

    say(wa_app, text(NUMBER, "hola"))
    say(wa_app, text(NUMBER, "medicamentos no entregados"))
    for answer in ("19", "0", "2025-3", "nada"):
        say(wa_app, text(NUMBER, answer))
    say(wa_app, text(NUMBER, "relato"))
    say(wa_app, text(NUMBER, "listo"))
    say(wa_app, text(NUMBER, "sí"))
    state = wa_app.extensions["whistle"]
    with state.sessions() as db:
        item = db.scalars(select(Item).where(Item.seq == 1)).one()
        sealed = read_bytes(db, item.envelope_blob_id)
    envelope = open_envelope(sealed, workstation.secret_key)
    assert envelope.category == "medication"
    assert envelope.answers == {"province": "pichincha", "month": "2025-03", "medication": "nada"}


def test_whatsapp_out_of_order_deliveries_keep_the_sources_order(
        wa_app: Flask, standin: GraphStandIn, workstation: Workstation, tmp_path: Path) -> None:
    start_account(wa_app)
    # One request holding three messages in the wrong order (a batched delivery).
    say(wa_app, text(NUMBER, "tercero", ts=1_750_000_030), text(NUMBER, "primero", ts=1_750_000_010),
        text(NUMBER, "segundo", ts=1_750_000_020))
    say(wa_app, text(NUMBER, "listo"))
    say(wa_app, text(NUMBER, "enviar"))
    bundle = tmp_path / "b.zip"
    export_bundle(wa_app.extensions["whistle"].sessions, bundle, unit_fingerprint="t")
    decrypt_bundle(bundle, workstation.secret_key, tmp_path / "out")
    (folder,) = report_folders(tmp_path / "out")
    assert "primero" in (folder / "report.txt").read_text(encoding="utf-8")
    assert "segundo" in (folder / "message-002.txt").read_text(encoding="utf-8")
    assert "tercero" in (folder / "message-003.txt").read_text(encoding="utf-8")


def test_whatsapp_retries_and_duplicates_file_once(wa_app: Flask, standin: GraphStandIn) -> None:
    client = wa_app.test_client()
    start_account(wa_app)
    account = text(NUMBER, "una sola vez")
    body = webhook(account, account)  # the same message twice in one delivery
    for _ in range(3):  # and the delivery retried
        assert post(client, body).status_code == 200
    assert bridge_of(wa_app).join(10)
    finish = webhook(text(NUMBER, "listo"))
    send = webhook(text(NUMBER, "enviar"))
    for delivery in (finish, finish, send, send, send):
        assert post(client, delivery).status_code == 200
        assert bridge_of(wa_app).join(10)
    assert count(wa_app, Report) == 1 and count(wa_app, Item) == 1
    assert sum(1 for t in standin.texts_to(NUMBER) if len(t.split()) == 8 and "\n" not in t) == 1


def test_whatsapp_cancelar_leaves_nothing(wa_app: Flask, standin: GraphStandIn) -> None:
    start_account(wa_app)
    say(wa_app, text(NUMBER, "algo que luego cancelo"))
    say(wa_app, media(NUMBER, "image", standin.add_media(os.urandom(10_000), "image/png"), "image/png"))
    bridge = bridge_of(wa_app)
    assert len(bridge.spools) == 1 and len(bridge.store) == 1  # type: ignore[arg-type]
    say(wa_app, text(NUMBER, "¡Cancelar!"))
    assert len(bridge.spools) == 0 and len(bridge.store) == 0  # type: ignore[arg-type]
    assert count(wa_app, Report) == 0 and count(wa_app, Item) == 0
    # The next message starts afresh, as a first contact.
    say(wa_app, text(NUMBER, "hola otra vez"))
    assert WEB_ADDRESS in standin.texts_to(NUMBER)[-2]


def test_whatsapp_media_over_its_cap_is_refused(wa_app: Flask, standin: GraphStandIn) -> None:
    start_account(wa_app)
    big = standin.add_pattern(b"\0" * 65536, 81, "image/jpeg")  # 5.06 MiB > 5 MiB for an image
    say(wa_app, media(NUMBER, "image", big, "image/jpeg"))
    assert "5 MB" in standin.texts_to(NUMBER)[-1]
    assert len(bridge_of(wa_app).spools) == 0


def test_whatsapp_receipt_sent_again_when_it_did_not_go_out(wa_app: Flask, standin: GraphStandIn) -> None:
    start_account(wa_app)
    say(wa_app, text(NUMBER, "relato"))
    say(wa_app, text(NUMBER, "listo"))
    standin.fail_sends = 1
    say(wa_app, text(NUMBER, "enviar"))
    assert count(wa_app, Report) == 1
    say(wa_app, text(NUMBER, "?"))
    passphrase = standin.texts_to(NUMBER)[-1]
    state = wa_app.extensions["whistle"]
    with state.sessions() as db:
        stored = db.scalars(select(Report)).one().login_hash
    assert derive(passphrase, state.secrets.argon2).login_hash == stored
    # Delivered now: forgotten. The next message starts a new conversation.
    say(wa_app, text(NUMBER, "hola"))
    assert WEB_ADDRESS in standin.texts_to(NUMBER)[-2] and passphrase not in standin.texts_to(NUMBER)[-2:]


def test_whatsapp_english_on_request(wa_app: Flask, standin: GraphStandIn) -> None:
    say(wa_app, text(NUMBER, "English"))
    first = standin.texts_to(NUMBER)[0]
    assert "Escriba *español* para español." in first
    # The passphrase is drawn when the account starts, in the language of that moment.
    say(wa_app, text("593990000001", "hola"))
    say(wa_app, text("593990000001", "in English"))
    assert "Escriba *español* para español." not in standin.texts_to("593990000001")[-1]
    say(wa_app, text("593990000001", "4"))
    for _ in wa_app.extensions["whistle"].config.questionnaire.questions_for("corruption"):
        say(wa_app, text("593990000001", "skip"))
    say(wa_app, text("593990000001", "account"))
    say(wa_app, text("593990000001", "done"))
    say(wa_app, text("593990000001", "send"))
    phrase = standin.texts_to("593990000001")[-1]
    from whistle.core.passphrase import wordlist

    assert all(word in wordlist("en") for word in phrase.split())


# --- limits ------------------------------------------------------------------------------------


def test_whatsapp_limits_per_number_and_global(environ: dict[str, str], tmp_path: Path,
                                               standin: GraphStandIn) -> None:
    app = make_wa_app(environ, tmp_path, standin,
                      WHISTLE_WHATSAPP_LIMIT_NUMBER_MESSAGES_PER_HOUR="4",
                      WHISTLE_WHATSAPP_LIMIT_GLOBAL_CONVERSATIONS_PER_HOUR="2")
    try:
        for n in range(6):
            say(app, text(NUMBER, f"mensaje {n}"))
        said = standin.texts_to(NUMBER)
        # The bridge speaks Spanish by default ("minuto"); "minute" in English.
        limit_texts = [t for t in said if "minut" in t]
        assert len(limit_texts) == 1, said  # told once per window, not once per message
        # Another number is not affected by the first one's ceiling.
        say(app, text("593990000002", "hola"))
        assert WEB_ADDRESS in standin.texts_to("593990000002")[0]
        # The global ceiling on new conversations: the third number is told to come back.
        say(app, text("593990000003", "hola"))
        (busy,) = standin.texts_to("593990000003")
        assert WEB_ADDRESS not in busy and "minut" in busy
    finally:
        bridge_of(app).close()
        app.extensions["whistle"].engine.dispose()


def test_whatsapp_full_queue_answers_503_and_the_retry_is_handled_once(
        environ: dict[str, str], tmp_path: Path, standin: GraphStandIn) -> None:
    app = make_wa_app(environ, tmp_path, standin, WHISTLE_WHATSAPP_QUEUE="10",
                      WHISTLE_WHATSAPP_SETTLE_MS="500")
    try:
        client = app.test_client()
        body = webhook(*[text(f"59399000{n:04d}", "hola") for n in range(12)])
        assert post(client, body).status_code == 503
        assert bridge_of(app).join(20)
        assert post(client, body).status_code == 200
        assert bridge_of(app).join(20)
        assert all(len(standin.texts_to(f"59399000{n:04d}")) == 2 for n in range(12))
    finally:
        bridge_of(app).close()
        app.extensions["whistle"].engine.dispose()


def test_whatsapp_number_never_logged(wa_app: Flask, standin: GraphStandIn,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    start_account(wa_app)
    standin.fail_sends = 3
    say(wa_app, text(NUMBER, "relato"))
    say(wa_app, media(NUMBER, "image", "999999", "image/png"))  # unknown media: refused
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert NUMBER not in logged and "relato" not in logged
