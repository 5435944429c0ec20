# SPDX-License-Identifier: AGPL-3.0-or-later
"""Security headers, cookies, Tor2web refusal and error pages that reveal nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from support import Account, investigator_login, post_form

from whistle import create_app
from whistle.server.config import load_config
from whistle.server.instance import load_or_create_secrets

EXPECTED_CSP = {
    "default-src": "'none'",
    "script-src": "'self' 'wasm-unsafe-eval'",
    "style-src": "'self'",
    "img-src": "'self'",
    "connect-src": "'self'",
    "worker-src": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
}
PAGES = ["/", "/submit", "/followup", "/api/v1/unit-key", "/static/css/whistle.css",
         "/static/js/submit.js", "/no-such-page", "/investigator/login", "/investigator/"]


def parse_csp(value: str) -> dict[str, str]:
    parts = [p.strip().split(None, 1) for p in value.split(";") if p.strip()]
    return {p[0]: (p[1] if len(p) > 1 else "") for p in parts}


@pytest.mark.parametrize("path", PAGES)
def test_security_headers_on_every_response(client: FlaskClient, path: str) -> None:
    resp = client.get(path)
    h = resp.headers
    assert parse_csp(h["Content-Security-Policy"]) == EXPECTED_CSP
    assert "unsafe-inline" not in h["Content-Security-Policy"]
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "same-origin"  # not no-referrer: Flask-WTF checks Referer
    assert h["Cross-Origin-Opener-Policy"] == "same-origin"
    assert h["Cross-Origin-Resource-Policy"] == "same-origin"
    assert "camera=()" in h["Permissions-Policy"] and "geolocation=()" in h["Permissions-Policy"]
    assert h["X-Frame-Options"] == "DENY"
    assert "Server" not in h
    if not path.startswith("/static/"):
        assert h["Cache-Control"] == "no-store"


def test_security_session_cookie_flags(client: FlaskClient) -> None:
    resp = client.get("/submit")
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP (an onion service, or local demo)


def test_security_cookie_secure_under_https(environ: dict[str, str], tmp_path: Path) -> None:
    config = load_config(environ | {"WHISTLE_HTTPS": "true"}, cwd=tmp_path)
    load_or_create_secrets(config, time_cost=1, memory_cost_kib=8)
    app = create_app(config)
    resp = app.test_client().get("/submit", base_url="https://localhost")
    assert "Secure" in resp.headers["Set-Cookie"]


def test_security_tor2web_refused(client: FlaskClient, app: Flask) -> None:
    resp = client.get("/submit", headers={"X-tor2web": "encrypted"})
    assert resp.status_code == 403
    assert "Tor Browser" in client.get("/?lang=en", headers={"X-Tor2web": "1"}).get_data(as_text=True)
    resp = post_form(client, "texto", [])  # and a normal request still works
    assert resp.status_code == 200


def test_security_error_page_reveals_nothing(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    secret = "CANARY-EXCEPTION-7f3a"

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError(f"failure quoting request data {secret}")

    with caplog.at_level(logging.DEBUG):
        resp = app.test_client().get("/boom?lang=en", headers={"User-Agent": "CANARY-UA-err"})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 500
    assert secret not in body and "Traceback" not in body and "RuntimeError" not in body
    assert secret not in caplog.text and "CANARY-UA-err" not in caplog.text
    assert "RuntimeError" in caplog.text  # the type is logged, so operators see something


def test_security_no_inline_script_or_style_in_any_page(client: FlaskClient, app: Flask,
                                                        investigator: Account) -> None:
    import re

    inv = app.test_client()
    investigator_login(inv, investigator)
    pages = [client.get(p).get_data(as_text=True) for p in ("/", "/submit", "/followup")]
    pages += [inv.get(p).get_data(as_text=True) for p in ("/investigator/", "/investigator/replies")]
    for html in pages:
        assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None
        assert re.search(r"\sstyle=", html) is None and "<style" not in html
        assert re.search(r"\son[a-z]+=", html) is None, "inline event handler"
        assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
