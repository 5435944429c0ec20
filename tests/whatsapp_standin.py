# SPDX-License-Identifier: AGPL-3.0-or-later
"""A stand-in for the Graph API on loopback, and webhook payloads shaped like the Cloud API's
documented examples (developers.facebook.com, "Webhooks payload examples": text, image,
document, audio with ``voice``, location, statuses).

The stand-in records every message the bridge sends (recipient and text) and serves media: ``GET
/<version>/<media id>`` answers the media's URL, type, size and SHA-256 (as the "Retrieve media
URL" reference does), and that URL serves the bytes in pieces, both only with the access token.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

APP_SECRET = "test-app-secret"
VERIFY_TOKEN = "test-verify-token"
ACCESS_TOKEN = "test-access-token"
PHONE_NUMBER_ID = "106540352242922"
WEB_ADDRESS = "http://whistleexampleonionaddressxxxxxxxxxxxxxxxxxxxxxxxx.onion/followup"
_ids = itertools.count(1)


@dataclass
class Media:
    data: bytes | None
    mime_type: str
    size: int = 0
    # Served instead of ``data`` when set: (piece, count) yields ``piece`` ``count`` times.
    pattern: tuple[bytes, int] | None = None

    def pieces(self) -> Iterator[bytes]:
        if self.pattern is not None:
            piece, count = self.pattern
            for _ in range(count):
                yield piece
            return
        assert self.data is not None
        for start in range(0, len(self.data), 50_000):
            yield self.data[start:start + 50_000]


@dataclass
class GraphStandIn:
    """The Graph API as the bridge uses it; ``url`` is what WHISTLE_WHATSAPP_GRAPH_URL names."""

    server: ThreadingHTTPServer
    media: dict[str, Media] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    unauthorised: int = 0
    fail_sends: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v21.0"

    def add_media(self, data: bytes, mime_type: str) -> str:
        media_id = f"{next(_ids):015d}"
        self.media[media_id] = Media(data, mime_type, len(data))
        return media_id

    def add_pattern(self, piece: bytes, count: int, mime_type: str) -> str:
        media_id = f"{next(_ids):015d}"
        self.media[media_id] = Media(None, mime_type, len(piece) * count, (piece, count))
        return media_id

    def texts_to(self, number: str) -> list[str]:
        with self.lock:
            return [m["text"]["body"] for m in self.sent if m.get("to") == number]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_standin() -> GraphStandIn:
    standin: GraphStandIn

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the Graph API
        disable_nagle_algorithm = True
        wbufsize = 1 << 16  # head and body in one write; flushed after each request

        def log_message(self, *args: object) -> None:
            return

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {ACCESS_TOKEN}":
                return True
            with standin.lock:
                standin.unauthorised += 1
            self._json(401, {"error": {"message": "bad token", "code": 190}})
            return False

        def _json(self, status: int, doc: object) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if not self._authorised():
                return
            doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            if self.path != f"/v21.0/{PHONE_NUMBER_ID}/messages":
                self._json(404, {"error": {"message": "unknown path", "code": 100}})
                return
            with standin.lock:
                if standin.fail_sends:
                    standin.fail_sends -= 1
                    failing = True
                else:
                    standin.sent.append(doc)
                    failing = False
            if failing:
                self._json(500, {"error": {"message": "temporarily unavailable", "code": 2}})
                return
            self._json(200, {"messaging_product": "whatsapp",
                             "contacts": [{"input": doc.get("to"), "wa_id": doc.get("to")}],
                             "messages": [{"id": f"wamid.out{next(_ids)}"}]})

        def do_GET(self) -> None:  # noqa: N802
            if not self._authorised():
                return
            parts = self.path.strip("/").split("/")
            if len(parts) == 2 and parts[0] == "v21.0" and parts[1] in standin.media:
                media = standin.media[parts[1]]
                digest = hashlib.sha256()
                for piece in media.pieces():
                    digest.update(piece)
                host = f"http://127.0.0.1:{standin.server.server_address[1]}"
                self._json(200, {"messaging_product": "whatsapp", "url": f"{host}/media/{parts[1]}",
                                 "mime_type": media.mime_type, "sha256": digest.hexdigest(),
                                 "file_size": media.size, "id": parts[1]})
                return
            if len(parts) == 2 and parts[0] == "media" and parts[1] in standin.media:
                media = standin.media[parts[1]]
                self.send_response(200)
                self.send_header("Content-Type", media.mime_type)
                self.send_header("Content-Length", str(media.size))
                self.end_headers()
                for piece in media.pieces():
                    self.wfile.write(piece)
                return
            self._json(404, {"error": {"message": "unknown media", "code": 100}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    standin = GraphStandIn(server=server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return standin


def whatsapp_environ(standin: GraphStandIn) -> dict[str, str]:
    return {
        "WHISTLE_INTERFACE": "whatsapp",
        "WHISTLE_WHATSAPP_APP_SECRET": APP_SECRET,
        "WHISTLE_WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "WHISTLE_WHATSAPP_ACCESS_TOKEN": ACCESS_TOKEN,
        "WHISTLE_WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "WHISTLE_WHATSAPP_GRAPH_URL": standin.url,
        "WHISTLE_WHATSAPP_WEB_ADDRESS": WEB_ADDRESS,
        "WHISTLE_WHATSAPP_SETTLE_MS": "0",
    }


# --- Webhook payloads ---------------------------------------------------------------------------


def wamid(number: str) -> str:
    """A message id as WhatsApp writes them: base64 that embeds the sender's number."""
    import base64
    import os

    return "wamid." + base64.b64encode(b"\x15\x18\x0b" + number.encode() + os.urandom(18)).decode()


def text(number: str, body: str, ts: int = 1_750_000_000, msg_id: str | None = None) -> dict[str, Any]:
    return {"from": number, "id": msg_id or wamid(number), "timestamp": str(ts), "type": "text",
            "text": {"body": body}}


def media(number: str, kind: str, media_id: str, mime: str, ts: int = 1_750_000_000,
          **extra: object) -> dict[str, Any]:
    content: dict[str, object] = {"mime_type": mime, "sha256": "ignored-by-the-bridge", "id": media_id}
    content.update(extra)
    return {"from": number, "id": wamid(number), "timestamp": str(ts), "type": kind, kind: content}


def location(number: str, lat: float, lon: float, name: str, ts: int = 1_750_000_000) -> dict[str, Any]:
    return {"from": number, "id": wamid(number), "timestamp": str(ts), "type": "location",
            "location": {"latitude": lat, "longitude": lon, "name": name, "address": ""}}


def webhook(*messages: dict[str, Any], name: str = "Source Name") -> bytes:
    """A ``messages`` webhook body holding ``messages`` (all from the first one's sender)."""
    number = messages[0]["from"] if messages else "0"
    doc = {"object": "whatsapp_business_account", "entry": [{
        "id": "102290129340398",
        "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": name}, "wa_id": number}],
            "messages": list(messages)}}]}]}
    return json.dumps(doc).encode()


def status_webhook(number: str) -> bytes:
    doc = {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "statuses": [{"id": wamid(number), "status": "delivered", "timestamp": "1750000001",
                          "recipient_id": number}]}}]}]}
    return json.dumps(doc).encode()


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
