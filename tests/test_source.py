# SPDX-License-Identifier: AGPL-3.0-or-later
"""The source side: landing page, JavaScript-off form, JSON API, and their bad-input answers."""

from __future__ import annotations

import io
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from support import (
    Workstation,
    api_payload,
    b64,
    browser_derive,
    csrf_token,
    export_and_decrypt,
    post_api,
    post_form,
    random_browser_keys,
    report_folders,
)

from whistle import create_app
from whistle.core.crypto import open_envelope
from whistle.core.passphrase import derive, normalise, word_count, wordlist
from whistle.server.config import load_config
from whistle.server.instance import load_or_create_secrets
from whistle.server.models import Attachment, Blob, BlobChunk, Item, Report

PASSPHRASE_RE = re.compile(r'<code id="receipt-passphrase">([^<]+)</code>')


def counts(app: Flask) -> tuple[int, int, int, int, int]:
    with app.extensions["whistle"].sessions() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) or 0  # type: ignore[return-value]
                     for m in (Report, Item, Attachment, Blob, BlobChunk))


def test_index_shows_fingerprint_and_advice(client: FlaskClient, app: Flask) -> None:
    html = client.get("/").get_data(as_text=True)
    assert app.extensions["whistle"].unit_key.fingerprint() in html
    assert "Tor Browser" in html


def test_unit_key_api_returns_key_and_fingerprint(client: FlaskClient, workstation: Workstation) -> None:
    data = client.get("/api/v1/unit-key").get_json()
    assert data["public_key"] == workstation.secret_key.public_key.to_base64()
    assert data["fingerprint"] == workstation.secret_key.public_key.fingerprint()


def test_submit_page_carries_csrf_meta_and_no_inline_script(client: FlaskClient) -> None:
    html = client.get("/submit").get_data(as_text=True)
    assert csrf_token(client)
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None, "inline script on the page"
    assert " style=" not in html


def test_form_submission_roundtrip_recovers_text_and_files(
    client: FlaskClient, app: Flask, workstation: Workstation, tmp_path: Path
) -> None:
    big = os.urandom(700_000)  # over Werkzeug's 500 KB in-memory threshold
    small = "nombre;valor\nñandú;1\n".encode()
    body = "El director cobra comisiones por entregar medicamentos. Canario-F0RM-7731 ñandú"
    resp = post_form(client, body, [("receta médica.pdf", "application/pdf", big),
                                    ("../../tabla.csv", "text/csv", small)])
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    match = PASSPHRASE_RE.search(html)
    assert match, "receipt page shows no passphrase"
    words = match.group(1).split()
    assert len(words) == word_count("es") and all(w in wordlist("es") for w in words)
    assert "encrypted on the server" in html or "cifr" in html.lower()

    with app.extensions["whistle"].sessions() as s:
        report = s.scalars(select(Report)).one()
        assert report.channel == "server-form" and report.status == "received"

    out = export_and_decrypt(app, workstation, tmp_path)
    (folder,) = report_folders(out)
    text = (folder / "report.txt").read_text(encoding="utf-8")
    assert body in text and "Category: Medication not delivered" in text
    assert "Channel: Form without JavaScript (encrypted in server memory" in text
    assert (folder / "attachments" / "receta médica.pdf").read_bytes() == big
    assert (folder / "attachments" / "tabla.csv").read_bytes() == small


def test_form_submission_ignores_empty_file_placeholder(client: FlaskClient, app: Flask) -> None:
    resp = post_form(client, "Sin adjuntos", [("", "application/octet-stream", b"")])
    assert resp.status_code == 200
    assert counts(app)[2] == 0


def test_api_submission_roundtrip_recovers_text_and_files(
    client: FlaskClient, app: Flask, workstation: Workstation, tmp_path: Path
) -> None:
    data = os.urandom(3 * 65536 + 5)
    body = "Medicamentos no entregados en el dispensario. Canario-AP1-5512"
    keys = browser_derive(client, lang="en")
    payload = api_payload(workstation.secret_key.public_key, body,
                          [("foto.jpg", "image/jpeg", data), ("vacío.txt", "text/plain", b"")],
                          keys=keys)
    resp = post_api(client, payload | {"lang": "en"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    # No passphrase in the answer: the server never had it.
    assert resp.get_json() == {"ok": True, "channel": "browser"}
    assert keys.passphrase not in resp.get_data(as_text=True)

    with app.extensions["whistle"].sessions() as s:
        report = s.scalars(select(Report)).one()
        assert report.channel == "browser"
        # What the browser derived is what the server would have: the passphrase logs in on
        # the form path too.
        server = derive(keys.passphrase, app.extensions["whistle"].secrets.argon2)
        assert report.login_hash == keys.login_hash == server.login_hash
        assert report.source_public_key == keys.public_key == server.public_key_bytes
        assert server.case_tag == keys.case_tag

    out = export_and_decrypt(app, workstation, tmp_path)
    (folder,) = report_folders(out)
    assert body in (folder / "report.txt").read_text(encoding="utf-8")
    assert (folder / "attachments" / "foto.jpg").read_bytes() == data
    assert (folder / "attachments" / "vacío.txt").read_bytes() == b""


def test_api_submission_runs_no_argon2_on_the_server(
    client: FlaskClient, app: Flask, workstation: Workstation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JavaScript path derives in the browser: with every server-side derivation made to
    fail, a report is still filed (and the browser's login works, test_followup.py)."""
    from whistle.core import passphrase

    keys = browser_derive(client)  # the "browser": libsodium in this process, before the patch

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("argon2 ran on the server")

    monkeypatch.setattr(app.extensions["whistle"].gate, "derive", refuse)
    monkeypatch.setattr(app.extensions["whistle"].gate, "slot", refuse)
    monkeypatch.setattr(passphrase, "derive", refuse)
    monkeypatch.setattr(passphrase, "hash_secret_raw", refuse)
    resp = post_api(client, api_payload(workstation.secret_key.public_key, "Sin argon2", [],
                                        keys=keys))
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert counts(app)[:2] == (1, 1)


def test_api_submission_sealed_envelope_is_v2_bound_to_the_keys(
    client: FlaskClient, app: Flask, workstation: Workstation
) -> None:
    keys = random_browser_keys()
    payload = api_payload(workstation.secret_key.public_key, "Atado", [], keys=keys)
    sealed = payload["report"][0].getvalue()  # type: ignore[index]
    assert post_api(client, payload).status_code == 201
    envelope = open_envelope(sealed, workstation.secret_key)
    assert envelope.version == 2 and envelope.binding == keys.binding(1)


def test_api_stores_sealed_envelope_unchanged(
    client: FlaskClient, app: Flask, workstation: Workstation
) -> None:
    payload = api_payload(workstation.secret_key.public_key, "texto", [])
    sealed = payload["report"][0].getvalue()  # type: ignore[index]
    assert post_api(client, payload).status_code == 201
    from whistle.server.blobstore import read_bytes

    with app.extensions["whistle"].sessions() as s:
        item = s.scalars(select(Item)).one()
        assert read_bytes(s, item.envelope_blob_id) == sealed
        assert open_envelope(sealed, workstation.secret_key).body == "texto"


@pytest.mark.parametrize("mutate, status, code", [
    (lambda p: p.pop("report"), 400, "missing_report"),
    (lambda p: p.update(report=(io.BytesIO(p["report"][0].getvalue()[:-1]), "r.bin")), 400, "bad_report"),
    (lambda p: p.update(report="not a file part"), 400, "bad_report"),
    (lambda p: p.update(attachment=[(io.BytesIO(b"short"), "a.bin")]), 400, "bad_attachment"),
    (lambda p: p.update(report=(io.BytesIO(b"\0" * (1024 * 1024 + 1072)), "r.bin")), 413, "too_large"),
    (lambda p: p.pop("login_hash"), 400, "missing_keys"),
    (lambda p: p.pop("source_public_key"), 400, "missing_keys"),
    (lambda p: p.update(login_hash=""), 400, "bad_keys"),
    (lambda p: p.update(login_hash=p["login_hash"][:-4]), 400, "bad_keys"),
    (lambda p: p.update(login_hash=p["login_hash"].rstrip("=")), 400, "bad_keys"),
    (lambda p: p.update(source_public_key="A" * 44), 400, "bad_keys"),  # not canonical (no "=")
    (lambda p: p.update(source_public_key="A" * 43 + "="), 400, "bad_keys"),  # all zeros
    (lambda p: p.update(login_hash="A" * 43 + "="), 400, "bad_keys"),
    (lambda p: p.update(source_public_key=b64(b"\1" + b"\0" * 31)), 400, "bad_keys"),  # small order
    (lambda p: p.update(source_public_key=b64(os.urandom(31)) + "AA"), 400, "bad_keys"),
    (lambda p: p.update(source_public_key=p["source_public_key"].replace("+", "-").replace("/", "_")
                        if ("+" in p["source_public_key"] or "/" in p["source_public_key"])
                        else "-" * 43 + "="), 400, "bad_keys"),  # URL-safe alphabet
    (lambda p: p.update(login_hash=" " + p["login_hash"][1:]), 400, "bad_keys"),
    (lambda p: p.update(login_hash=b64(os.urandom(48))), 400, "bad_keys"),
])
def test_api_bad_input_gets_clear_4xx_and_stores_nothing(
    client: FlaskClient, app: Flask, workstation: Workstation, mutate, status: int, code: str  # type: ignore[no-untyped-def]
) -> None:
    payload = api_payload(workstation.secret_key.public_key, "x", [("a.txt", "text/plain", b"abc")])
    mutate(payload)
    resp = post_api(client, payload)
    assert resp.status_code == status
    assert resp.get_json()["error"] == code and resp.get_json()["message"]
    assert counts(app) == (0, 0, 0, 0, 0)


def test_api_wrong_csrf_token_refused(client: FlaskClient, app: Flask, workstation: Workstation) -> None:
    csrf_token(client)
    payload = api_payload(workstation.secret_key.public_key, "x", [])
    resp = post_api(client, payload, token="forged-token")
    assert resp.status_code == 400 and resp.get_json()["error"] == "csrf"
    assert counts(app) == (0, 0, 0, 0, 0)


def test_form_wrong_csrf_token_gets_html_error(client: FlaskClient, app: Flask) -> None:
    client.get("/submit")
    resp = client.post("/submit", data={"csrf_token": "forged", "category": "other", "body": "x"},
                       content_type="multipart/form-data")
    assert resp.status_code == 400 and resp.mimetype == "text/html"
    assert counts(app) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize("fields", [{"body": ""}, {"category": "no-such-category"},
                                    {"body": "x" * 100_001}])
def test_form_invalid_fields_rerender_with_errors(client: FlaskClient, app: Flask, fields) -> None:  # type: ignore[no-untyped-def]
    data = {"body": "texto", "category": "other"} | fields
    resp = post_form(client, data["body"], [("a.txt", "text/plain", b"abc")], category=data["category"])
    assert resp.status_code == 400
    assert 'role="alert"' in resp.get_data(as_text=True)
    assert counts(app) == (0, 0, 0, 0, 0)


def test_upload_over_limit_refused_with_413(environ: dict[str, str], tmp_path: Path) -> None:
    config = load_config(environ | {"WHISTLE_MAX_UPLOAD_MB": "1"}, cwd=tmp_path)
    load_or_create_secrets(config, time_cost=1, memory_cost_kib=8)
    app = create_app(config)
    client = app.test_client()
    resp = post_form(client, "grande", [("big.bin", "application/octet-stream", b"\0" * (1024 * 1024 + 1))])
    assert resp.status_code == 413
    assert counts(app) == (0, 0, 0, 0, 0)


def test_form_leaves_no_spool_files(client: FlaskClient, app: Flask) -> None:
    post_form(client, "texto", [("a.bin", "application/octet-stream", os.urandom(600_000))])
    spool = app.extensions["whistle"].config.spool_dir
    assert list(spool.iterdir()) == []


def test_received_dates_are_days_only(client: FlaskClient, app: Flask) -> None:
    post_form(client, "texto", [])
    import datetime as dt

    with app.extensions["whistle"].sessions() as s:
        report = s.scalars(select(Report)).one()
        assert type(report.received_on) is dt.date
        assert type(s.scalars(select(Item)).one().created_on) is dt.date


def test_passphrase_normalisation_matches_receipt_words(client: FlaskClient) -> None:
    resp = post_form(client, "texto", [])
    phrase = PASSPHRASE_RE.search(resp.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    assert normalise("  " + phrase.upper().replace(" ", "   ") + " ") == phrase


def test_source_intake_failure_answers_500_and_stores_nothing_more(
    client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The intake's exceptions are mapped to HTTP in one place (common.intake_failed): every fresh
    passphrase taken is a 500 (the error page on the form) and nothing is stored."""
    from whistle.server import intake

    taken = PASSPHRASE_RE.search(post_form(client, "Primero", []).get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    before = counts(app)
    monkeypatch.setattr(intake, "generate", lambda lang: taken)
    resp = post_form(client, "Segundo", [])
    assert resp.status_code == 500 and resp.mimetype == "text/html"
    assert taken not in resp.get_data(as_text=True)
    assert counts(app) == before


def test_api_taken_login_hash_answers_409_and_stores_nothing(
    client: FlaskClient, app: Flask, workstation: Workstation
) -> None:
    """A login hash already stored (the browser drew a passphrase in use, or posts twice) is
    ``409 passphrase_taken`` with nothing stored; the browser draws again and files."""
    unit = workstation.secret_key.public_key
    keys = random_browser_keys()
    assert post_api(client, api_payload(unit, "Primero", [], keys=keys)).status_code == 201
    before = counts(app)
    again = api_payload(unit, "Segundo", [("a.txt", "text/plain", b"adjunto")],
                        keys=replace(random_browser_keys(), login_key=keys.login_key))
    resp = post_api(client, again)
    assert resp.status_code == 409
    assert resp.get_json()["error"] == "passphrase_taken" and resp.get_json()["message"]
    assert counts(app) == before
    assert post_api(client, api_payload(unit, "Segundo", [])).status_code == 201


def test_api_params_publish_the_derivation(client: FlaskClient, app: Flask) -> None:
    """Everything the browser needs to derive as the server does, and nothing secret."""
    resp = client.get("/api/v1/params")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "public, max-age=3600"
    params = app.extensions["whistle"].secrets.argon2
    assert resp.get_json() == {
        "v": 2,
        "argon2": {"alg": "argon2id13", "salt": b64(params.salt), "opslimit": params.time_cost,
                   "memlimit": params.memory_cost_kib * 1024, "bytes": 64},
        "case_tag_context": "whistle-case-tag-v2",
        "passphrase": {lang: {"words": word_count(lang), "list_size": len(wordlist(lang)),
                              "sha256": resp.get_json()["passphrase"][lang]["sha256"],
                              "url": f"/api/v1/wordlist/{lang}"} for lang in ("es", "en")},
    }


@pytest.mark.parametrize("lang", ["es", "en"])
def test_api_wordlist_served_bytes_match_params(client: FlaskClient, lang: str) -> None:
    import hashlib

    listing = client.get("/api/v1/params").get_json()["passphrase"][lang]
    resp = client.get(listing["url"])
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.headers["Cache-Control"] == "public, max-age=86400"
    data = resp.get_data()
    assert hashlib.sha256(data).hexdigest() == listing["sha256"]
    assert data.endswith(b"\n") and b"\r" not in data
    assert tuple(data.decode("utf-8").split("\n")[:-1]) == wordlist(lang)


@pytest.mark.parametrize("path", ["/api/v1/wordlist/fr", "/api/v1/wordlist/", "/api/v1/wordlist/en_eff"])
def test_api_wordlist_unknown_language_is_404(client: FlaskClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 404 and resp.get_json()["error"] == "http_404"
    assert resp.headers["Cache-Control"] == "no-store"


def test_unit_key_api_carries_the_signing_key(client: FlaskClient, workstation: Workstation) -> None:
    data = client.get("/api/v1/unit-key").get_json()
    verify = workstation.signing_key.verify_key
    assert data["signing_public_key"] == verify.to_base64()
    assert data["signing_fingerprint"] == verify.fingerprint()


def test_source_api_answer_names_the_channel(client: FlaskClient, workstation: Workstation) -> None:
    resp = post_api(client, api_payload(workstation.secret_key.public_key, "Canal", []))
    assert resp.status_code == 201 and resp.get_json()["channel"] == "browser"
