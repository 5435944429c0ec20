# SPDX-License-Identifier: AGPL-3.0-or-later
"""The investigator web UI: login, throttling, session lifetime, logout, admin pages, and a walk
over every investigator route proving that anonymous and source sessions get nowhere."""

from __future__ import annotations

import re
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from support import Account, Clock, csrf_token, form_csrf_token, investigator_login, make_account
from werkzeug.routing import IntegerConverter

from whistle.server import accounts
from whistle.server.models import AuditEntry, Investigator
from whistle.server.web.investigator.auth import (
    SESSION_ID,
    SESSION_LOGIN,
    SESSION_SEEN,
    SESSION_VERSION,
    SOURCE_TOKEN,
)

LOGIN = "/investigator/login"
ACCOUNTS = "/investigator/admin/accounts"
GENERIC_ERROR = "Wrong name, password or code."


def english(client: FlaskClient) -> FlaskClient:
    client.get("/?lang=en")
    return client


def audit_rows(app: Flask) -> list[tuple[str, str, str]]:
    with app.extensions["whistle"].sessions() as db:
        return [(e.actor, e.action, e.detail)
                for e in db.scalars(select(AuditEntry).order_by(AuditEntry.seq))]


def is_login_redirect(resp) -> bool:  # type: ignore[no-untyped-def]
    return resp.status_code in (302, 303) and resp.location.split("?")[0].endswith(LOGIN)


def now_minutes() -> int:
    return int(time.time() // 60)


# --- Login and logout ---------------------------------------------------------------------------


def test_login_page_shows_form_without_inline_script(client: FlaskClient) -> None:
    resp = english(client).get(LOGIN)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert form_csrf_token(client, LOGIN)
    for field in ('name="name"', 'name="password"', 'name="code"', 'autocomplete="one-time-code"'):
        assert field in html
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None and " style=" not in html


def test_login_success_redirects_to_case_list_and_audits(
    client: FlaskClient, app: Flask, investigator: Account
) -> None:
    resp = investigator_login(client, investigator)
    assert resp.status_code == 303 and resp.location.endswith("/investigator/")
    with client.session_transaction() as sess:
        assert sess[SESSION_ID] == investigator.id and sess[SESSION_VERSION] == 1
        assert abs(sess[SESSION_SEEN] - now_minutes()) <= 1 and SESSION_LOGIN in sess
    assert audit_rows(app) == [("alice", "login", "")]


def test_login_keeps_language_and_drops_other_session_keys(
    client: FlaskClient, investigator: Account
) -> None:
    english(client)
    with client.session_transaction() as sess:
        sess["planted"] = "x"
    investigator_login(client, investigator)
    with client.session_transaction() as sess:
        assert sess["lang"] == "en" and "planted" not in sess


@pytest.mark.parametrize("case", ["password", "code", "unknown", "disabled"])
def test_login_failure_generic_error_no_session(
    client: FlaskClient, app: Flask, investigator: Account, case: str
) -> None:
    english(client)
    if case == "disabled":
        with app.extensions["whistle"].sessions() as db:
            accounts.set_disabled(accounts.get_account(db, "alice"), True)
            db.commit()
    kwargs = {"password": {"password": "wrong-password"}, "code": {"code": "000000"},
              "unknown": {"name": "nobody"}, "disabled": {}}[case]
    if case == "code" and investigator.next_code() == "000000":
        kwargs = {"code": "111111"}
    resp = investigator_login(client, investigator, **kwargs)
    assert resp.status_code == 200
    assert GENERIC_ERROR in resp.get_data(as_text=True)
    with client.session_transaction() as sess:
        assert SESSION_ID not in sess
    rows = audit_rows(app)
    if case == "unknown":
        assert rows == [], "a failed login under an unknown name was written down"
    else:
        assert [(a, b) for a, b, _ in rows] == [("alice", "login_failed")]


def test_login_redirects_to_safe_next_only(client: FlaskClient, admin: Account) -> None:
    resp = client.get(ACCOUNTS)
    assert is_login_redirect(resp) and "next=" in resp.location
    next_url = resp.location
    token = form_csrf_token(client, LOGIN)
    resp = client.post(next_url, data={"csrf_token": token, "name": admin.name,
                                       "password": admin.password, "code": admin.next_code()})
    assert resp.status_code == 303 and resp.location.endswith(ACCOUNTS)

    other = client.application.test_client()
    token = form_csrf_token(other, LOGIN)
    resp = other.post(f"{LOGIN}?next=//evil.example/investigator/", data={
        "csrf_token": token, "name": admin.name, "password": admin.password,
        "code": admin.next_code()})
    assert resp.status_code == 303 and resp.location.endswith("/investigator/")
    assert "evil" not in resp.location


def test_logout_clears_session_and_voids_copied_cookie(
    client: FlaskClient, app: Flask, admin: Account
) -> None:
    investigator_login(client, admin)
    assert client.get(ACCOUNTS).status_code == 200
    copied = client.get_cookie("whistle")
    assert copied is not None
    resp = client.post("/investigator/logout", data={"csrf_token": csrf_token(client)})
    assert is_login_redirect(resp)
    with client.session_transaction() as sess:
        assert SESSION_ID not in sess
    assert is_login_redirect(client.get(ACCOUNTS))
    client.set_cookie("whistle", copied.value)
    assert is_login_redirect(client.get(ACCOUNTS)), "a copy of the old cookie still works"
    assert [r[1] for r in audit_rows(app)] == ["login", "logout"]


# --- Throttling ---------------------------------------------------------------------------------


def test_login_busy_hash_slots_answer_503_within_bound(
        client: FlaskClient, investigator: Account, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every password-hash slot held by other logins: this one gives up after HASH_WAIT_SECONDS
    with 503 and Retry-After (not counted as a failure), and works once a slot is free."""
    import threading

    monkeypatch.setattr(accounts, "HASH_WAIT_SECONDS", 0.3)
    inside, release = threading.Semaphore(0), threading.Event()

    def hold() -> None:
        with accounts._hash_slots.slot(10):
            inside.release()
            release.wait(10)

    holders = [threading.Thread(target=hold) for _ in range(2)]  # the gate has two slots
    for thread in holders:
        thread.start()
    try:
        for _ in holders:
            assert inside.acquire(timeout=10), "a holder never got its slot"
        started = time.monotonic()
        resp = investigator_login(client, investigator)
        elapsed = time.monotonic() - started
    finally:
        release.set()
        for thread in holders:
            thread.join(10)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "30"
    assert "El servidor está ocupado" in resp.get_data(as_text=True)
    assert 0.3 <= elapsed < 3
    assert audit_rows(client.application) == []  # neither a login nor a failure
    assert investigator_login(client, investigator).status_code == 303


@pytest.mark.parametrize("name", ["alice", "nobody"])
def test_login_throttles_sixth_failure_per_name(
    client: FlaskClient, investigator: Account, name: str
) -> None:
    english(client)
    for _ in range(5):
        resp = investigator_login(client, investigator, name=name, password="wrong")
        assert resp.status_code == 200
    resp = investigator_login(client, investigator, name=name.upper(), password="wrong")
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert "Too many login attempts" in resp.get_data(as_text=True)
    if name == "alice":  # now even the right password waits
        assert investigator_login(client, investigator).status_code == 429


def test_login_throttle_does_not_spill_to_other_names(
    client: FlaskClient, app: Flask, investigator: Account, clock: Clock, fast_passwords: None
) -> None:
    bob = make_account(app, clock, "bob")
    for _ in range(6):
        investigator_login(client, investigator, password="wrong")
    assert investigator_login(client, investigator).status_code == 429
    assert investigator_login(client, bob, password="wrong").status_code == 200
    assert investigator_login(client, bob).status_code == 303


def test_login_successes_do_not_count_toward_throttle(
    client: FlaskClient, investigator: Account
) -> None:
    for _ in range(7):
        assert investigator_login(client, investigator).status_code == 303
        client.post("/investigator/logout", data={"csrf_token": csrf_token(client)})


# --- Session lifetime ---------------------------------------------------------------------------


@pytest.mark.parametrize("key, minutes_ago", [(SESSION_SEEN, 30), (SESSION_LOGIN, 12 * 60)])
def test_session_expires_when_idle_or_too_old(
    client: FlaskClient, admin: Account, key: str, minutes_ago: int
) -> None:
    investigator_login(client, admin)
    with client.session_transaction() as sess:
        sess[SESSION_SEEN] = now_minutes() - 29
        sess[SESSION_LOGIN] = now_minutes() - 12 * 60 + 1
    assert client.get(ACCOUNTS).status_code == 200  # just inside both limits; refreshes "seen"
    with client.session_transaction() as sess:
        assert sess[SESSION_SEEN] >= now_minutes() - 1
        sess[key] = now_minutes() - minutes_ago
    resp = client.get(ACCOUNTS)
    assert is_login_redirect(resp) and "ended=1" in resp.location
    with client.session_transaction() as sess:
        assert SESSION_ID not in sess


def test_session_voided_when_account_disabled(
    client: FlaskClient, app: Flask, admin: Account
) -> None:
    investigator_login(client, admin)
    assert client.get(ACCOUNTS).status_code == 200
    with app.extensions["whistle"].sessions() as db:
        accounts.set_disabled(accounts.get_account(db, admin.name), True)
        accounts.set_disabled(accounts.get_account(db, admin.name), False)  # enabled again:
        db.commit()  # the version moved on, so the old session stays void
    assert is_login_redirect(client.get(ACCOUNTS))


def test_session_with_source_token_is_not_an_investigator(client: FlaskClient, admin: Account
                                                          ) -> None:
    investigator_login(client, admin)
    with client.session_transaction() as sess:
        sess[SOURCE_TOKEN] = "some-source-token"
    assert is_login_redirect(client.get(ACCOUNTS))


# --- Admin pages --------------------------------------------------------------------------------


def test_admin_pages_refuse_non_admin_and_anonymous(
    client: FlaskClient, investigator: Account
) -> None:
    assert is_login_redirect(client.get(ACCOUNTS))
    investigator_login(client, investigator)
    assert client.get(ACCOUNTS).status_code == 403
    assert client.get(ACCOUNTS + "/new").status_code == 403


def test_admin_accounts_list_shows_accounts(client: FlaskClient, admin: Account,
                                            investigator: Account) -> None:
    investigator_login(english(client), admin)
    html = client.get(ACCOUNTS).get_data(as_text=True)
    assert "alice" in html and "root" in html and "Administrator" in html
    assert f"/admin/accounts/{admin.id}/disable" not in html  # no button to disable oneself
    assert f"/admin/accounts/{investigator.id}/disable" in html


def test_admin_add_account_shows_password_and_inline_svg_once(
    client: FlaskClient, app: Flask, admin: Account, clock: Clock
) -> None:
    investigator_login(client, admin)
    resp = client.post(ACCOUNTS + "/new", data={"csrf_token": csrf_token(client), "name": "Nina"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    password = re.search(r'<code id="account-password">([^<]+)</code>', html)
    secret = re.search(r'<code id="totp-secret" class="secret">([A-Z2-7]+)</code>', html)
    assert password and secret
    assert re.search(r"<svg [^>]*>.*</svg>", html, re.S) and " style=" not in html
    assert "otpauth://totp/whistle:nina" in html
    assert ("root", "account_create", "account=nina admin=no") in audit_rows(app)

    with app.extensions["whistle"].sessions() as db:
        stored = accounts.get_account(db, "nina")
        assert password.group(1) not in stored.password_hash
    nina = Account(id=stored.id, name="nina", password=password.group(1),
                   totp_secret=secret.group(1), is_admin=False, clock=clock)
    assert investigator_login(app.test_client(), nina).status_code == 303


@pytest.mark.parametrize("name", ["bad name", "ROOT"])
def test_admin_add_account_rejects_bad_or_taken_name(client: FlaskClient, app: Flask,
                                                     admin: Account, name: str) -> None:
    investigator_login(client, admin)
    resp = client.post(ACCOUNTS + "/new", data={"csrf_token": csrf_token(client), "name": name})
    assert resp.status_code == 400 and 'role="alert"' in resp.get_data(as_text=True)
    with app.extensions["whistle"].sessions() as db:
        assert len(db.scalars(select(Investigator)).all()) == 1


def test_admin_cannot_disable_self(client: FlaskClient, app: Flask, admin: Account) -> None:
    investigator_login(client, admin)
    resp = client.post(f"{ACCOUNTS}/{admin.id}/disable", data={"csrf_token": csrf_token(client)})
    assert resp.status_code == 303
    with app.extensions["whistle"].sessions() as db:
        assert not accounts.get_account(db, admin.name).disabled
    assert client.get(ACCOUNTS).status_code == 200


def test_admin_disable_voids_sessions_and_enable_restores_login(
    client: FlaskClient, app: Flask, admin: Account, investigator: Account
) -> None:
    alice = app.test_client()
    investigator_login(alice, investigator)
    assert alice.get(ACCOUNTS).status_code == 403  # logged in, not an admin
    investigator_login(client, admin)
    token = csrf_token(client)
    assert client.post(f"{ACCOUNTS}/{investigator.id}/disable",
                       data={"csrf_token": token}).status_code == 303
    assert is_login_redirect(alice.get(ACCOUNTS)), "the disabled account's session survived"
    assert investigator_login(alice, investigator).status_code == 200
    assert client.post(f"{ACCOUNTS}/{investigator.id}/enable",
                       data={"csrf_token": token}).status_code == 303
    assert investigator_login(alice, investigator).status_code == 303
    actions = [(a, b, c) for a, b, c in audit_rows(app) if b.startswith("account_")]
    assert actions == [("root", "account_disable", "account=alice"),
                       ("root", "account_enable", "account=alice")]


def test_admin_reset_totp_shows_new_enrolment(client: FlaskClient, app: Flask, admin: Account,
                                              investigator: Account) -> None:
    investigator_login(client, admin)
    resp = client.post(f"{ACCOUNTS}/{investigator.id}/reset-2fa",
                       data={"csrf_token": csrf_token(client)})
    html = resp.get_data(as_text=True)
    secret = re.search(r'<code id="totp-secret" class="secret">([A-Z2-7]+)</code>', html)
    assert resp.status_code == 200 and secret and "<svg " in html
    assert 'id="account-password"' not in html
    old_secret, investigator.totp_secret = investigator.totp_secret, secret.group(1)
    assert old_secret != investigator.totp_secret
    assert investigator_login(app.test_client(), investigator).status_code == 303
    assert ("root", "totp_reset", "account=alice") in audit_rows(app)


def test_admin_reset_password_shows_new_password(client: FlaskClient, app: Flask, admin: Account,
                                                 investigator: Account) -> None:
    investigator_login(client, admin)
    resp = client.post(f"{ACCOUNTS}/{investigator.id}/reset-password",
                       data={"csrf_token": csrf_token(client)})
    match = re.search(r'<code id="account-password">([^<]+)</code>', resp.get_data(as_text=True))
    assert resp.status_code == 200 and match
    assert investigator_login(app.test_client(), investigator).status_code == 200  # the old password
    investigator.password = match.group(1)
    assert investigator_login(app.test_client(), investigator).status_code == 303


def test_admin_reset_own_password_keeps_own_session(client: FlaskClient, admin: Account) -> None:
    investigator_login(client, admin)
    resp = client.post(f"{ACCOUNTS}/{admin.id}/reset-password",
                       data={"csrf_token": csrf_token(client)})
    assert resp.status_code == 200
    assert client.get(ACCOUNTS).status_code == 200


def test_admin_action_on_missing_account_is_404(client: FlaskClient, admin: Account) -> None:
    investigator_login(client, admin)
    resp = client.post(f"{ACCOUNTS}/9999/reset-password", data={"csrf_token": csrf_token(client)})
    assert resp.status_code == 404


# --- Every investigator route refuses anonymous and source sessions -----------------------------


def _dummy(rule_arg: str, converter: object) -> object:
    if rule_arg == "report_id":
        return "0123456789abcdef"
    return 1 if isinstance(converter, IntegerConverter) else "x"


def _investigator_requests(app: Flask) -> list[tuple[str, str, str, bool]]:
    """(endpoint, method, url, admin_only) for every investigator route but the login page."""
    out = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if not rule.endpoint.startswith("investigator.") or rule.endpoint in (
                    "investigator.login", "investigator.static"):
                continue
            # Werkzeug keeps each argument's converter on the rule; no public accessor exists.
            values = {arg: _dummy(arg, rule._converters.get(arg)) for arg in rule.arguments}
            url = rule.build(values, append_unknown=False)
            assert url is not None, rule
            path = url[1] if isinstance(url, tuple) else url
            admin_only = app.view_functions[rule.endpoint].__module__.endswith(".admin")
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                out.append((rule.endpoint, method, path, admin_only))
    return out


def _call(client: FlaskClient, method: str, path: str):  # type: ignore[no-untyped-def]
    if method == "GET":
        return client.get(path)
    # A valid token from a source page: CSRF must not be what refuses the request.
    return client.open(path, method=method, data={"csrf_token": csrf_token(client)})


def _refused(resp) -> bool:  # type: ignore[no-untyped-def]
    return is_login_redirect(resp) or resp.status_code in (401, 403)


def test_investigator_routes_refuse_anonymous_and_source_sessions(
    app: Flask, investigator: Account
) -> None:
    requests = _investigator_requests(app)
    assert len({r[0] for r in requests}) >= 7, "the walk found too few investigator routes"
    assert any(admin_only for *_, admin_only in requests)

    anonymous = app.test_client()
    source = app.test_client()
    csrf_token(source)
    with source.session_transaction() as sess:
        sess[SOURCE_TOKEN] = "a-source-session-token"
    staff = app.test_client()
    assert investigator_login(staff, investigator).status_code == 303

    failures = []
    for endpoint, method, path, admin_only in requests:
        for who, client in (("anonymous", anonymous), ("source", source)):
            resp = _call(client, method, path)
            if not _refused(resp):
                failures.append(f"{who} {method} {path} ({endpoint}) -> {resp.status_code}")
        if admin_only:
            resp = _call(staff, method, path)
            if resp.status_code != 403:
                failures.append(f"non-admin {method} {path} ({endpoint}) -> {resp.status_code}")
    assert not failures, "\n".join(failures)
    with source.session_transaction() as sess:
        assert sess[SOURCE_TOKEN] == "a-source-session-token"  # the walk did not end the source's
