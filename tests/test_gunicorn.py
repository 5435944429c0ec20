# SPDX-License-Identifier: AGPL-3.0-or-later
"""The production server: gunicorn with deploy/gunicorn.conf.py in front of wsgi:app.

A real gunicorn serves a test instance on loopback. A report goes in through the JavaScript-off
form with a User-Agent canary and an X-Forwarded-For canary; then no response may carry a Server
banner, gunicorn's own output may hold neither canary, no client address, no access-log line and
no time of day, and nothing the server wrote may hold the canaries. A bad setup must stop
gunicorn at once with one "refusing to start" line.
"""

from __future__ import annotations

import http.client
import re
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import (
    GUNICORN_CONF,
    REPO,
    Browser,
    LiveServer,
    Workstation,
    csrf_from_html,
    find_needles,
    free_port,
    multipart,
    once_from_html,
    start_gunicorn,
    stop_process,
    wait_until_serving,
)

from whistle.server.config import Config

# What an access-log line looks like in gunicorn's default format: `ADDR - - [DATE] "GET / …"`.
ACCESS_LINE = re.compile(r'(\d{1,3}\.){3}\d{1,3} - |"(GET|POST|HEAD) /')
TIME_OF_DAY = re.compile(r"\b\d{2}:\d{2}:\d{2}\b")


def _headers(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheaders()
    finally:
        conn.close()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def _no_banner(headers: list[tuple[str, str]], where: str) -> None:
    names = [k.lower() for k, _ in headers]
    assert "server" not in names, f"{where}: a Server header went out: {headers}"
    for name, value in headers:
        assert "gunicorn" not in value.lower(), f"{where}: {name}: {value}"
        assert not re.search(r"werkzeug|python/\d", value, re.I), f"{where}: {name}: {value}"


def test_gunicorn_serves_without_banner_address_or_access_log(
        environ: dict[str, str], config: Config, workstation: Workstation, tmp_path: Path) -> None:
    from sqlalchemy import select

    from whistle.server.db import make_engine, make_sessionmaker
    from whistle.server.models import Report

    port = free_port()
    tmp_dir = tmp_path / "server-tmp"
    tmp_dir.mkdir()
    logs = [tmp_path / "gunicorn.out", tmp_path / "gunicorn.err"]
    tag = secrets.token_hex(6)
    ua_canary = f"CANARY-UA-{tag}/1.0"
    ip_canary = "198.51.100.213"
    body_canary = f"CANARY-BODY-{tag}"
    with logs[0].open("wb") as out, logs[1].open("wb") as err:
        proc = start_gunicorn(environ, bind=f"127.0.0.1:{port}", tmp_dir=tmp_dir,
                              stdout=out, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, proc)
        browser = Browser(url, ua_canary, ip_canary)
        status, html = browser.request("/submit")
        assert status == 200
        data, ctype = multipart([("csrf_token", csrf_from_html(html)), ("once", once_from_html(html)),
                                 ("category", "corruption"),
                                 ("body", f"Informe {body_canary}"),
                                 ("attachments", ("nota.txt", "text/plain", body_canary.encode() * 100))])
        # X-Forwarded-Proto comes from 127.0.0.1, like every visitor behind Tor. If gunicorn trusted
        # it (its default for loopback), the request would count as HTTPS and Flask-WTF's strict
        # Referer check would refuse this post with 400: forwarded_allow_ips = "" prevents that.
        status, html = browser.request("/submit", data, {"Content-Type": ctype,
                                                         "X-Forwarded-Proto": "https"})
        assert status == 200, html
        match = re.search(r'<code id="receipt-passphrase">([^<]+)</code>', html)
        assert match and len(match.group(1).split()) == 8  # Spanish: 8 words

        # No Server banner, from the app's pages, its errors, static files or gunicorn's own errors.
        canary_headers = {"User-Agent": ua_canary, "X-Forwarded-For": ip_canary}
        for method, path in (("GET", "/"), ("GET", "/submit"), ("GET", "/api/v1/unit-key"),
                             ("GET", "/no-such-page"), ("HEAD", "/"), ("POST", "/api/v1/reports"),
                             ("GET", "/static/css/whistle.css")):
            status, headers = _headers(port, method, path, canary_headers)
            assert status in (200, 400, 404), (path, status)
            _no_banner(headers, f"{method} {path}")
        # A malformed request is answered by gunicorn itself and logged at WARNING.
        answer = _raw(port, f"GET /\x01{tag} HTTP/1.1\r\nHost: x\r\nUser-Agent: {ua_canary}\r\n"
                            f"X-Forwarded-For: {ip_canary}\r\n\r\n".encode())
        head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        assert head.startswith("HTTP/1.1 400")
        _no_banner([tuple(line.split(": ", 1)) for line in head.split("\r\n")[1:]],  # type: ignore[misc]
                   "malformed request")
    finally:
        stop_process(proc, timeout=30)
    assert proc.returncode == 0, logs[1].read_text()

    output = b"".join(p.read_bytes() for p in logs).decode("utf-8", "replace")
    # The malformed request's warning is there (so the log really was captured), scrubbed.
    assert "refused a malformed HTTP request" in output, output
    assert tag not in output, output
    for needle in (ua_canary, ip_canary, body_canary, "127.0.0.1", "ip="):
        assert needle not in output, f"{needle!r} in gunicorn's output:\n{output}"
    assert not ACCESS_LINE.search(output), output
    assert not TIME_OF_DAY.search(output), f"a time of day in gunicorn's output:\n{output}"

    # Nothing the server wrote holds the canaries (the canary test does the same for the dev server).
    written = LiveServer(url=url, data_dir=config.data_dir, tmp_dir=tmp_dir, log_files=logs,
                         app_config=config).written_files()
    needles = {"User-Agent": ua_canary.encode(), "forwarded address": ip_canary.encode(),
               "report text": body_canary.encode()}
    assert find_needles(written, needles) == []
    engine = make_engine(config.database_url)
    with make_sessionmaker(engine)() as db:
        assert len(db.scalars(select(Report)).all()) == 1
    engine.dispose()


@pytest.mark.parametrize("case", ["missing unit key", "private key in key folder", "bad worker count",
                                  "two workers without redis", "both interfaces in one process",
                                  "bad header timeout"])
def test_gunicorn_refuses_to_start(case: str, environ: dict[str, str], config: Config,
                                   workstation: Workstation, tmp_path: Path) -> None:
    env = dict(environ)
    extra: dict[str, str] = {}
    key_dir = Path(environ["WHISTLE_UNIT_KEY"]).parent
    if case == "missing unit key":
        env["WHISTLE_UNIT_KEY"] = str(key_dir / "missing.pub")
        expected = "unit public key"
    elif case == "private key in key folder":
        (key_dir / "unit.key").write_bytes(workstation.key_file.read_bytes())
        expected = "private key"
    elif case == "bad worker count":
        extra["WHISTLE_WORKERS"] = "lots"
        expected = "WHISTLE_WORKERS"
    elif case == "both interfaces in one process":
        extra["WHISTLE_INTERFACE"] = "all"
        expected = "WHISTLE_INTERFACE"
    elif case == "bad header timeout":
        extra["WHISTLE_HEADER_TIMEOUT"] = "40-20"
        expected = "WHISTLE_HEADER_TIMEOUT"
    else:
        env.pop("WHISTLE_RATELIMIT_STORAGE", None)
        extra["WHISTLE_WORKERS"] = "2"
        expected = "WHISTLE_RATELIMIT_STORAGE"
    port = free_port()
    out, err = tmp_path / "gunicorn.out", tmp_path / "gunicorn.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = start_gunicorn(env, bind=f"127.0.0.1:{port}", tmp_dir=tmp_path, stdout=fo, stderr=fe,
                              extra_env=extra)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("gunicorn kept running with a bad setup")
    assert proc.returncode != 0
    lines = [line for line in (out.read_text() + err.read_text()).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("whistle: refusing to start: ") and expected in lines[0], lines[0]
    # It never listened.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_gunicorn_config_is_what_production_needs() -> None:
    """The settings that matter, read back through gunicorn's own parser."""
    code = (
        "import sys; from gunicorn.app.wsgiapp import WSGIApplication\n"
        f"sys.argv = ['gunicorn', '-c', {str(GUNICORN_CONF)!r}, 'wsgi:app']\n"
        "c = WSGIApplication('%(prog)s').cfg\n"
        "print(repr((c.bind, c.workers, c.worker_class_str, c.threads, c.preload_app,"
        " c.accesslog, c.errorlog, c.loglevel, c.forwarded_allow_ips, c.proc_name, c.timeout,"
        " c.worker_connections)))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(REPO), "WHISTLE_INTERFACE": "source"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == repr(
        (["127.0.0.1:8000"], 1, "whistle.server.worker.WhistleWorker", 16, True, None, "-", "warning", [],
         "whistle", 600, 1000))
