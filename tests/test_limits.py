# SPDX-License-Identifier: AGPL-3.0-or-later
"""Abuse limits that work behind Tor: proof of work or a per-minute machine ceiling, per-session
ceilings and a server-side passphrase backoff, the bounded argon2 gate; never keyed on the client
address, and never a lock on everyone (docs/security.md, "Fair limits")."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from support import (
    FrozenClock,
    Workstation,
    api_payload,
    b64,
    browser_login,
    csrf_token,
    file_report,
    file_report_api,
    form_tokens,
    make_app,
    post_api,
    post_form,
    pow_token,
    source_login,
)

from whistle.server.config import ConfigError, load_config


def test_limits_default_allow_a_normal_visit(environ: dict[str, str], tmp_path: Path) -> None:
    """With the shipped defaults a source can file, come back, mistype once and answer."""
    app = make_app(environ, tmp_path)
    client = app.test_client()
    phrase = file_report(client)
    assert source_login(client, "mal escrito " * 3).status_code == 400
    assert source_login(client, phrase).status_code == 302
    resp = client.post("/case", data={**form_tokens(client, "/case"), "body": "más datos"},
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
    assert any(w in resp.get_data(as_text=True).lower() for w in ("wait", "espere"))
    api = post_api(client, api_payload(workstation.secret_key.public_key, "cuatro", []))
    assert api.status_code == 429 and api.get_json()["error"] == "http_429"
    # Another visitor (another session) is not held back by this one.
    assert post_form(app.test_client(), "otra persona", []).status_code == 200


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock()
    monkeypatch.setattr(time, "time", frozen)
    return frozen


def test_limits_submissions_global_ceiling_applies_across_sessions(
    environ: dict[str, str], tmp_path: Path, clock: FrozenClock
) -> None:
    app = make_app(environ, tmp_path, submit_global="3 per minute")
    codes = [post_form(app.test_client(), f"informe {n}", []).status_code for n in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_limits_ceiling_js_off_gets_wait_in_words_and_the_form(
    environ: dict[str, str], tmp_path: Path, clock: FrozenClock
) -> None:
    """Over the per-minute ceiling, a JavaScript-off source gets 429, a wait under a minute in
    words, and the form again; a minute later the same post goes through."""
    app = make_app(environ, tmp_path, submit_global="2 per minute", login_global="2 per minute")
    for n in range(2):
        post_form(app.test_client(), f"relleno {n}", [])
    client = app.test_client()
    resp = post_form(client, "el informe real", [])
    assert resp.status_code == 429
    wait = int(resp.headers["Retry-After"])
    assert 0 < wait <= 60
    html = resp.get_data(as_text=True)
    assert f"{wait} seconds" in html or f"{wait} segundos" in html
    assert 'id="submit-form"' in html and 'name="csrf_token"' in html
    # What the source wrote comes back in the form (a hurried source would lose a long report).
    assert "el informe real</textarea>" in html
    for _ in range(2):
        source_login(app.test_client(), "nada " * 7)
    resp = source_login(app.test_client(), "nada " * 7)
    assert resp.status_code == 429 and 0 < int(resp.headers["Retry-After"]) <= 60
    assert 'name="passphrase"' in resp.get_data(as_text=True)
    clock.now += wait
    assert post_form(client, "el informe real", []).status_code == 200


def test_limits_wrong_passphrases_from_fresh_cookies_leave_correct_one_working(
    environ: dict[str, str], tmp_path: Path, clock: FrozenClock
) -> None:
    """The lockout script of issue 8, against the shipped defaults: 35 wrong passphrases from
    fresh cookies. Failures count against nobody else: the right passphrase with a proof of work
    logs in at once, and without one (JavaScript off) at the latest a minute later."""
    app = make_app(environ, tmp_path)
    phrase = file_report(app.test_client())
    codes = {source_login(app.test_client(), "nada " * 7).status_code for _ in range(35)}
    assert codes == {400, 429}  # the per-minute ceiling for posts without proof of work
    client = app.test_client()
    resp = client.post("/followup", data={"csrf_token": csrf_token(client, "/followup"),
                                          "passphrase": phrase, "pow": pow_token(client, "login")})
    assert resp.status_code == 302
    clock.now += 60
    assert source_login(app.test_client(), phrase).status_code == 302


def test_limits_junk_submissions_leave_real_report_working(
    environ: dict[str, str], tmp_path: Path, workstation: Workstation, clock: FrozenClock
) -> None:
    """35 junk reports from fresh cookies (more than the ceiling): a real report sent with a
    proof of work is still accepted."""
    app = make_app(environ, tmp_path)
    codes = {post_form(app.test_client(), f"basura {n}", []).status_code for n in range(35)}
    assert codes == {200, 429}
    client = app.test_client()
    token = csrf_token(client)
    resp = client.post("/api/v1/reports", data=api_payload(workstation.secret_key.public_key,
                                                           "informe real", []),
                       content_type="multipart/form-data",
                       headers={"X-CSRFToken": token, "X-Whistle-PoW": pow_token(client, "submit")})
    assert resp.status_code == 201 and resp.get_json()["ok"]


class CountingStream(io.BytesIO):
    """A request body that records how much of it was read."""

    read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = super().readline(size)
        self.read_bytes += len(data)
        return data


def test_limits_run_before_csrf_and_refuse_without_reading_the_body(
    environ: dict[str, str], tmp_path: Path, clock: FrozenClock
) -> None:
    from whistle.server import limits
    from whistle.server.app import csrf

    app = make_app(environ, tmp_path, submit_global="1 per minute")
    hooks: list[Callable[..., object]] = app.before_request_funcs[None]
    names = [getattr(h, "__name__", "") for h in hooks]
    assert hooks.index(limits.guard) < names.index("csrf_protect")
    assert csrf is not None
    post_form(app.test_client(), "uno", [])
    client = app.test_client()
    token = csrf_token(client)
    # Larger than what a refused report gets back in its form (limits.REFILL_MAX_BODY).
    body = (f"csrf_token={token}&category=medication&body=" + "x" * 300_000).encode()
    stream = CountingStream(body)
    resp = client.post("/submit", input_stream=stream,
                       content_type="application/x-www-form-urlencoded",
                       headers={"Content-Length": str(len(body))})
    assert resp.status_code == 429
    assert stream.read_bytes == 0


def test_limits_global_ceilings_are_per_minute_at_most() -> None:
    with pytest.raises(ConfigError, match="per second or per minute"):
        load_config({"WHISTLE_LIMIT_SUBMIT_GLOBAL": "600 per hour"})
    assert load_config({"WHISTLE_LIMIT_LOGIN_GLOBAL": "5 per second"}).limits.login_global


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
                                                           clock: FrozenClock) -> None:
    app = make_app(environ, tmp_path)
    client = app.test_client()
    phrase = file_report(client)
    for _ in range(3):
        assert source_login(client, "palabra " * 7).status_code == 400
    assert source_login(client, "palabra " * 7).status_code == 400  # 4th failure sets a wait
    clock.now += 0.9
    resp = source_login(client, phrase)  # even the right passphrase must wait now
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    clock.now += 0.2  # the wait is at least a whole second from the failure, then over
    assert source_login(client, phrase).status_code == 302


def test_limits_form_and_api_logins_share_one_backoff(environ: dict[str, str], tmp_path: Path,
                                                      workstation: Workstation,
                                                      clock: FrozenClock) -> None:
    """Wrong passphrases on the form and wrong login keys on the API count together: switching
    path gets no fresh allowance. During the wait the API answers 429 JSON with Retry-After."""
    import os

    app = make_app(environ, tmp_path)
    client = app.test_client()
    keys = file_report_api(client, workstation.secret_key.public_key)
    for _ in range(2):
        assert source_login(client, "palabra " * 7).status_code == 400
    assert browser_login(client, os.urandom(32)).status_code == 400
    fourth = browser_login(client, os.urandom(32))  # the 4th failure sets a wait
    assert fourth.status_code == 400 and "wait 1 second" in fourth.get_json()["message"] or \
        "1 segundo" in fourth.get_json()["message"]
    clock.now += 0.9
    resp = browser_login(client, keys.login_key)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    assert resp.get_json()["error"] == "http_429"
    assert source_login(client, keys.passphrase).status_code == 429
    clock.now += 0.2
    assert browser_login(client, keys.login_key).status_code == 200


def test_limits_api_login_ceilings_and_proof_of_work(environ: dict[str, str], tmp_path: Path,
                                                     workstation: Workstation,
                                                     clock: FrozenClock) -> None:
    """The API login has the form's per-session ceiling (malformed keys count towards it, though
    not towards the backoff); a proof of work with purpose ``login`` is accepted, one for another
    purpose refused."""
    app = make_app(environ, tmp_path, login_session="2 per hour")
    client = app.test_client()
    keys = file_report_api(client, workstation.secret_key.public_key)
    token = csrf_token(client, "/followup")
    wrong = client.post("/api/v1/login", data={"login_key": "x"},
                        headers={"X-CSRFToken": token, "X-Whistle-PoW": pow_token(client, "submit")})
    assert wrong.status_code == 400 and wrong.get_json()["error"].startswith("pow_")
    ok = client.post("/api/v1/login", data={"login_key": b64(keys.login_key)},
                     headers={"X-CSRFToken": token, "X-Whistle-PoW": pow_token(client, "login")})
    assert ok.status_code == 200, ok.get_data(as_text=True)
    # A new session (the login replaced it): two more attempts, then the ceiling.
    client = app.test_client()
    token = csrf_token(client, "/followup")
    for _ in range(2):
        assert browser_login(client, "malformed", token).get_json()["error"] == "bad_login_key"
    refused = browser_login(client, keys.login_key, token)
    assert refused.status_code == 429 and refused.get_json()["error"] == "http_429"
    assert int(refused.headers["Retry-After"]) > 0


def test_limits_backoff_survives_cookie_replay(environ: dict[str, str], tmp_path: Path,
                                               clock: FrozenClock) -> None:
    """The failure count lives server-side: the cookie from before the failures is still under
    the backoff (the wait rounded up to the minute), where it used to reset it."""
    app = make_app(environ, tmp_path)
    client = app.test_client()
    phrase = file_report(client)
    client.get("/followup")
    before = client.get_cookie("whistle")
    assert before is not None
    for n in range(5):
        if n:
            clock.now += 1  # past the 1-second wait the 4th failure sets
        assert source_login(client, "palabra " * 7).status_code == 400
    current = source_login(client, phrase)
    assert current.status_code == 429 and current.headers["Retry-After"] == "2"
    client.set_cookie("whistle", before.value)
    replayed = client.post("/followup", data={"csrf_token": csrf_token(client, "/followup"),
                                              "passphrase": phrase})
    assert replayed.status_code == 429
    assert int(replayed.headers["Retry-After"]) >= int(current.headers["Retry-After"])
    assert int(replayed.headers["Retry-After"]) <= 60
    assert 'name="passphrase"' in replayed.get_data(as_text=True)
    clock.now += 120
    client.set_cookie("whistle", before.value)
    assert source_login(client, phrase).status_code == 302


def test_limits_backoff_keys_are_not_dated_to_the_second(environ: dict[str, str], tmp_path: Path,
                                                        clock: FrozenClock) -> None:
    app = make_app(environ, tmp_path)
    client = app.test_client()
    clock.now += 17.3
    for _ in range(5):
        source_login(client, "palabra " * 7)
        clock.now += 40
    from whistle.server.counters import MemoryCounterStore

    store = app.extensions["whistle_counters"]
    if not isinstance(store, MemoryCounterStore):
        pytest.skip("reads the memory store's entries (Redis: EXPIREAT on the same boundaries)")
    assert all(exp % 60 == 0 for _, exp in store._entries.values())
    backoff = [exp for key, (_, exp) in store._entries.items() if ":pf" in key]
    # Nothing outlives its purpose: the failure count is forgotten within 21 minutes.
    assert len(backoff) == 2 and max(backoff) - clock.now <= 21 * 60


def test_limits_argon2_gate_bounds_concurrency(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every slot busy, a login waits for a slot, then gives up with 503, not more memory."""
    import whistle.core.passphrase as passphrase

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
        # Seven words: a passphrase of another length is refused before any derivation.
        resp = source_login(client, "uno dos tres cuatro cinco seis siete")
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "30"
        assert 'name="passphrase"' in resp.get_data(as_text=True)
    finally:
        release.set()
        holder.join()


def test_limits_backoff_keeps_the_login_form_with_the_wait_in_words(
    environ: dict[str, str], tmp_path: Path, clock: FrozenClock
) -> None:
    """From the failure that starts the backoff on, the login form stays on the page with the wait
    in words: seconds while short, whole minutes (rounded up) once a minute or more."""
    app = make_app(environ, tmp_path)
    client = app.test_client()
    client.get("/followup?lang=en")
    wrong = "palabra " * 7
    for _ in range(3):
        html = source_login(client, wrong).get_data(as_text=True)
        assert "Too many wrong passphrases" not in html
    started = source_login(client, wrong)  # the 4th failure sets a 1-second wait
    html = started.get_data(as_text=True)
    assert started.status_code == 400
    assert "Please wait 1 second and try again." in html and 'name="passphrase"' in html
    refused = source_login(client, wrong)
    html = refused.get_data(as_text=True)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert "Please wait 1 second and try again." in html and 'name="passphrase"' in html
    assert "Back to the start page" not in html
    for wait in (1, 2, 4, 8, 16, 32):  # failures 5 to 10; the 10th sets 64 s
        clock.now += wait + 1
        resp = source_login(client, wrong)
        assert resp.status_code == 400, wait
    assert "Please wait 2 minutes and try again." in resp.get_data(as_text=True)
    refused = source_login(client, wrong)
    html = refused.get_data(as_text=True)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 60
    assert "Please wait 2 minutes and try again." in html and 'name="passphrase"' in html
