# SPDX-License-Identifier: AGPL-3.0-or-later
"""Forms sent once, receipts shown once (issue 11, items 1 and 6): post/redirect/get on /submit
and /case, the one-time form token, the receipt's language switch. Real-browser checks of the same
(reload, Back, the language links) are in test_browser.py."""

from __future__ import annotations

import io
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from support import (
    TEST_REDIS,
    Workstation,
    api_payload,
    csrf_from_html,
    file_report,
    form_tokens,
    once_from_html,
    post_api,
    post_form,
    source_login,
)

from whistle.server.models import Item, Report
from whistle.server.receipts import MemoryOnceStore, OnceStore, RedisOnceStore
from whistle.server.source_sessions import EXPIRY_BUCKET_SECONDS

PASSPHRASE_RE = re.compile(r'<code id="receipt-passphrase">([^<]+)</code>')
TICKET_RE = re.compile(r'href="\?lang=(\w+)&amp;show=([^"]+)"')


def count(app: Flask, model: type[Report] | type[Item]) -> int:
    with app.extensions["whistle"].sessions() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def test_receipt_form_post_redirects_to_receipt_shown_once(client: FlaskClient, app: Flask) -> None:
    resp = post_form(client, "Informe único", [], follow=False)
    assert resp.status_code == 303 and resp.headers["Location"] == "/receipt"
    assert "receipt-passphrase" not in resp.get_data(as_text=True)
    first = client.get("/receipt")
    html = first.get_data(as_text=True)
    phrase = PASSPHRASE_RE.search(html).group(1)  # type: ignore[union-attr]
    assert len(phrase.split()) == 8  # Spanish: 8 words (docs/protocol.md section 4)
    assert first.headers["Cache-Control"] == "no-store"
    # A reload (or a visit from history) never shows it again and never files again.
    again = client.get("/receipt").get_data(as_text=True)
    assert 'id="receipt-gone"' in again and phrase not in again and "receipt-passphrase" not in again
    assert count(app, Report) == 1


def test_receipt_second_post_of_same_form_files_once(client: FlaskClient, app: Flask) -> None:
    html = client.get("/submit").get_data(as_text=True)
    fields = {"csrf_token": csrf_from_html(html), "once": once_from_html(html),
              "category": "corruption", "body": "Doble clic"}
    answers = [client.post("/submit", data=dict(fields), content_type="multipart/form-data")
               for _ in range(2)]
    assert [a.status_code for a in answers] == [303, 303]
    assert count(app, Report) == 1
    # The second post points at the first post's receipt: shown once, then "already shown".
    assert PASSPHRASE_RE.search(client.get("/receipt").get_data(as_text=True))
    assert 'id="receipt-gone"' in client.get("/receipt").get_data(as_text=True)


def test_receipt_form_without_one_time_token_files_nothing(client: FlaskClient, app: Flask) -> None:
    html = client.get("/submit").get_data(as_text=True)
    for once in (None, "short", "x" * 43 + "!"):
        data = {"csrf_token": csrf_from_html(html), "category": "corruption", "body": "Sin ficha"}
        if once is not None:
            data["once"] = once
        resp = client.post("/submit", data=data, content_type="multipart/form-data")
        assert resp.status_code == 400
        page = resp.get_data(as_text=True)
        assert not PASSPHRASE_RE.search(page) and 'name="once" value="' in page
    assert count(app, Report) == 0


def test_receipt_form_page_is_not_cached_or_autocompleted(client: FlaskClient) -> None:
    resp = client.get("/submit")
    html = resp.get_data(as_text=True)
    assert resp.headers["Cache-Control"] == "no-store"
    form = re.search(r'<form id="submit-form"[^>]*>', html).group(0)  # type: ignore[union-attr]
    assert 'autocomplete="off"' in form
    assert re.search(r'<textarea[^>]*autocomplete="off"', html)
    # Each showing of the form has its own token.
    assert once_from_html(html) != once_from_html(client.get("/submit").get_data(as_text=True))


def test_receipt_language_switch_re_renders_it_once(client: FlaskClient, app: Flask) -> None:
    post_form(client, "Informe", [], follow=False)
    html = client.get("/receipt").get_data(as_text=True)
    phrase = PASSPHRASE_RE.search(html).group(1)  # type: ignore[union-attr]
    lang, ticket = TICKET_RE.search(html).groups()  # type: ignore[union-attr]
    assert lang == "en" and ticket not in phrase
    english = client.get(f"/receipt?lang=en&show={ticket}").get_data(as_text=True)
    assert '<html lang="en">' in english and "Your report was received" in english
    assert PASSPHRASE_RE.search(english).group(1) == phrase  # type: ignore[union-attr]
    # Its ticket is spent (a reload, or history); the new page's links carry a fresh one.
    spent = client.get(f"/receipt?lang=en&show={ticket}").get_data(as_text=True)
    assert 'id="receipt-gone"' in spent and phrase not in spent
    assert count(app, Report) == 1


def test_receipt_wrong_ticket_or_other_session_shows_nothing(client: FlaskClient, app: Flask) -> None:
    post_form(client, "Informe", [], follow=False)
    html = client.get("/receipt").get_data(as_text=True)
    _lang, ticket = TICKET_RE.search(html).groups()  # type: ignore[union-attr]
    assert 'id="receipt-gone"' in client.get("/receipt?show=" + "A" * 43).get_data(as_text=True)
    other = app.test_client()
    assert 'id="receipt-gone"' in other.get(f"/receipt?show={ticket}").get_data(as_text=True)


def test_receipt_page_waits_while_the_first_post_is_filing(client: FlaskClient, app: Flask) -> None:
    """A double click: the second post's redirect may arrive before the first post has filed."""
    token = "T" * 43
    assert app.extensions["whistle"].once.claim(token, {"s": "filing"})
    with client.session_transaction() as session:
        session["receipt"] = token
    html = client.get("/receipt").get_data(as_text=True)
    assert 'id="receipt-filing"' in html and 'http-equiv="refresh"' in html


def test_receipt_none_on_the_api_path(client: FlaskClient, app: Flask,
                                      workstation: Workstation) -> None:
    """The browser drew the passphrase and shows it from memory: the API answer has no passphrase
    and no receipt_url, and the server keeps no receipt for it (/receipt says it is gone)."""
    answer = post_api(client, api_payload(workstation.secret_key.public_key, "Por API", []))
    assert answer.status_code == 201 and answer.get_json() == {"ok": True, "channel": "browser"}
    with client.session_transaction() as session:
        assert "receipt" not in session
    assert 'id="receipt-gone"' in client.get("/receipt").get_data(as_text=True)


def test_receipt_case_message_second_post_stores_once(client: FlaskClient, app: Flask) -> None:
    source_login(client, file_report(client))
    fields = form_tokens(client, "/case") | {"body": "Un dato más"}
    first = client.post("/case", data=dict(fields), content_type="multipart/form-data")
    second = client.post("/case", data=dict(fields), content_type="multipart/form-data")
    assert first.status_code == second.status_code == 302
    assert count(app, Item) == 2  # the report and one message
    page = client.get("/case").get_data(as_text=True)
    assert "Un dato más" not in page
    form = re.search(r'<form id="submit-form"[^>]*>', page).group(0)  # type: ignore[union-attr]
    assert 'autocomplete="off"' in form


def test_receipt_case_message_without_token_stores_nothing(client: FlaskClient, app: Flask) -> None:
    source_login(client, file_report(client))
    token = form_tokens(client, "/case")["csrf_token"]
    resp = client.post("/case", data={"csrf_token": token, "body": "Sin ficha",
                                      "attachments": [(io.BytesIO(b"x"), "a.txt", "text/plain")]},
                       content_type="multipart/form-data")
    assert resp.status_code == 400
    assert count(app, Item) == 1


def test_receipt_passphrase_never_in_a_url_or_cookie(client: FlaskClient, app: Flask) -> None:
    resp = post_form(client, "Informe", [], follow=False)
    phrase = PASSPHRASE_RE.search(client.get("/receipt").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    assert phrase not in resp.headers["Location"]
    cookie = client.get_cookie("whistle")
    assert cookie is not None
    session = app.session_interface.get_signing_serializer(app).loads(cookie.value)  # type: ignore[attr-defined]
    # The session holds the receipt's token, never the passphrase or one of its words.
    assert phrase not in repr(session) and not set(phrase.split()) & {str(v) for v in session.values()}


def _exercise(store: OnceStore) -> None:
    token = "Q" * 43
    assert store.claim(token, {"s": "filing"})
    assert not store.claim(token, {"s": "filing"})  # the second post of the same form
    store.put(token, {"s": "ready", "p": "uno dos"})
    assert store.get(token) == {"s": "ready", "p": "uno dos"}
    assert store.get("R" * 43) is None and store.get("bad token!") is None
    store.drop(token)
    assert store.get(token) is None
    store.put(token, {"s": "ready"})  # a dropped (or expired) token is not brought back
    assert store.get(token) is None


def test_receipt_store_in_memory_claims_once_and_expires() -> None:
    store = MemoryOnceStore(ttl_seconds=60)
    _exercise(store)
    short = MemoryOnceStore(ttl_seconds=-1)  # already expired when stored
    assert short.claim("S" * 43, {"s": "filing"}) and short.get("S" * 43) is None


@pytest.mark.skipif(not TEST_REDIS, reason="WHISTLE_TEST_REDIS is not set (CI's second run sets it)")
def test_receipt_store_in_redis_claims_once_on_the_bucket_grid() -> None:
    import secrets

    store = RedisOnceStore(TEST_REDIS, f"whistle:test-{secrets.token_hex(4)}:")
    _exercise(store)
    assert store.claim("T" * 43, {"s": "ready", "p": "tres cuatro"})
    client = store._redis
    try:
        (name,) = list(client.scan_iter(match=store._prefix + "*"))
        # Encrypted under the token: the passphrase is not in Redis as text.
        assert b"tres" not in (client.get(name) or b"")
        assert int(client.execute_command("PEXPIRETIME", name)) % (EXPIRY_BUCKET_SECONDS * 1000) == 0
    finally:
        store.drop("T" * 43)
