# SPDX-License-Identifier: AGPL-3.0-or-later
"""Upload quotas (whistle/server/quotas.py): per case, per session, global; checked on the declared
length before the body is read; a full disk answers 507 and stores nothing."""

from __future__ import annotations

import errno
import io
import os
import re
import select
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func
from sqlalchemy import select as sql_select
from support import (
    api_payload,
    csrf_token,
    file_report,
    form_tokens,
    free_port,
    page_session,
    post_api,
    post_form,
    source_login,
    start_gunicorn,
    stop_process,
    uses_sqlite,
    wait_until_serving,
)

from whistle import create_app
from whistle.server.config import Config, ConfigError, load_config
from whistle.server.instance import load_or_create_secrets
from whistle.server.models import BlobChunk, Item, Report
from whistle.server.quotas import HOUR, counters, window_left

MB = 1024 * 1024


def make_app(environ: dict[str, str], tmp_path: Path, **quotas: str) -> Flask:
    """An app with ``WHISTLE_QUOTA_<NAME>`` (or ``MAX_UPLOAD_MB``) set from ``quotas``."""
    env = dict(environ)
    for name, value in quotas.items():
        env["WHISTLE_MAX_UPLOAD_MB" if name == "max_upload_mb" else f"WHISTLE_QUOTA_{name.upper()}"] = value
    config = load_config(env, cwd=tmp_path)
    load_or_create_secrets(config, time_cost=1, memory_cost_kib=8)
    app = create_app(config)
    app.config.update(TESTING=True)
    return app


def count(app: Flask, model: Any) -> int:
    with app.extensions["whistle"].sessions() as db:
        return int(db.scalar(sql_select(func.count()).select_from(model)) or 0)


def post_message(client: FlaskClient, body: str, attachment: bytes = b""):  # type: ignore[no-untyped-def]
    data: dict[str, object] = {**form_tokens(client, "/case"), "body": body}
    if attachment:
        data["attachments"] = [(io.BytesIO(attachment), "foto.jpg", "image/jpeg")]
    return client.post("/case", data=data, content_type="multipart/form-data")


def test_config_quotas_defaults_env_and_one_line_errors(environ: dict[str, str], tmp_path: Path) -> None:
    quotas = load_config(environ, cwd=tmp_path).quotas
    assert (quotas.case_messages_per_day, quotas.case_mb_per_day, quotas.session_mb_per_hour,
            quotas.global_mb_per_hour) == (30, 1024, 1024, 2048)
    env = environ | {"WHISTLE_QUOTA_CASE_MESSAGES_PER_DAY": "5", "WHISTLE_QUOTA_GLOBAL_MB_PER_HOUR": "64"}
    assert load_config(env, cwd=tmp_path).quotas.case_messages_per_day == 5
    for var, value, words in (("WHISTLE_QUOTA_GLOBAL_MB_PER_HOUR", "lots", "whole number"),
                              ("WHISTLE_QUOTA_CASE_MESSAGES_PER_DAY", "0", "between"),
                              ("WHISTLE_QUOTA_SESSION_MB_PER_HOUR", "10", "at least WHISTLE_MAX_UPLOAD_MB")):
        with pytest.raises(ConfigError) as info:
            load_config(environ | {var: value}, cwd=tmp_path)
        assert var in str(info.value) and words in str(info.value) and "\n" not in str(info.value)


def test_quota_cookie_replay_refused_at_case_ceiling(environ: dict[str, str], tmp_path: Path) -> None:
    """The attack: keep the cookie issued at login and replay it for every message. The case's
    counter is keyed on the report id held server-side, so replaying gets no fresh bucket."""
    app = make_app(environ, tmp_path, case_messages_per_day="3")
    source = app.test_client()
    source_login(source, file_report(source))
    token = csrf_token(source, "/case")
    cookie = source.get_cookie("whistle")
    assert cookie is not None
    codes = []
    for n in range(6):
        replay = app.test_client()
        replay.set_cookie("whistle", cookie.value)
        # A fresh one-time form token for each post (a replayed one would store nothing twice).
        once = form_tokens(replay, "/case")["once"]
        resp = replay.post("/case", data={"csrf_token": token, "once": once, "body": f"mensaje {n}"},
                           content_type="multipart/form-data")
        codes.append(resp.status_code)
    assert codes == [302, 302, 302, 429, 429, 429]
    assert 0 < int(resp.headers["Retry-After"]) <= 86400
    assert "No se guardó nada" in resp.get_data(as_text=True)
    assert count(app, Item) == 1 + 3
    # The API shares the case's bucket and answers in JSON.
    resp = source.post("/api/v1/messages", data={"message": (io.BytesIO(b"x" * 1072), "m.bin")},
                       content_type="multipart/form-data", headers={"X-CSRFToken": token})
    assert resp.status_code == 429 and resp.get_json()["error"] == "quota_exceeded"


def test_quota_case_bytes_per_day_refuses_before_storing(environ: dict[str, str], tmp_path: Path) -> None:
    app = make_app(environ, tmp_path, max_upload_mb="1", case_mb_per_day="1")
    client = app.test_client()
    source_login(client, file_report(client))
    part = os.urandom(400 * 1024)
    codes = [post_message(client, f"foto {n}", part).status_code for n in range(3)]
    assert codes == [302, 302, 429]
    assert count(app, Item) == 1 + 2
    # A message that fails validation (no text) stored nothing: its bytes are given back.
    assert post_message(client, "", b"").status_code == 400
    # Another case has its own daily bytes.
    other = app.test_client()
    source_login(other, file_report(other, "Otro informe"))
    assert post_message(other, "foto", part).status_code == 302


def test_quota_global_bytes_per_hour_across_sessions(environ: dict[str, str], tmp_path: Path,
                                                     workstation: Any) -> None:
    app = make_app(environ, tmp_path, max_upload_mb="1", session_mb_per_hour="1",
                   global_mb_per_hour="2")
    part = os.urandom(600 * 1024)
    # Bodies that store nothing (a bad CSRF token) do not use the quota up.
    for _ in range(5):
        resp = app.test_client().post("/api/v1/reports", data=api_payload(
            workstation.secret_key.public_key, "x", [("a.bin", "application/octet-stream", part)]),
            content_type="multipart/form-data", headers={"X-CSRFToken": "forged"})
        assert resp.status_code == 400
    codes = [post_form(app.test_client(), f"informe {n}", [("a.jpg", "image/jpeg", part)]).status_code
             for n in range(4)]
    assert codes == [200, 200, 200, 429]
    assert count(app, Report) == 3
    # Refused in JSON on the API, with a Retry-After that ends with the hour, the same for all.
    resp = post_api(app.test_client(), api_payload(workstation.secret_key.public_key, "x",
                                                   [("a.bin", "application/octet-stream", part)]))
    assert resp.status_code == 429 and resp.get_json()["error"] == "quota_exceeded"
    assert abs(int(resp.headers["Retry-After"]) - window_left(HOUR)) <= 2
    # A small report still fits in what is left.
    assert post_form(app.test_client(), "sin adjuntos", []).status_code == 200


def test_quota_key_names_its_window_not_the_second(app: Flask) -> None:
    with app.test_request_context():
        store = counters()
        key = store.key("cb", "case:ABC", 86400)
        assert "ABC" not in key and key.endswith(f":{int(time.time() // 86400)}")
        assert store.charge([]) is None


def test_quota_too_large_and_chunked_refused_unread(client: FlaskClient) -> None:
    resp = client.post("/api/v1/reports", data=b"", environ_overrides={"CONTENT_LENGTH": str(21 * MB)},
                       content_type="multipart/form-data; boundary=x")
    assert resp.status_code == 413 and resp.get_json()["error"] == "too_large"
    resp = client.post("/submit", data=b"", headers={"Transfer-Encoding": "chunked"},
                       content_type="multipart/form-data; boundary=x")
    assert resp.status_code == 411 and "No se guardó nada" in resp.get_data(as_text=True)


# --- Disk full ---------------------------------------------------------------------------------


def test_diskfull_blob_write_507_and_no_row(client: FlaskClient, app: Flask, workstation: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.orm import Session

    real_execute = Session.execute

    def full_disk(self: Session, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(getattr(statement, "table", None), "name", None) == BlobChunk.__tablename__:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_execute(self, statement, *args, **kwargs)

    monkeypatch.setattr(Session, "execute", full_disk)
    resp = post_api(client, api_payload(workstation.secret_key.public_key, "x", []))
    assert resp.status_code == 507 and resp.get_json()["error"] == "disk_full"
    assert int(resp.headers["Retry-After"]) > 0
    resp = post_form(client, "informe", [], environ_overrides={"HTTP_ACCEPT_LANGUAGE": "en"})
    assert resp.status_code == 507 and "No se guardó nada" in resp.get_data(as_text=True)
    monkeypatch.undo()
    assert count(app, Report) == count(app, Item) == count(app, BlobChunk) == 0


def test_diskfull_spool_write_507_and_no_row(client: FlaskClient, app: Flask,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import whistle.server.storage

    class FullFile(io.BytesIO):
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(whistle.server.storage.tempfile, "TemporaryFile", lambda **kw: FullFile())
    resp = post_form(client, "informe", [("a.jpg", "image/jpeg", os.urandom(200_000))])
    assert resp.status_code == 507 and int(resp.headers["Retry-After"]) > 0
    assert count(app, Report) == 0


def test_diskfull_sqlite_full_database_507_rolled_back(app: Flask, config: Config,
                                                      workstation: Any) -> None:
    """A real "database or disk is full" from SQLite (max_page_count), at insert or commit."""
    if not uses_sqlite(config):
        pytest.skip("SQLite's page limit simulates a full disk")
    from sqlalchemy import event, text

    engine = app.extensions["whistle"].engine
    with engine.connect() as conn:
        pages = int(conn.execute(text("PRAGMA page_count")).scalar_one())
    engine.dispose()

    @event.listens_for(engine, "connect")
    def _limit(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 8}")

    client = app.test_client()
    resp = post_api(client, api_payload(workstation.secret_key.public_key, "x",
                                        [("a.bin", "application/octet-stream", os.urandom(300_000))]))
    assert resp.status_code == 507, resp.get_data(as_text=True)
    event.remove(engine, "connect", _limit)
    engine.dispose()
    assert count(app, Report) == count(app, BlobChunk) == 0


# --- Against the production server --------------------------------------------------------------


def _head(port: int, path: str, declared: int) -> bytes:
    cookie, token = page_session(port)
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n"
            f"Cookie: {cookie}\r\nX-CSRFToken: {token}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n\r\n").encode()


PART = (b'--x\r\nContent-Disposition: form-data; name="attachment"; filename="a"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n")


def _send_until_answered(port: int, path: str, declared: int, deadline: float = 20) -> tuple[int, int]:
    """Send the headers, then up to ``declared`` body bytes in 64 KiB pieces, stopping as soon as
    an answer arrives or the connection closes. Returns (status, body bytes the server took)."""
    head = _head(port, path, declared)
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    # Small buffers on our side, so that what "was sent" is close to what the server read.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.sendall(head + PART)
    piece, sent, end = os.urandom(64 * 1024), len(PART), time.monotonic() + deadline
    sock.settimeout(0.2)
    try:
        while sent < declared and time.monotonic() < end:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer (or a close) is there
            try:
                sent += sock.send(piece[: declared - sent])
            except TimeoutError:
                continue  # the server is not reading: look for its answer again
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(10)
        answer = sock.recv(65536).decode("latin-1")
    finally:
        sock.close()
    match = re.match(r"HTTP/1\.[01] (\d{3})", answer)
    assert match, answer
    return int(match.group(1)), sent


def _stored_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())


def test_quota_20mb_bodies_real_server_stop_reading_early(environ: dict[str, str], config: Config,
                                                          tmp_path: Path) -> None:
    port = free_port()
    tmp_dir = tmp_path / "server-tmp"
    tmp_dir.mkdir()
    env = environ | {"WHISTLE_MAX_UPLOAD_MB": "20", "WHISTLE_QUOTA_GLOBAL_MB_PER_HOUR": "20",
                     "WHISTLE_QUOTA_SESSION_MB_PER_HOUR": "20"}
    with (tmp_path / "g.out").open("wb") as out, (tmp_path / "g.err").open("wb") as err:
        proc = start_gunicorn(env, bind=f"127.0.0.1:{port}", tmp_dir=tmp_dir, stdout=out, stderr=err)
    holders: list[socket.socket] = []
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", proc)
        before = _stored_bytes(config.data_dir)
        # One request more than the largest upload allowed: 413 before the body is read.
        status, taken_413 = _send_until_answered(port, "/api/v1/reports", 20 * MB + 1)
        assert status == 413 and taken_413 < 1 * MB, taken_413
        # Without a CSRF session the post cannot succeed: 400 before the body is read.
        bare = socket.create_connection(("127.0.0.1", port), timeout=10)
        holders.append(bare)
        bare.sendall(f"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Length: {15 * MB}\r\n"
                     "Content-Type: multipart/form-data; boundary=x\r\n\r\n".encode())
        assert bare.recv(65536).startswith(b"HTTP/1.1 400")
        # A client that declares 15 MB and then sends almost nothing holds none of the global
        # hour: the next 15 MB-class upload is still admitted (it gets past the quota to the body).
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        holders.append(idle)
        idle.sendall(_head(port, "/api/v1/reports", 15 * MB) + PART)
        time.sleep(0.5)
        status, taken = _send_until_answered(port, "/api/v1/reports", 15 * MB)
        assert status == 400 and taken >= 15 * MB - 64 * 1024, (status, taken)  # read, then not a report
        # 15 MB really arriving and still in flight do hold their share of the global hour …
        busy = socket.create_connection(("127.0.0.1", port), timeout=30)
        holders.append(busy)
        busy.sendall(_head(port, "/api/v1/reports", 16 * MB) + PART + os.urandom(15 * MB))
        time.sleep(1.0)
        # … so a 20 MB-class body from someone else is refused at once with 429 and Retry-After.
        status, taken_429 = _send_until_answered(port, "/submit", 20 * MB - 1024)
        assert status == 429 and taken_429 < 1 * MB, taken_429
        print(f"\nbody bytes taken before the answer: 413: {taken_413} B, 429: {taken_429} B")
        for sock in holders:
            sock.close()
        holders.clear()
        time.sleep(0.5)
        assert _stored_bytes(config.data_dir) - before < 256 * 1024
        assert list(tmp_dir.iterdir()) == [] or all(p.stat().st_size == 0 for p in tmp_dir.iterdir())
    finally:
        for sock in holders:
            sock.close()
        stop_process(proc, timeout=30)
    assert count_reports(config) == 0


def count_reports(config: Config) -> int:
    from whistle.server.db import make_engine, make_sessionmaker

    engine = make_engine(config.database_url)
    try:
        with make_sessionmaker(engine)() as db:
            return int(db.scalar(sql_select(func.count()).select_from(Report)) or 0)
    finally:
        engine.dispose()
