# SPDX-License-Identifier: AGPL-3.0-or-later
"""Abuse limits that work behind Tor: global and per-session ceilings, passphrase backoff, the
bounded argon2 gate; never keyed on the client address."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import Workstation, csrf_token
from flask import Flask
from flask.testing import FlaskClient
from helpers import api_payload, post_api, post_form
from test_followup import file_report
from test_followup import login as source_login

from whistle import create_app
from whistle.config import load_config
from whistle.instance import load_or_create_secrets


def make_app(environ: dict[str, str], tmp_path: Path, **limits: str) -> Flask:
    env = {k: v for k, v in environ.items() if not k.startswith("WHISTLE_LIMIT_")}
    env |= {f"WHISTLE_LIMIT_{k.upper()}": v for k, v in limits.items()}
    config = load_config(env, cwd=tmp_path)
    load_or_create_secrets(config, time_cost=1, memory_cost_kib=8)
    return create_app(config)


def test_limits_default_allow_a_normal_visit(environ: dict[str, str], tmp_path: Path) -> None:
    """With the shipped defaults a source can file, come back, mistype once and answer."""
    app = make_app(environ, tmp_path)
    client = app.test_client()
    phrase = file_report(client)
    assert source_login(client, "mal escrito " * 3).status_code == 400
    assert source_login(client, phrase).status_code == 302
    resp = client.post("/case", data={"csrf_token": csrf_token(client, "/case"), "body": "más datos"},
                       content_type="multipart/form-data")
    assert resp.status_code == 302


def test_limits_submissions_per_session_429_with_retry_after(
    environ: dict[str, str], tmp_path: Path, workstation: Workstation
) -> None:
    app = make_app(environ, tmp_path, submit_session="2 per hour")
    client = app.test_client()
    assert post_form(client, "uno", []).status_code == 200
    assert post_api(client, api_payload(workstation.secret_key.public_key, "dos", [])).status_code == 201
    resp = post_form(client, "tres", [])
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert "wait" in resp.get_data(as_text=True).lower() or "espere" in resp.get_data(as_text=True)
    api = post_api(client, api_payload(workstation.secret_key.public_key, "cuatro", []))
    assert api.status_code == 429 and api.get_json()["error"] == "http_429"
    # Another visitor (another session) is not held back by this one.
    assert post_form(app.test_client(), "otra persona", []).status_code == 200


def test_limits_submissions_global_ceiling_applies_across_sessions(
    environ: dict[str, str], tmp_path: Path
) -> None:
    app = make_app(environ, tmp_path, submit_global="3 per minute")
    codes = [post_form(app.test_client(), f"informe {n}", []).status_code for n in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_limits_not_keyed_on_address(environ: dict[str, str], tmp_path: Path) -> None:
    """Everyone comes from 127.0.0.1 behind Tor: one session's flood must not lock others out."""
    app = make_app(environ, tmp_path, submit_session="1 per hour")
    first = app.test_client()
    post_form(first, "uno", [])
    assert post_form(first, "dos", []).status_code == 429
    for n in range(3):
        other = app.test_client()
        resp = post_form(other, f"vecino {n}", [], environ_overrides={"REMOTE_ADDR": "127.0.0.1"})
        assert resp.status_code == 200


def test_limits_passphrase_backoff_after_repeated_failures(environ: dict[str, str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(environ, tmp_path)
    client = app.test_client()
    phrase = file_report(client)
    for _ in range(3):
        assert source_login(client, "palabra " * 7).status_code == 400
    assert source_login(client, "palabra " * 7).status_code == 400  # 4th failure sets a wait
    resp = source_login(client, phrase)  # even the right passphrase must wait now
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    import whistle.limits

    real = whistle.limits.time.time
    monkeypatch.setattr(whistle.limits.time, "time", lambda: real() + 2)
    assert source_login(client, phrase).status_code == 302


def test_limits_failed_logins_global_cap(environ: dict[str, str], tmp_path: Path) -> None:
    app = make_app(environ, tmp_path, login_failures_global="3 per hour")
    codes = []
    for _ in range(5):
        client = app.test_client()  # a fresh session each time, as a guessing script would
        codes.append(source_login(client, "nada " * 7).status_code)
    assert codes == [400, 400, 400, 429, 429]


def test_limits_argon2_gate_bounds_concurrency(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every slot busy, a login waits for a slot, then gives up with 503, not more memory."""
    import whistle.passphrase as passphrase

    state = app.extensions["whistle"]
    gate = passphrase.DerivationGate(1)
    object.__setattr__(state, "gate", gate)  # State is frozen; this app lives for this test only
    release = threading.Event()
    original = passphrase.derive

    def slow(typed: str, params: passphrase.Argon2Params) -> passphrase.SourceKeys:
        release.wait(10)
        return original(typed, params)

    monkeypatch.setattr(passphrase, "derive", slow)
    real_derive = gate.derive
    monkeypatch.setattr(gate, "derive", lambda t, p, timeout=0.2: real_derive(t, p, timeout=timeout))
    holder = threading.Thread(target=lambda: gate.derive("a b c", state.secrets.argon2, timeout=5))
    holder.start()
    try:
        client: FlaskClient = app.test_client()
        resp = source_login(client, "uno dos tres")
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "30"
    finally:
        release.set()
        holder.join()
