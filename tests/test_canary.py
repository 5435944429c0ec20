# SPDX-License-Identifier: AGPL-3.0-or-later
"""Nothing sensitive at rest: plant unique canaries, then search every byte the server wrote.

A real server process runs on loopback with its own temporary folder and log files; reports go in
through the JavaScript-off form and through the API (the browser's derivation emulated with
libsodium), with a User-Agent canary and an X-Forwarded-For address. Then neither the report
text, the attachment content, the passphrases, the keys derived from them (login key, seed,
secret key, case tag), the User-Agent nor the address may appear in the data folder (database,
WAL, secrets), the server's temporary folder or its logs. The test also decrypts the export, so
it fails if the canaries never made it in.
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.parse
import urllib.request
from pathlib import Path

from sqlalchemy import select
from support import (
    Browser,
    LiveServer,
    Workstation,
    api_payload,
    b64,
    csrf_from_html,
    derive_from_params,
    find_needles,
    message_payload,
    multipart,
    once_from_html,
    report_folders,
)

from whistle.core.crypto import UnitPublicKey
from whistle.core.replies import seal_reply
from whistle.server.casework import import_replies
from whistle.server.db import make_engine, make_sessionmaker
from whistle.server.export import export_bundle
from whistle.server.models import Report
from whistle.workstation.decrypt import decrypt_bundle


def test_canary_nothing_sensitive_at_rest(live_server: LiveServer, workstation: Workstation,
                                          tmp_path: Path) -> None:
    tag = secrets.token_hex(6)
    body_canary = f"CANARY-BODY-{tag}"
    file_canary = f"CANARY-FILE-{tag}".encode()
    name_canary = f"CANARY-NAME-{tag}.txt"
    ua_canary = f"CANARY-UA-{tag}/1.0"
    ip_canary = "203.0.113.77"
    browser = Browser(live_server.url, ua_canary, ip_canary)

    # JavaScript off: the form, sealed in server memory. The attachment is large enough that
    # Werkzeug's default would have spooled it to a temporary file.
    status, html = browser.request("/submit")
    assert status == 200
    attachment = file_canary * 40_000  # ~850 KB
    data, ctype = multipart([("csrf_token", csrf_from_html(html)), ("once", once_from_html(html)),
                             ("category", "corruption"),
                             ("body", f"Informe por formulario {body_canary}"),
                             ("attachments", (name_canary, "text/plain", attachment))])
    status, html = browser.request("/submit", data, {"Content-Type": ctype})
    assert status == 200, html
    form_phrase = re.search(r'<code id="receipt-passphrase">([^<]+)</code>', html).group(1)  # type: ignore[union-attr]
    # The receipt in the other language (its one-time ticket): the passphrase is kept for it in
    # the server's memory, encrypted, and must not land anywhere either.
    ticket = re.search(r'href="\?lang=en&amp;show=([^"]+)"', html).group(1)  # type: ignore[union-attr]
    status, html = browser.request(f"/receipt?lang=en&show={ticket}")
    assert status == 200 and form_phrase in html

    # JavaScript on: the browser draws the passphrase, derives and seals; the server gets the
    # login hash and public key only.
    status, html = browser.request("/submit")
    status, text = browser.request("/api/v1/params")
    params = json.loads(text)
    words = urllib.request.urlopen(live_server.url + params["passphrase"]["es"]["url"]).read()  # noqa: S310
    keys = derive_from_params(params, words)
    payload = api_payload(workstation.secret_key.public_key, f"Informe por API {body_canary}",
                          [(name_canary, "text/plain", attachment)], keys=keys)
    fields: list[tuple[str, str | tuple[str, str, bytes]]] = [
        ("report", ("report.bin", "application/octet-stream", payload["report"][0].getvalue()))]  # type: ignore[index]
    fields += [("attachment", ("attachment.bin", "application/octet-stream", f[0].getvalue()))
               for f in payload["attachment"]]  # type: ignore[union-attr]
    fields += list(keys.key_fields().items())
    data, ctype = multipart(fields)
    status, text = browser.request("/api/v1/reports", data,
                                   {"Content-Type": ctype, "X-CSRFToken": csrf_from_html(html)})
    assert status == 201, text
    api_phrase = keys.passphrase

    # Two-way: a reply from the unit, read by the source, and a follow-up message with a file.
    reply_canary = f"CANARY-REPLY-{tag}"
    message_canary = f"CANARY-MESSAGE-{tag}"
    engine = make_engine(live_server.app_config.database_url)
    with make_sessionmaker(engine).begin() as db:
        for report in db.scalars(select(Report)):
            sealed = seal_reply(f"Respuesta {reply_canary}", report.id,
                                UnitPublicKey(report.source_public_key), workstation.signing_key)
            import_replies(db, [sealed], "alice", workstation.signing_key.verify_key)
    engine.dispose()
    status, html = browser.request("/followup")
    data, ctype = multipart([("csrf_token", csrf_from_html(html)), ("passphrase", form_phrase)])
    status, html = browser.request("/followup", data, {"Content-Type": ctype})
    assert status == 200 and reply_canary in html, "the source could not read the reply"
    data, ctype = multipart([("csrf_token", csrf_from_html(html)), ("once", once_from_html(html)),
                             ("body", f"Mensaje {message_canary}"),
                             ("attachments", (name_canary, "text/plain", attachment))])
    status, html = browser.request("/case", data, {"Content-Type": ctype})
    assert status == 200 and "entry message" in html
    form_keys = derive_from_params(params, b"", form_phrase)  # what the server derived

    # The browser's source comes back with its login key, reads the reply sealed, and sends a
    # message it sealed itself.
    api_browser = Browser(live_server.url, ua_canary, ip_canary)
    status, html = api_browser.request("/followup")
    status, text = api_browser.request(
        "/api/v1/login", urllib.parse.urlencode({"login_key": b64(keys.login_key)}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "X-CSRFToken": csrf_from_html(html)})
    assert status == 200, text
    status, html = api_browser.request("/case")
    assert status == 200 and 'class="entry reply sealed"' in html and reply_canary not in html
    message = message_payload(workstation.secret_key.public_key, keys, 2,
                              f"Mensaje por API {message_canary}")
    data, ctype = multipart([("message", ("m.bin", "application/octet-stream",
                                          message["message"][0].getvalue())),  # type: ignore[index]
                             ("seq", "2")])
    status, text = api_browser.request("/api/v1/messages", data,
                                       {"Content-Type": ctype, "X-CSRFToken": csrf_from_html(html)})
    assert status == 201, text

    needles = {
        "reply text": reply_canary.encode(),
        "message text": message_canary.encode(),
        "report text": body_canary.encode(),
        "attachment content": file_canary,
        "attachment name": name_canary.encode(),
        "User-Agent": ua_canary.encode(),
        "forwarded address": ip_canary.encode(),
        "form passphrase": form_phrase.encode(),
        "API passphrase": api_phrase.encode(),
        # The keys behind the passphrases: only the login hash and public key may be stored.
        "API login key": keys.login_key,
        "API login key (base64)": b64(keys.login_key).encode(),
        "API seed": keys.seed,
        "API secret key": keys.secret_key.encode(),
        "API case tag": keys.case_tag,
        "API case tag (base64)": b64(keys.case_tag).encode(),
        "form secret key": form_keys.secret_key.encode(),
        "form case tag": form_keys.case_tag,
        "form case tag (base64)": b64(form_keys.case_tag).encode(),
    }
    needles |= {f"passphrase word run {i}": " ".join(form_phrase.split()[i:i + 3]).encode()
                for i in range(0, 5, 2)}
    files = live_server.written_files()
    assert any(p.name.endswith(".sqlite3") or "postgresql" in str(p) for p in files), \
        "the server wrote no database?"
    assert find_needles(files, needles) == []

    # The canaries really went in: the unit can read both reports back.
    engine = make_engine(live_server.app_config.database_url)
    bundle = tmp_path / "bundle.zip"
    export_bundle(make_sessionmaker(engine), bundle, unit_fingerprint="test")
    engine.dispose()
    out = tmp_path / "out"
    decrypt_bundle(bundle, workstation.secret_key, out)
    folders = report_folders(out)
    assert len(folders) == 2
    for folder in folders:
        assert body_canary in (folder / "report.txt").read_text(encoding="utf-8")
        assert (folder / "attachments" / name_canary).read_bytes() == attachment
    messages = [p for folder in folders for p in folder.glob("message-*.txt")]
    assert len(messages) == 2
    assert all(message_canary in m.read_text(encoding="utf-8") for m in messages)


def test_canary_no_plaintext_through_temporary_files(client, app, workstation: Workstation,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path, monkeypatch) -> None:
    """Anonymous temporary files (O_TMPFILE) leave nothing to scan afterwards, so every
    temporary file is made a named, kept one in a watched folder while a form is posted."""
    import tempfile

    from support import post_form

    watched = tmp_path / "watched-tmp"
    watched.mkdir()

    def named(*args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.pop("dir", None)
        kwargs["delete"] = False
        return tempfile.NamedTemporaryFile(*args, dir=watched, **kwargs)  # noqa: SIM115

    def spooled(max_size=0, mode="w+b", *args, **kwargs):  # type: ignore[no-untyped-def]
        return named(mode=mode)

    monkeypatch.setattr(tempfile, "TemporaryFile", named)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", spooled)
    canary = f"CANARY-TMP-{secrets.token_hex(6)}".encode()
    resp = post_form(client, "texto " + canary.decode(), [("a.txt", "text/plain", canary * 50_000)])
    assert resp.status_code == 200
    files = [p for p in watched.rglob("*") if p.is_file()]
    assert files, "no temporary file was made at all: the watch is not working"
    assert find_needles(files, {"attachment content": canary}) == []
