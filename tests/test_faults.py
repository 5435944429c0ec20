# SPDX-License-Identifier: AGPL-3.0-or-later
"""Faults answered in words: the database or Redis unreachable → 503, Retry-After, a page (or JSON
on /api/) in the source's language saying nothing was stored; and nothing was.

Outages are simulated after the app has started, on whichever database this run uses: the engine
is made to fail the way a dead server makes it fail (the driver's own OperationalError, at
connect or in the middle of a transaction). Redis is a closed loopback port: the app starts
without touching Redis, so the real client meets a real refused connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
import sqlalchemy.exc
from flask import Flask
from flask.testing import FlaskClient
from limits.errors import StorageError
from sqlalchemy import event, func, select
from support import api_payload, csrf_token, free_port, post_api, post_form
from werkzeug.exceptions import InternalServerError

from whistle import create_app
from whistle.server.config import load_config
from whistle.server.faults import RETRY_AFTER_SECONDS, is_unavailable
from whistle.server.instance import load_or_create_secrets
from whistle.server.models import Blob, BlobChunk, Item, Report

NOTHING_STORED = {"es": "No se guardó nada", "en": "Nothing was stored"}
TRY_LATER = {"es": "inténtelo más tarde", "en": "please try again later"}


def _counts(app: Flask) -> tuple[int, ...]:
    with app.extensions["whistle"].sessions() as db:
        return tuple(db.scalar(select(func.count()).select_from(t)) or 0
                     for t in (Report, Item, Blob, BlobChunk))


def _assert_unavailable_page(resp: Any, lang: str) -> None:
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    html = resp.get_data(as_text=True)
    assert f'<html lang="{lang}">' in html and "Error 503" in html
    assert NOTHING_STORED[lang] in html and TRY_LATER[lang] in html


def _assert_unavailable_json(resp: Any, lang: str) -> None:
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    doc = resp.get_json()
    assert doc["error"] == "unavailable"
    assert NOTHING_STORED[lang] in doc["message"] and TRY_LATER[lang] in doc["message"]


@pytest.fixture
def database_down(app: Flask) -> Iterator[None]:
    """Every new database connection is refused, as by a stopped PostgreSQL; pooled ones dropped."""
    engine = app.extensions["whistle"].engine
    dbapi_error = engine.dialect.loaded_dbapi.OperationalError

    def refuse(*_args: Any) -> None:
        raise dbapi_error("connection refused (simulated outage)")

    event.listen(engine, "do_connect", refuse)
    engine.dispose()
    try:
        yield
    finally:
        event.remove(engine, "do_connect", refuse)


def test_faults_database_down_answers_503_in_both_languages(app: Flask, database_down: None) -> None:
    client = app.test_client()
    _assert_unavailable_page(post_form(client, "Denuncia durante la caída", []), "es")
    english = app.test_client()
    english.get("/?lang=en")
    _assert_unavailable_page(post_form(english, "A report during the outage", []), "en")
    payload = api_payload(app.extensions["whistle"].unit_key, "por la API", [])
    _assert_unavailable_json(post_api(client, payload), "es")


def test_faults_database_lost_mid_transaction_stores_nothing(app: Flask) -> None:
    """The connection dies after the report row and the envelope were sent, before the commit."""
    engine = app.extensions["whistle"].engine
    dbapi_error = engine.dialect.loaded_dbapi.OperationalError
    before = _counts(app)

    chunks: list[str] = []

    def die_on_attachment(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO BLOB_CHUNKS"):
            chunks.append(statement)
            if len(chunks) > 1:  # the envelope's chunk went through; the attachment's fails
                raise dbapi_error("server closed the connection unexpectedly (simulated)")

    event.listen(engine, "before_cursor_execute", die_on_attachment)
    try:
        client = app.test_client()
        resp = post_form(client, "Texto que no debe quedar", [("a.pdf", "application/pdf", b"%PDF" * 100)])
    finally:
        event.remove(engine, "before_cursor_execute", die_on_attachment)
    assert len(chunks) > 1, "the simulated fault never fired"
    _assert_unavailable_page(resp, "es")
    assert _counts(app) == before


@pytest.fixture
def redis_down_app(environ: dict[str, str], tmp_path: Path) -> Iterator[Flask]:
    """An app whose limiter and source sessions use Redis on a loopback port nobody listens on."""
    env = dict(environ, WHISTLE_RATELIMIT_STORAGE=f"redis://127.0.0.1:{free_port()}/0")
    cfg = load_config(env, cwd=tmp_path)
    load_or_create_secrets(cfg, time_cost=1, memory_cost_kib=8)
    application = create_app(cfg)  # starts: nothing at start-up talks to Redis
    application.config.update(TESTING=True)
    yield application
    application.extensions["whistle"].engine.dispose()


def test_faults_redis_down_fails_closed_with_503(redis_down_app: Flask) -> None:
    app = redis_down_app
    before = _counts(app)
    client: FlaskClient = app.test_client()
    assert client.get("/").status_code == 200  # pages without a limit still work
    _assert_unavailable_page(post_form(client, "Denuncia sin Redis", []), "es")
    payload = api_payload(app.extensions["whistle"].unit_key, "sin Redis", [])
    _assert_unavailable_json(post_api(client, payload), "es")
    english = app.test_client()
    english.get("/?lang=en")
    _assert_unavailable_page(post_form(english, "No Redis", []), "en")
    resp = client.post("/investigator/login", data={
        "csrf_token": csrf_token(client), "name": "alice", "password": "x", "code": "123456"})
    _assert_unavailable_page(resp, "es")
    # Fail closed: the limited endpoints refused the work, they did not run unlimited.
    assert _counts(app) == before


def test_faults_after_request_fault_answers_503(app: Flask) -> None:
    """A Redis fault in an after_request hook (the limiter deducting a failure) is a 503 too."""

    # As in production: TESTING would re-raise instead of calling the error handlers.
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.after_request
    def _redis_gone(response: Any) -> Any:
        raise redis.exceptions.ConnectionError("Connection refused (simulated)")

    _assert_unavailable_page(app.test_client().get("/"), "es")


@pytest.mark.parametrize("exc", [
    sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("could not connect to server")),
    sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")),
    sqlalchemy.exc.DisconnectionError("pre-ping failed"),
    sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
    redis.exceptions.ConnectionError("Connection refused"),
    redis.exceptions.TimeoutError("Timeout reading from socket"),
    redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
    StorageError(redis.exceptions.ConnectionError("Connection refused")),
    InternalServerError(original_exception=redis.exceptions.ConnectionError("refused")),
])
def test_faults_backend_errors_are_unavailable(exc: Exception) -> None:
    assert is_unavailable(exc)


@pytest.mark.parametrize("exc", [
    ValueError("a bug"),
    sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")),
    redis.exceptions.ResponseError("WRONGTYPE"),
    # A full disk has its own answer (507), never "try again later" as a 503.
    sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database or disk is full")),
    OSError(28, "No space left on device"),
])
def test_faults_other_errors_are_not_unavailable(exc: Exception) -> None:
    assert not is_unavailable(exc)


def test_faults_log_names_the_type_only(app: Flask, database_down: None,
                                        caplog: pytest.LogCaptureFixture) -> None:
    body = "Texto secreto de la denuncia"
    post_form(app.test_client(), body, [("x.txt", "text/plain", b"adjunto")])
    messages = [r.getMessage() for r in caplog.records]
    assert "backend unavailable: OperationalError" in messages
    assert not any(body in m or "simulated" in m or "INSERT" in m for m in messages)
