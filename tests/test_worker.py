# SPDX-License-Identifier: AGPL-3.0-or-later
"""whistle's gunicorn worker (whistle/server/worker.py) under slow-client attacks.

Every test runs the production configuration (deploy/gunicorn.conf.py, loopback only) with its
default thread counts, opens four times as many hostile connections as the worker has threads for
pages, and checks what a visitor would notice: a normal page keeps coming back within 3 s, and the
hostile connections are cut by their deadlines (408). Deadlines are shortened through the
documented variables so that each test takes seconds; loops are bounded in count and time.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import free_port, page_session, start_gunicorn, stop_process, wait_until_serving

from whistle.server.config import Config
from whistle.server.worker import Policy, body_framing

THREADS = 16            # the configured default (deploy/gunicorn.conf.py)
ATTACKERS = 4 * THREADS
SHORT = {"WHISTLE_HEADER_TIMEOUT": "3-5", "WHISTLE_BODY_TIMEOUT": "3"}


class Server:
    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log

    def get(self, path: str = "/submit", timeout: float = 10) -> tuple[int, float]:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status, time.monotonic() - started
        finally:
            conn.close()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def upload_head(self, declared: int) -> bytes:
        """The head of an API upload that is acceptable in every other way (a CSRF session, its
        token), then the start of an attachment part: what follows is up to the test."""
        cookie, token = page_session(self.port)
        return (f"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n"
                f"X-CSRFToken: {token}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                f"Content-Length: {declared}\r\n\r\n--b\r\n"
                'Content-Disposition: form-data; name="attachment"; filename="a"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode()


@pytest.fixture
def server(environ: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Server]]:
    procs = []

    def start(**extra: str) -> Server:
        port = free_port()
        log = tmp_path / f"gunicorn-{port}.log"
        with log.open("wb") as out:
            proc = start_gunicorn(environ, bind=f"127.0.0.1:{port}", tmp_dir=tmp_path, stdout=out,
                                  stderr=out, extra_env=SHORT | extra)
        procs.append(proc)
        wait_until_serving(f"http://127.0.0.1:{port}", proc,
                           path="/investigator/login" if "WHISTLE_INTERFACE" in extra else "/api/v1/unit-key")
        return Server(port, log)

    yield start
    for proc in procs:
        stop_process(proc, timeout=30)


def _latencies_during(server: Server, seconds: float) -> list[float]:
    """Normal page loads, one after another, for ``seconds``; each must succeed."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        status, took = server.get()
        assert status == 200
        out.append(took)
    return out


def _answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sent before closing (b"" if it closed silently)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while data := sock.recv(4096):
            chunks.append(data)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


PARTIAL_HEAD = b"GET /submit HTTP/1.1\r\nHost: x\r\n"
SMALL_POST = (b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
              b"boundary=b\r\nContent-Length: 1000\r\n\r\n")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["partial request", "slow headers", "slow small body"])
def test_worker_slow_clients_do_not_delay_pages(server: Callable[..., Server], kind: str) -> None:
    srv = server()
    socks = [srv.connect() for _ in range(ATTACKERS)]
    stop = threading.Event()
    try:
        for s in socks:
            s.sendall(SMALL_POST if kind == "slow small body" else PARTIAL_HEAD)

        def trickle() -> None:
            # One byte per connection per second: far below the 500 bytes/s minimum rate.
            while not stop.wait(1.0):
                for s in socks:
                    with contextlib.suppress(OSError):
                        s.send(b"X" if kind == "slow small body" else b"X-A: 1\r\n"[:1])

        if kind != "partial request":
            threading.Thread(target=trickle, daemon=True).start()
        latencies = _latencies_during(srv, 2.5)
        assert latencies and max(latencies) < 3.0, latencies
        # The deadlines cut them: at most 5 s for a head (the short test setting), 3 s + rate for a body.
        answers = [_answer(s, 10) for s in socks]
    finally:
        stop.set()
        for s in socks:
            s.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:40] for a in answers}


@pytest.mark.slow
def test_worker_slow_uploads_use_their_own_threads(server: Callable[..., Server]) -> None:
    """Attachment-sized bodies trickling in occupy the upload threads only; pages stay fast."""
    srv = server(WHISTLE_UPLOAD_THREADS="4")
    heads = [srv.upload_head(10_000_000) for _ in range(ATTACKERS)]
    socks = [srv.connect() for _ in range(ATTACKERS)]
    try:
        for s, head in zip(socks, heads, strict=True):
            s.sendall(head)
        latencies = _latencies_during(srv, 2.5)
        assert max(latencies) < 3.0, latencies
    finally:
        for s in socks:
            s.close()


@pytest.mark.slow
def test_worker_upload_below_minimum_rate_is_cut(server: Callable[..., Server], config: Config) -> None:
    """An attachment-sized body trickling below the upload minimum rate gets 408, nothing stored."""
    srv = server(WHISTLE_UPLOAD_MIN_RATE="100000", WHISTLE_BODY_TIMEOUT="2")
    s = srv.connect()
    answer = b""
    started = time.monotonic()
    try:
        s.sendall(srv.upload_head(5_000_000))
        s.settimeout(0.2)
        while time.monotonic() - started < 15 and not answer:
            try:
                s.send(b"x" * 100)  # 500 bytes/s
                answer = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
        took = time.monotonic() - started
        # The head of the answer can arrive in one packet and its body in the next.
        s.settimeout(5)
        while answer and b"too_slow" not in answer:
            try:
                more = s.recv(4096)
            except OSError:
                break
            if not more:
                break
            answer += more
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"too_slow" in answer
    assert took < 6  # 2 s allowance + 500 bytes/s earns almost nothing
    spool = config.spool_dir
    assert not spool.exists() or not any(spool.iterdir())


@pytest.mark.slow
def test_worker_full_house_evicts_stalled_connections(server: Callable[..., Server]) -> None:
    """More stalled connections than the worker keeps open: a new visitor is still served."""
    srv = server(WHISTLE_CONNECTIONS="20")
    socks = [srv.connect() for _ in range(80)]
    try:
        for s in socks:
            with contextlib.suppress(OSError):
                s.sendall(PARTIAL_HEAD)
        latencies = _latencies_during(srv, 2.0)
        assert max(latencies) < 3.0, latencies
    finally:
        for s in socks:
            s.close()


@pytest.mark.slow
def test_worker_keeps_alive_and_pipelines(server: Callable[..., Server]) -> None:
    srv = server()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/api/v1/unit-key")
            resp = conn.getresponse()
            assert resp.status == 200 and b"public_key" in resp.read()
    finally:
        conn.close()
    # Two requests in one write, the first with a body the application does not read.
    s = srv.connect()
    try:
        s.sendall(b"POST /api/v1/unit-key HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                  b"GET /api/v1/unit-key HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _answer(s, 10)
    finally:
        s.close()
    assert answer.count(b"HTTP/1.1 ") == 2, answer[:300]
    assert answer.startswith(b"HTTP/1.1 405") and b"HTTP/1.1 200" in answer


@pytest.mark.slow
def test_worker_refuses_bad_framing_and_huge_heads(server: Callable[..., Server]) -> None:
    srv = server()
    for request, status in (
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
    ):
        s = srv.connect()
        try:
            s.sendall(request)
            answer = _answer(s, 10)
        finally:
            s.close()
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]


def investigator_login_attempt(port: int) -> int:
    """One investigator login with a wrong password, as a browser sends it (CSRF token and all):
    it costs the server a full argon2 password check."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/investigator/login")
        resp = conn.getresponse()
        html = resp.read().decode()
        cookie = resp.getheader("Set-Cookie", "").split(";", 1)[0]
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
        assert token, html
        body = urllib.parse.urlencode({"csrf_token": token.group(1), "name": secrets.token_hex(6),
                                       "password": "wrong password", "code": "123456"})
        conn.request("POST", "/investigator/login", body=body.encode(),
                     headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.mark.slow
def test_worker_investigator_login_burst_leaves_source_pages_fast(
        server: Callable[..., Server]) -> None:
    """The interfaces run apart: 60 concurrent investigator logins, source pages under 1 s p95."""
    source = server()
    investigator = server(WHISTLE_INTERFACE="investigator")
    statuses: list[int] = []

    def burst() -> None:
        with contextlib.suppress(OSError):
            statuses.append(investigator_login_attempt(investigator.port))

    threads = [threading.Thread(target=burst) for _ in range(60)]
    for t in threads:
        t.start()
    latencies = sorted(_latencies_during(source, 3.0))
    for t in threads:
        t.join(60)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    assert p95 < 1.0, latencies
    # The logins were real password checks (refused: wrong password, or busy), not CSRF refusals.
    assert statuses and all(code in (200, 401, 429, 503) for code in statuses), statuses


def test_worker_body_framing_unit() -> None:
    assert body_framing(b"GET / HTTP/1.1\r\nHost: x") == (0, False)
    assert body_framing(b"POST / HTTP/1.1\r\ncontent-length: 12") == (12, False)
    assert body_framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked") == (0, True)
    assert body_framing(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1") == (1, False)
    assert body_framing(b"POST / HTTP/1.1\r\nContent-Length: 1e3") is None
    policy = Policy.from_environ({"WHISTLE_HEADER_TIMEOUT": "5-9", "WHISTLE_BUFFER_KB": "64"})
    assert (policy.header_timeout, policy.header_max, policy.buffer_bytes) == (5, 9, 65536)
