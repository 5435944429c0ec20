# SPDX-License-Identifier: AGPL-3.0-or-later
"""A gunicorn worker that slow clients cannot starve.

``worker_class = "whistle.server.worker.WhistleWorker"`` in deploy/gunicorn.conf.py.

gunicorn's threaded worker hands a connection to a thread as soon as its first byte arrives; the
thread then waits for the rest of the request for as long as the client likes, so eight
connections that send half a request each silenced a worker with eight threads. This worker keeps
gunicorn's threads, its HTTP parser and its WSGI plumbing, and changes who waits:

* The worker's main loop (one ``selectors`` loop, no thread per connection) reads every request
  head, and every body of up to ``WHISTLE_BUFFER_KB`` (2 MiB by default: every form without an
  attachment, every sealed envelope, every login), into **memory** before a thread sees it.
  A thread is only ever given a complete request, so a slow client costs a socket and a buffer,
  never a thread. Nothing is written to disk here: a JavaScript-off report stays in memory until
  the application seals it.
* Deadlines and a minimum rate, after Apache's ``mod_reqtimeout`` (SecureDrop's settings
  ``header=20-40,MinRate=500 body=20,MinRate=500``): a head must arrive within 20 s, extended by
  1 s for every 500 bytes received, never beyond 40 s; a body within 20 s, extended likewise.
  Late clients get ``408`` and are disconnected.
* Larger bodies (attachments) are streamed by a separate pool of upload threads
  (``WHISTLE_UPLOAD_THREADS``), after the application has checked the request's limits and quotas
  from its head, at no less than ``WHISTLE_UPLOAD_MIN_RATE`` bytes per second. Uploads can only
  ever occupy that pool: pages, logins and text-only reports are served by the other one.
* When ``worker_connections`` are open and another client connects, the connection that has
  waited longest without completing a request is closed to make room, instead of gunicorn's
  behaviour of no longer accepting anyone: stalled connections cannot crowd out new ones.

HTTP/2 and TLS are not served (the worker sits behind a Tor onion service on loopback).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import sys
import time
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.workers.gthread import ThreadWorker

from whistle.server.uploads import ClientTooSlow

IDLE, HEAD, BODY, BUSY = "idle", "head", "body", "busy"
_HEAD_END = b"\r\n\r\n"
# Seconds a thread may wait for a client to take a response (a client that does not read).
SEND_TIMEOUT = 20.0
# Seconds an application may leave a request body partly unread before it is drained and skipped.
DRAIN_SECONDS = 5.0
DRAIN_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class Policy:
    """Deadlines and sizes, read once from the environment (see deploy/gunicorn.conf.py)."""

    first_byte: float = 20.0        # a new connection must start its request within this
    header_timeout: float = 20.0    # head: initial allowance …
    header_max: float = 40.0        # … never extended beyond this
    body_timeout: float = 20.0      # body: initial allowance, extended by the rate below
    min_rate: float = 500.0         # bytes per second that extend an allowance by one second
    upload_min_rate: float = 4096.0
    max_head: int = 64 * 1024
    buffer_bytes: int = 2 * 1024 * 1024
    memory_budget: int = 256 * 1024 * 1024
    upload_threads: int = 16

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Policy:
        """The policy from ``WHISTLE_*`` variables (already checked by the gunicorn config)."""

        def num(name: str, default: float) -> float:
            raw = environ.get(name, "").strip()
            return float(raw) if raw else default

        head = environ.get("WHISTLE_HEADER_TIMEOUT", "").strip()
        low, _, high = head.partition("-")
        return cls(
            header_timeout=float(low) if low else cls.header_timeout,
            header_max=float(high or low) if low else cls.header_max,
            first_byte=float(low) if low else cls.first_byte,
            body_timeout=num("WHISTLE_BODY_TIMEOUT", cls.body_timeout),
            min_rate=num("WHISTLE_MIN_RATE", cls.min_rate),
            upload_min_rate=num("WHISTLE_UPLOAD_MIN_RATE", cls.upload_min_rate),
            buffer_bytes=int(num("WHISTLE_BUFFER_KB", cls.buffer_bytes / 1024) * 1024),
            memory_budget=int(num("WHISTLE_BUFFER_BUDGET_MB", cls.memory_budget / 2**20) * 2**20),
            upload_threads=int(num("WHISTLE_UPLOAD_THREADS", cls.upload_threads)),
        )


def _canned(status: str, text: str, *extra: str) -> bytes:
    # The worker's own answers, for requests the application never saw: short, no banner, in both
    # of the drop's languages (the request's language is not known yet).
    body = text.encode()
    head = [f"HTTP/1.1 {status}", "Connection: close", "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}", "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


TIMEOUT_408 = _canned("408 Request Timeout",
                      "La solicitud llegó demasiado despacio; no se guardó nada. Inténtelo de nuevo.\n"
                      "The request arrived too slowly; nothing was stored. Please try again.\n")
HEAD_431 = _canned("431 Request Header Fields Too Large", "Solicitud inválida. / Bad request.\n")
BAD_400 = _canned("400 Bad Request", "Solicitud inválida. / Bad request.\n")
BUSY_503 = _canned("503 Service Unavailable",
                   "El servidor está ocupado; no se guardó nada. Espere un minuto e inténtelo de nuevo.\n"
                   "The server is busy; nothing was stored. Please wait a minute and try again.\n",
                   "Retry-After: 30")


def body_framing(head: bytes) -> tuple[int, bool] | None:
    """``(content_length, chunked)`` from a request head, or None if the framing is invalid.

    Only what the loop needs to decide how to read the body; gunicorn's parser checks the head
    fully afterwards and answers 400 for anything else it dislikes."""
    length: int | None = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                return None
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    if chunked and length is not None:
        return None  # both framings at once: a request smuggling attempt (RFC 9112 §6.3)
    return (length or 0), chunked


class RequestSource:
    """What gunicorn's parser reads one request from: the bytes the loop buffered, then (for a
    large body only) the socket, at no less than the upload minimum rate."""

    def __init__(self, sock: socket.socket, buffered: bytes, policy: Policy | None) -> None:
        self._sock = sock
        self._buffered = memoryview(buffered)
        self._policy = policy
        self._started = time.monotonic()
        self._received = len(buffered)

    def recv(self, size: int) -> bytes:
        if self._buffered:
            piece, self._buffered = self._buffered[:size], self._buffered[size:]
            return bytes(piece)
        if self._policy is None:
            return b""  # the whole request was buffered: nothing more belongs to it
        deadline = (self._started + self._policy.body_timeout
                    + self._received / self._policy.upload_min_rate)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientTooSlow("request body below the minimum rate")
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(size)
        except TimeoutError:
            raise ClientTooSlow("request body below the minimum rate") from None
        finally:
            self._sock.settimeout(SEND_TIMEOUT)
        self._received += len(data)
        return data

    def settimeout(self, value: float | None) -> None:
        # gunicorn's finish_body() bounds its drain with timeouts on the socket it reads.
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()


class Conn:
    """One client connection and the bytes of its next request, while the loop owns it."""

    def __init__(self, sock: socket.socket, client: Any, server: Any, now: float, first: float) -> None:
        self.sock, self.client, self.server = sock, client, server
        self.buf = bytearray()
        self.phase = IDLE
        self.since = now              # when the current phase began
        self.deadline = now + first   # when the loop gives up on this connection
        self.head_len = 0
        self.body_len = 0
        self.accepted = now


class WhistleWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker with the request reading moved into its main loop (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = Policy.from_environ(os.environ)
        self.waiting: dict[int, Conn] = {}   # owned by the loop, keyed by id()
        self.buffered = 0                    # bytes held in those connections' buffers
        self.upload_pool: futures.ThreadPoolExecutor | None = None
        # gthread's handle_request() closes a connection when this many are kept alive; the
        # loop manages keep-alive itself, so that check must never fire.
        self.max_keepalived = sys.maxsize

    def init_process(self) -> None:
        self.upload_pool = futures.ThreadPoolExecutor(max_workers=self.policy.upload_threads)
        super().init_process()

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        self.poller.register(self.method_queue.fileno(), selectors.EVENT_READ,
                             self.method_queue.run_callbacks)
        self.set_accept_enabled(True)
        next_sweep = 0.0
        while self.alive:
            self.notify()
            self.wait_for_and_dispatch_events(timeout=0.5)
            if not self.is_parent_alive():
                break
            now = time.monotonic()
            if now >= next_sweep:  # a few times a second, not after every event: it is O(connections)
                self.sweep(now)
                next_sweep = now + 0.25
        self.set_accept_enabled(False)
        # Connections that have not completed a request are closed at once; requests already
        # being served get the graceful timeout to finish.
        for conn in list(self.waiting.values()):
            self.drop(conn)
        limit = time.monotonic() + self.cfg.graceful_timeout
        while self.nr_conns > 0 and time.monotonic() < limit:
            self.notify()
            self.wait_for_and_dispatch_events(timeout=0.5)
            for conn in list(self.waiting.values()):
                self.drop(conn)
        self.tpool.shutdown(wait=False)
        if self.upload_pool is not None:
            self.upload_pool.shutdown(wait=False)
        self.poller.close()
        self.method_queue.close()
        for listener in self.sockets:
            listener.close()

    def accept(self, listener: Any) -> None:
        now = time.monotonic()
        for _ in range(64):  # several per wake-up, so a burst does not wait a loop turn each
            try:
                sock, client = listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED):
                    return
                raise
            if self.nr_conns >= self.worker_connections and not self.evict_one():
                sock.close()  # every slot holds a request being served: nothing stalled to drop
                continue
            sock.setblocking(False)
            conn = Conn(sock, client, listener.getsockname(), now, self.policy.first_byte)
            self.nr_conns += 1
            self.watch(conn)

    def evict_one(self) -> bool:
        """Close the connection that has waited longest without completing a request."""
        if not self.waiting:
            return False
        oldest = min(self.waiting.values(), key=lambda c: c.since)
        self.drop(oldest)
        return True

    def watch(self, conn: Conn) -> None:
        self.waiting[id(conn)] = conn
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_readable, conn))

    def unwatch(self, conn: Conn) -> None:
        self.waiting.pop(id(conn), None)
        self.buffered -= len(conn.buf)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def drop(self, conn: Conn, answer: bytes = b"") -> None:
        self.unwatch(conn)
        conn.buf = bytearray()
        if answer:
            # Best effort and never blocking: the socket is non-blocking here.
            with contextlib.suppress(OSError):
                conn.sock.send(answer)
        with contextlib.suppress(OSError):
            conn.sock.close()
        self.nr_conns -= 1

    def sweep(self, now: float) -> None:
        for conn in [c for c in self.waiting.values() if c.deadline <= now]:
            # A kept-alive or new connection that never started a request is closed quietly.
            self.drop(conn, b"" if conn.phase == IDLE else TIMEOUT_408)

    def on_readable(self, conn: Conn, _sock: Any) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(conn)
            return
        if not data:
            self.drop(conn)
            return
        if self.buffered + len(data) > self.policy.memory_budget:
            self.drop(conn, BUSY_503)
            return
        conn.buf += data
        self.buffered += len(data)
        self.advance(conn, time.monotonic())

    def advance(self, conn: Conn, now: float) -> None:
        """Move a connection through head → body → a thread as its bytes arrive."""
        policy = self.policy
        if conn.phase == IDLE:
            conn.phase, conn.since = HEAD, now
        if conn.phase == HEAD:
            end = conn.buf.find(_HEAD_END)
            if end < 0:
                if len(conn.buf) > policy.max_head:
                    self.drop(conn, HEAD_431)
                else:
                    conn.deadline = min(conn.since + policy.header_timeout + len(conn.buf) / policy.min_rate,
                                        conn.since + policy.header_max)
                return
            framing = body_framing(bytes(conn.buf[:end]))
            if framing is None:
                self.drop(conn, BAD_400)
                return
            length, chunked = framing
            conn.head_len = end + len(_HEAD_END)
            if chunked or length > policy.buffer_bytes:
                self.dispatch(conn, large=True)
                return
            conn.phase, conn.since, conn.body_len = BODY, now, length
            if length and b"100-continue" in bytes(conn.buf[:end]).lower():
                with contextlib.suppress(OSError):
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if conn.phase == BODY:
            have = len(conn.buf) - conn.head_len
            if have >= conn.body_len:
                self.dispatch(conn, large=False)
            else:
                conn.deadline = conn.since + policy.body_timeout + have / policy.min_rate

    def dispatch(self, conn: Conn, *, large: bool) -> None:
        self.unwatch(conn)
        end = len(conn.buf) if large else conn.head_len + conn.body_len
        request, rest = bytes(conn.buf[:end]), bytes(conn.buf[end:])
        conn.buf, conn.phase = bytearray(), BUSY
        pool = self.upload_pool if large else self.tpool
        assert pool is not None  # noqa: S101 - created in init_process, before the loop runs
        future = pool.submit(self.serve, conn, request, large)
        future.add_done_callback(
            lambda fut: self.method_queue.defer(self.served, conn, rest, fut))

    def served(self, conn: Conn, rest: bytes, fut: futures.Future[tuple[bool, bytes]]) -> None:
        """Back on the loop after a thread answered: keep the connection alive or close it."""
        try:
            keep, read_ahead = fut.result() if not fut.cancelled() else (False, b"")
        except Exception:  # noqa: BLE001 - serve() catches everything; this is belt and braces
            keep, read_ahead = False, b""
        if not keep or not self.alive:
            conn.phase = IDLE
            self.nr_conns -= 1
            with contextlib.suppress(OSError):
                conn.sock.close()
            return
        now = time.monotonic()
        conn.sock.setblocking(False)
        conn.phase, conn.since, conn.deadline = IDLE, now, now + self.cfg.keepalive
        conn.buf = bytearray(rest + read_ahead)
        self.buffered += len(conn.buf)
        self.watch(conn)
        if conn.buf:
            self.advance(conn, now)  # a pipelined request was already here

    # --- a thread ------------------------------------------------------------------------------

    def serve(self, conn: Conn, request: bytes, large: bool) -> tuple[bool, bytes]:
        """Parse and answer one request (in a pool thread). Returns (keep-alive, bytes read past it)."""
        req = None
        conn.sock.setblocking(True)
        conn.sock.settimeout(SEND_TIMEOUT)
        source = RequestSource(conn.sock, request, self.policy if large else None)
        try:
            parser = http.get_parser(self.cfg, source, conn.client)
            req = next(parser)
            keep = bool(self.handle_request(req, conn))
            # A body the application did not read (it refused the request from its head) is
            # skipped only if little is left; otherwise the connection closes rather than spend
            # a thread and bandwidth on bytes nobody wants.
            if keep and not parser.finish_body(deadline=time.monotonic() + DRAIN_SECONDS,
                                               max_bytes=DRAIN_MAX_BYTES):
                keep = False
            return keep, parser.unreader.take_buffered() if keep else b""
        except ClientTooSlow:
            self._send_quietly(conn, TIMEOUT_408)
        except (http.errors.NoMoreData, StopIteration):
            pass
        except OSError as exc:
            if exc.errno not in (None, errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.warning("socket error while serving a request: %s", type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - gunicorn answers 400/500 for whatever it was
            self.handle_error(req, conn.sock, conn.client, exc)
        return False, b""

    @staticmethod
    def _send_quietly(conn: Conn, data: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.sock.sendall(data)
