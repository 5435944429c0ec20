# SPDX-License-Identifier: AGPL-3.0-or-later
"""The webhook: ``GET /whatsapp/webhook`` (Meta's verification handshake) and ``POST
/whatsapp/webhook`` (messages). Answers are short plain text; nothing here renders a page.

A POST is refused (403, nothing read further, nothing processed) unless ``X-Hub-Signature-256``
is the HMAC-SHA256 of the raw body under the app secret; the length is checked before the body
is read (411 without one, 413 above :data:`MAX_BODY`). A signed request is answered 200 as soon
as its messages are queued (Meta retries a slow answer), or 503 when the queue is full.

The POST is answered by :class:`WebhookMiddleware`, in front of Flask: it needs none of what
Flask's request hooks do for the pages (CSRF, rate limits keyed on sessions, quotas, languages,
page headers), and skipping them more than doubles the requests a worker answers
(docs/performance.md, "The WhatsApp bridge").
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, request

from whistle.server.uploads import ClientTooSlow
from whistle.server.whatsapp.bridge import Bridge, QueueFull

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
from whistle.server.whatsapp.payload import parse, signature_ok

bp = Blueprint("whatsapp", __name__, url_prefix="/whatsapp")
# Meta's webhook bodies are a few kilobytes; a batch of many messages stays far below this.
MAX_BODY = 3 * 1024 * 1024
EXTENSION = "whistle_whatsapp"


def bridge() -> Bridge:
    found = current_app.extensions[EXTENSION]
    assert isinstance(found, Bridge)  # noqa: S101 - set by init_app, never anything else
    return found


def _plain(text: str, status: int, **headers: str) -> Response:
    response = Response(text, status=status, mimetype="text/plain")
    response.headers.update(headers)
    return response


@bp.get("/webhook")
def verify() -> Response:
    """The subscription handshake: echo ``hub.challenge`` when ``hub.verify_token`` is ours."""
    token = request.args.get("hub.verify_token", "")
    challenge = request.args.get("hub.challenge", "")
    expected = bridge().settings.verify_token
    if (request.args.get("hub.mode") == "subscribe"
            and hmac.compare_digest(token.encode("utf-8", "replace"), expected.encode("utf-8"))
            and 0 < len(challenge) <= 256 and challenge.isascii() and challenge.isprintable()):
        return _plain(challenge, 200)
    return _plain("forbidden", 403)


class WebhookMiddleware:
    """``POST /whatsapp/webhook`` before Flask (see the module docstring); everything else goes
    to the Flask application unchanged."""

    PATH = "/whatsapp/webhook"

    def __init__(self, wsgi_app: WSGIApplication, bridge: Bridge) -> None:
        self.wsgi_app, self.bridge = wsgi_app, bridge

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != self.PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        status, text, extra = self.receive(environ)
        body = text.encode()
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
                                ("X-Content-Type-Options", "nosniff"), *extra])
        return [body]

    def receive(self, environ: WSGIEnvironment) -> tuple[str, str, list[tuple[str, str]]]:
        raw_length = str(environ.get("CONTENT_LENGTH") or "")
        if environ.get("HTTP_TRANSFER_ENCODING") or not raw_length.isdigit():
            return "411 Length Required", "length required", []
        length = int(raw_length)
        if length > MAX_BODY:
            return "413 Content Too Large", "too large", []
        try:
            body = environ["wsgi.input"].read(length) if length else b""
        except ClientTooSlow:
            return "408 Request Timeout", "too slow", [("Connection", "close")]
        settings = self.bridge.settings
        if not signature_ok(settings.app_secret, body, environ.get("HTTP_X_HUB_SIGNATURE_256")):
            return "403 Forbidden", "forbidden", []
        try:
            self.bridge.submit(parse(body, settings.phone_number_id))
        except QueueFull:
            return "503 Service Unavailable", "busy", [("Retry-After", "30")]
        return "200 OK", "ok", []
