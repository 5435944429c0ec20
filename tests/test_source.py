# SPDX-License-Identifier: AGPL-3.0-or-later
"""The source side: landing page, JavaScript-off form, JSON API, and their bad-input answers."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from support import (
    Workstation,
    api_payload,
    csrf_token,
    export_and_decrypt,
    post_api,
    post_form,
    report_folders,
)

from whistle import create_app
from whistle.core.crypto import open_envelope
from whistle.core.passphrase import normalise, wordlist
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
    assert len(words) == 7 and all(w in wordlist("es") for w in words)
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
    payload = api_payload(workstation.secret_key.public_key, body,
                          [("foto.jpg", "image/jpeg", data), ("vacío.txt", "text/plain", b"")])
    resp = post_api(client, payload | {"lang": "en"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    phrase = resp.get_json()["passphrase"]
    assert len(phrase.split()) == 7 and all(w in wordlist("en") for w in phrase.split())

    with app.extensions["whistle"].sessions() as s:
        assert s.scalars(select(Report)).one().channel == "browser"

    out = export_and_decrypt(app, workstation, tmp_path)
    (folder,) = report_folders(out)
    assert body in (folder / "report.txt").read_text(encoding="utf-8")
    assert (folder / "attachments" / "foto.jpg").read_bytes() == data
    assert (folder / "attachments" / "vacío.txt").read_bytes() == b""


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


@pytest.mark.parametrize("path", ["/api/v1/reports", "/submit"])
def test_source_intake_failure_answers_500_and_stores_nothing_more(
    client: FlaskClient, app: Flask, workstation: Workstation, monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    """The intake's exceptions are mapped to HTTP in one place (common.intake_failed): every fresh
    passphrase taken is a 500 (JSON on the API, the error page on the form) and nothing is stored."""
    from whistle.server import intake

    payload = api_payload(workstation.secret_key.public_key, "Primero", [])
    taken = post_api(client, payload).get_json()["passphrase"]
    before = counts(app)
    monkeypatch.setattr(intake, "generate", lambda lang: taken)
    if path == "/submit":
        resp = post_form(client, "Segundo", [])
        assert resp.status_code == 500 and resp.mimetype == "text/html"
    else:
        resp = post_api(client, api_payload(workstation.secret_key.public_key, "Segundo", []))
        assert resp.status_code == 500 and resp.get_json()["error"] == "http_500"
    assert taken not in resp.get_data(as_text=True)
    assert counts(app) == before


def test_source_api_answer_names_the_channel(client: FlaskClient, workstation: Workstation) -> None:
    resp = post_api(client, api_payload(workstation.secret_key.public_key, "Canal", []))
    assert resp.status_code == 201 and resp.get_json()["channel"] == "browser"
