# SPDX-License-Identifier: AGPL-3.0-or-later
"""Talking to the Graph API through pywa's client: sending a text, and downloading a media item
straight into an attachment stream.

pywa (MIT, kept up with the Cloud API) does the requests, the access token and the errors; its
client always starts from ``https://graph.facebook.com``, so the bridge sets the base URL of the
``httpx.Client`` it hands to pywa to ``WHISTLE_WHATSAPP_GRAPH_URL`` afterwards (the tests point it
at a stand-in on loopback). pywa's and httpx's loggers are held at WARNING: at DEBUG they would
print recipients (phone numbers) and raw updates.

A download reads the media in 64 KiB pieces, each encrypted at once (secretstream, a fresh key)
into an anonymous spool file: the plaintext is never whole in memory and never on disk. The size
is checked against WhatsApp's cap for the kind before the download (from the media's metadata)
and again while it streams; the SHA-256 Meta gives is checked at the end.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pywa.client import WhatsApp

from whistle.core.crypto import CHUNK_SIZE, StreamEncryptor, new_stream_key
from whistle.core.errors import WhistleError
from whistle.server.storage import SpoolFile
from whistle.server.whatsapp.settings import WhatsAppSettings

DOWNLOAD_SECONDS = 300.0

for _name in ("pywa", "httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class MediaError(WhistleError):
    """A media item could not be downloaded; nothing of it was kept. ``too_large`` is set when it
    exceeded its cap (the cap in bytes)."""

    def __init__(self, message: str, too_large: int | None = None) -> None:
        super().__init__(message)
        self.too_large = too_large


@dataclass
class SealedMedia:
    """A downloaded media item: its ciphertext spool, stream key, plaintext size and type."""

    spool: SpoolFile
    key: bytes = field(repr=False)
    size: int
    mime_type: str


class Graph:
    """The bridge's Graph API client (one per process; httpx's client is thread-safe)."""

    def __init__(self, settings: WhatsAppSettings, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0), transport=transport)
        self._wa = WhatsApp(phone_id=settings.phone_number_id, token=settings.access_token,
                            session=self._http)
        self._http.base_url = httpx.URL(settings.graph_url + "/")

    def send_text(self, to: str, text: str) -> None:
        """Send ``text`` (cut to WhatsApp's 4,096 characters) to ``to``; raise on failure."""
        self._wa.send_message(to=to, text=text[:4096], preview_url=False)

    def download(self, media_id: str, cap: int, spool_dir: Path) -> SealedMedia:
        """Download ``media_id`` into a fresh encrypted spool; raise :class:`MediaError`."""
        try:
            info = self._wa.get_media_url(media_id)
        except Exception as exc:  # noqa: BLE001 - pywa raises its own and httpx's errors
            raise MediaError(f"media metadata unavailable ({type(exc).__name__})") from None
        if isinstance(info.file_size, int) and info.file_size > cap:
            raise MediaError("media larger than its cap", too_large=cap)
        key = new_stream_key()
        enc = StreamEncryptor(key)
        spool = SpoolFile(spool_dir)
        digest = hashlib.sha256()
        deadline = time.monotonic() + DOWNLOAD_SECONDS
        try:
            spool.write(enc.header)
            with self._wa.api.stream_media_bytes(media_url=info.url) as res:
                if res.status_code != 200:
                    raise MediaError(f"media download answered {res.status_code}")
                for piece in res.iter_bytes(chunk_size=CHUNK_SIZE):
                    if enc.plaintext_size + len(piece) > cap:
                        raise MediaError("media larger than its cap", too_large=cap)
                    if time.monotonic() > deadline:
                        raise MediaError("media download too slow")
                    digest.update(piece)
                    spool.write(enc.update(piece))
            spool.write(enc.finish())
            if not _digest_matches(str(info.sha256 or ""), digest.digest()):
                raise MediaError("media does not match its SHA-256")
        except MediaError:
            spool.close()
            raise
        except Exception as exc:  # noqa: BLE001 - network and protocol errors alike
            spool.close()
            raise MediaError(f"media download failed ({type(exc).__name__})") from None
        return SealedMedia(spool=spool, key=key, size=enc.plaintext_size,
                           mime_type=str(info.mime_type or ""))

    def close(self) -> None:
        self._http.close()


def _digest_matches(given: str, digest: bytes) -> bool:
    """Meta's ``sha256`` as hex or base64; a value of another form is not checked."""
    if len(given) == 64 and all(c in "0123456789abcdefABCDEF" for c in given):
        return given.lower() == digest.hex()
    if len(given) == 44 and given.endswith("="):
        return given == base64.b64encode(digest).decode("ascii")
    return True
