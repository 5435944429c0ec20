# SPDX-License-Identifier: AGPL-3.0-or-later
"""The casebook's web UI (whistle casebook serve), through Flask's test client at the address
serve would listen on: who may talk to it, what it renders, how attachments leave it.

Each security test fails on a naive implementation: a template that marks text safe, a download
served with the declared type, an app that answers any Host, a session without the token, a form
without CSRF.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from support import (
    CASEBOOK_PORT,
    Workstation,
    api_payload,
    casebook_bundle,
    casebook_client,
    casebook_form_token,
    post_api,
    post_form,
)

from whistle.workstation.casebook.importer import import_bundle
from whistle.workstation.casebook.store import Casebook

BASE = f"http://127.0.0.1:{CASEBOOK_PORT}"
PAYLOADS = ["<script>alert('x1')</script>", "<img src=x onerror=alert('x2')>",
            "<svg onload=alert('x3')><circle/></svg>", "<iframe src=//evil.example></iframe>"]
HOSTILE = " ".join(PAYLOADS)


@pytest.fixture
def hostile_book(app: Flask, client: FlaskClient, workstation: Workstation, tmp_path: Path) -> Path:
    """A casebook holding a report whose text, category and file names are markup."""
    unit = app.extensions["whistle"].unit_key
    files = [("<img src=x onerror=alert('n1')>.html", "text/html",
              b"<html><script>alert('inline')</script></html>"),
             ("dibujo<svg onload=alert('n2')>.svg", "image/svg+xml",
              b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>"),
             ("notas.txt", "text/plain", "Línea uno\nCorrupción en <b>compras</b>\n".encode())]
    assert post_api(client, api_payload(unit, f"Denuncia {HOSTILE} Corrupción en farmacia", files,
                                        category="<script>alert('c')</script>")).status_code == 201
    post_form(app.test_client(), "Medicamentos no entregados en el hospital del Niño", [])
    root = tmp_path / "cb"
    with Casebook.open(root) as book:
        import_bundle(book, casebook_bundle(app, tmp_path / "b.zip"), [workstation.secret_key])
    return root


def _case_ids(root: Path) -> list[str]:
    with Casebook.open(root) as book:
        return [r[0] for r in book.db.execute("SELECT id FROM cases ORDER BY channel")]


def _no_live_markup(html: str) -> None:
    for raw in ("<script>alert", "<img src=x", "<svg onload", "<iframe",
                "<b>compras</b>"):
        assert raw not in html, raw


def test_casebook_web_hostile_text_renders_as_text(hostile_book: Path) -> None:
    client, _ = casebook_client(hostile_book)
    hostile_id, _other = _case_ids(hostile_book)
    for path in ("/", f"/case/{hostile_id}", "/search?q=corrupcion", "/quarantine"):
        page = client.get(path, base_url=BASE)
        assert page.status_code == 200, path
        _no_live_markup(page.get_data(as_text=True))
    html = client.get(f"/case/{hostile_id}", base_url=BASE).get_data(as_text=True)
    assert "&lt;script&gt;alert(&#39;x1&#39;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(&#39;n1&#39;)&gt;.html" in html
    # The note an investigator writes is a stranger's text too (a pasted quote).
    token = casebook_form_token(client, f"/case/{hostile_id}")
    answer = client.post(f"/case/{hostile_id}/note", base_url=BASE,
                         data={"csrf_token": token, "body": HOSTILE})
    assert answer.status_code == 303
    client.post(f"/case/{hostile_id}/tags", base_url=BASE,
                data={"csrf_token": token, "tags": "<b>x</b>, medicinas"})
    client.post(f"/case/{hostile_id}/assignee", base_url=BASE,
                data={"csrf_token": token, "assignee": "<script>alert(9)</script>"})
    for path in (f"/case/{hostile_id}", "/", "/search?q=farmacia"):
        _no_live_markup(client.get(path, base_url=BASE).get_data(as_text=True))
    assert "<b>x</b>" not in client.get("/", base_url=BASE).get_data(as_text=True)
    # The invalid category was quarantined, shown as text.
    assert "invalid category" in html or "categoría no válida" in html


def test_casebook_web_attachments_only_as_downloads(hostile_book: Path) -> None:
    client, _ = casebook_client(hostile_book)
    hostile_id = _case_ids(hostile_book)[0]
    with Casebook.open(hostile_book) as book:
        atts = {a["name"]: a["id"] for a in book.attachments(hostile_id)}
    for name, att_id in atts.items():
        answer = client.get(f"/attachment/{att_id}/download", base_url=BASE)
        assert answer.status_code == 200, name
        assert answer.headers["Content-Type"] == "application/octet-stream"
        assert answer.headers["Content-Disposition"].startswith("attachment;")
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Content-Security-Policy"].startswith("sandbox")
        assert "<" not in answer.headers["Content-Disposition"]
    html_id = next(i for n, i in atts.items() if n.endswith(".html"))
    assert client.get(f"/attachment/{html_id}/download", base_url=BASE).data.startswith(b"<html>")
    # A text preview of the HTML file shows its source, escaped, in the casebook's own page.
    preview = client.get(f"/attachment/{html_id}/preview", base_url=BASE)
    assert preview.status_code == 200 and preview.mimetype == "text/html"
    body = preview.get_data(as_text=True)
    assert "&lt;script&gt;alert(&#39;inline&#39;)&lt;/script&gt;" in body
    _no_live_markup(body)
    text_id = atts["notas.txt"]
    assert "Corrupción en &lt;b&gt;compras&lt;/b&gt;" in client.get(
        f"/attachment/{text_id}/preview", base_url=BASE).get_data(as_text=True)
    # An image is not a text type: no preview, download only.
    svg_id = next(i for n, i in atts.items() if n.endswith(".svg"))
    assert client.get(f"/attachment/{svg_id}/preview", base_url=BASE).status_code in (200, 404)
    assert client.get("/attachment/99999/download", base_url=BASE).status_code == 404


def test_casebook_web_refuses_a_foreign_host(hostile_book: Path) -> None:
    client, _ = casebook_client(hostile_book)
    for host in ("evil.example", f"evil.example:{CASEBOOK_PORT}", f"localhost:{CASEBOOK_PORT}",
                 "127.0.0.1", f"127.0.0.1:{CASEBOOK_PORT + 1}", f"127.0.0.2:{CASEBOOK_PORT}"):
        answer = client.get("/", base_url=f"http://{host}")
        assert answer.status_code == 421, host
        assert "Casebook" not in answer.get_data(as_text=True)
    assert client.get("/", base_url=BASE).status_code == 200


def test_casebook_web_needs_the_one_time_link(hostile_book: Path) -> None:
    client, state = casebook_client(hostile_book, login=False)
    token = state.token
    assert client.get("/", base_url=BASE).status_code == 403
    assert client.get("/search?q=x", base_url=BASE).status_code == 403
    assert client.get("/attachment/1/download", base_url=BASE).status_code == 403
    assert client.get("/login?token=wrong", base_url=BASE).status_code == 403
    answer = client.get(f"/login?token={token}", base_url=BASE)
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/")
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and cookie.startswith("casebook=")
    assert client.get("/", base_url=BASE).status_code == 200
    # The link works once: another browser (no cookie) cannot use it again.
    other = client.application.test_client()
    assert other.get(f"/login?token={token}", base_url=BASE).status_code == 403
    assert other.get("/", base_url=BASE).status_code == 403


def test_casebook_web_refuses_cross_site_forms(hostile_book: Path) -> None:
    client, _ = casebook_client(hostile_book)
    case_id = _case_ids(hostile_book)[0]
    token = casebook_form_token(client, f"/case/{case_id}")
    url = f"/case/{case_id}/note"
    # No CSRF token (what a form on another site sends, even if the browser sent the cookie).
    assert client.post(url, base_url=BASE, data={"body": "forged"}).status_code == 400
    assert client.post(url, base_url=BASE, data={"body": "forged", "csrf_token": "x"}).status_code == 400
    # The right token but another origin.
    answer = client.post(url, base_url=BASE, data={"body": "forged", "csrf_token": token},
                         headers={"Origin": "http://evil.example"})
    assert answer.status_code == 403
    # Without the session cookie.
    stranger = client.application.test_client()
    assert stranger.post(url, base_url=BASE, data={"body": "forged", "csrf_token": token}).status_code == 403
    with Casebook.open(hostile_book) as book:
        assert book.notes(case_id) == []
    ok = client.post(url, base_url=BASE, data={"body": "nota real", "csrf_token": token},
                     headers={"Origin": BASE})
    assert ok.status_code == 303


def test_casebook_web_security_headers_no_other_origin(hostile_book: Path) -> None:
    client, _ = casebook_client(hostile_book)
    case_id = _case_ids(hostile_book)[0]
    for path in ("/", f"/case/{case_id}", "/search", "/replies", "/quarantine"):
        answer = client.get(path, base_url=BASE)
        csp = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Referrer-Policy"] == "same-origin"
        assert answer.headers["Cache-Control"] == "no-store"
        html = answer.get_data(as_text=True)
        # Nothing from another origin, and no script at all: every page works with JavaScript off.
        assert "<script" not in html
        assert not re.search(r'(src|href)="(https?:)?//', html), path
    style = client.get("/static/casebook.css", base_url=BASE)
    assert style.status_code == 200 and style.mimetype == "text/css"
    assert client.get("/static/../server/app.py", base_url=BASE).status_code == 404
    assert client.get("/static/submit.js", base_url=BASE).status_code == 404


def test_casebook_web_spanish_by_default_english_on_request(hostile_book: Path) -> None:
    client, _ = casebook_client(hostile_book)
    html = client.get("/", base_url=BASE, headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert '<html lang="es">' in html and "Casos" in html and "Corrupción" in html
    html = client.get("/?lang=en", base_url=BASE).get_data(as_text=True)
    assert '<html lang="en">' in html and ">Cases<" in html and "Corruption" in html
    assert '<html lang="en">' in client.get("/search", base_url=BASE).get_data(as_text=True)


def test_casebook_web_inbox_filters_sorts_pages(hostile_book: Path) -> None:
    client, _ = casebook_client(hostile_book)
    hostile_id, form_id = _case_ids(hostile_book)
    html = client.get("/?channel=server-form", base_url=BASE).get_data(as_text=True)
    assert form_id[:8] in html and hostile_id[:8] not in html
    html = client.get("/?category=medication", base_url=BASE).get_data(as_text=True)
    assert form_id[:8] in html and hostile_id[:8] not in html
    html = client.get("/?per_page=25&sort=category&dir=asc&from=2000-01-01&to=2999-01-01",
                      base_url=BASE).get_data(as_text=True)
    assert form_id[:8] in html and hostile_id[:8] in html
    # Garbage in the query string is ignored, never an error.
    for junk in ("?page=-4", "?page=x", "?sort=id;drop", "?from=2020-13-45", "?per_page=100000",
                 "?category=' or 1=1 --"):
        assert client.get("/" + junk, base_url=BASE).status_code == 200, junk
    token = casebook_form_token(client, f"/case/{form_id}")
    client.post(f"/case/{form_id}/tags", base_url=BASE,
                data={"csrf_token": token, "tags": "Farmacia, urgente"})
    html = client.get("/?tag=urgente", base_url=BASE).get_data(as_text=True)
    assert form_id[:8] in html and hostile_id[:8] not in html
    client.post(f"/case/{form_id}/assignee", base_url=BASE,
                data={"csrf_token": token, "assignee": "Ana  Pérez"})
    html = client.get("/?assignee=Ana Pérez", base_url=BASE).get_data(as_text=True)
    assert form_id[:8] in html and hostile_id[:8] not in html
    # Links go both ways.
    client.post(f"/case/{form_id}/link", base_url=BASE, data={"csrf_token": token, "other": hostile_id[:8]})
    assert form_id[:8] in client.get(f"/case/{hostile_id}", base_url=BASE).get_data(as_text=True)


def test_casebook_web_search_accents_case_snippets(hostile_book: Path) -> None:
    client, _ = casebook_client(hostile_book)
    hostile_id, form_id = _case_ids(hostile_book)
    for query in ("nino", "NIÑO", "medicamentos hospital", "medica*"):
        html = client.get(f"/search?q={query}", base_url=BASE).get_data(as_text=True)
        assert form_id[:8] in html and hostile_id[:8] not in html, query
        assert "<mark>" in html
    html = client.get("/search?q=corrupcion", base_url=BASE).get_data(as_text=True)
    assert "<mark>Corrupción</mark>" in html and hostile_id[:8] in html
    html = client.get("/search?q=corrupcion&category=medication", base_url=BASE).get_data(as_text=True)
    assert hostile_id[:8] not in html
    # FTS5 syntax typed by a user is taken as words, never as a query error.
    for query in ('"', "NEAR(", "a OR", "*", "col:x", "-"):
        assert client.get(f"/search?q={query}", base_url=BASE).status_code == 200
