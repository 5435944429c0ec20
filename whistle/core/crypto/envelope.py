# SPDX-License-Identifier: AGPL-3.0-or-later
"""Envelopes: reports, follow-up messages and replies as padded JSON in sealed boxes
(docs/protocol.md section 2)."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field

import nacl.exceptions
from nacl import bindings as _sodium
from nacl.public import SealedBox

from whistle.core.crypto.errors import DecryptionError, EnvelopeFormatError, KeyFormatError
from whistle.core.crypto.keys import UnitPublicKey, UnitSecretKey, b64decode, b64encode, is_version

ENVELOPE_VERSION = 1
ENVELOPE_BLOCK = 1024
SEAL_OVERHEAD = _sodium.crypto_box_SEALBYTES  # 48
MAX_BODY_CHARS = 100_000
KINDS = ("report", "message", "reply")
STREAM_KEY_BYTES = _sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES  # 32


@dataclass(frozen=True)
class AttachmentRef:
    """What the envelope says about one attachment: its name, type, size and stream key."""

    name: str
    type: str
    size: int
    key: bytes = field(repr=False)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "size": self.size, "key": b64encode(self.key)}


@dataclass(frozen=True)
class Envelope:
    """A decrypted report, follow-up message or reply (docs/protocol.md section 2)."""

    kind: str
    body: str
    category: str = ""
    attachments: tuple[AttachmentRef, ...] = ()

    def to_bytes(self) -> bytes:
        """Compact JSON in protocol key order, padded with spaces to a multiple of 1024 bytes."""
        if self.kind not in KINDS:
            raise EnvelopeFormatError(f"unknown envelope kind {self.kind!r}")
        body = unicodedata.normalize("NFC", self.body)
        if len(body) > MAX_BODY_CHARS:
            raise EnvelopeFormatError(f"text longer than {MAX_BODY_CHARS} characters")
        doc: dict[str, object] = {"v": ENVELOPE_VERSION, "kind": self.kind}
        if self.kind == "reply":
            if self.attachments or self.category:
                raise EnvelopeFormatError("a reply carries neither category nor attachments")
            doc["body"] = body
        else:
            doc["category"] = self.category
            doc["body"] = body
            doc["attachments"] = [a.to_json() for a in self.attachments]
        doc["pad"] = ""
        raw = _dumps(doc)
        doc["pad"] = " " * (-len(raw) % ENVELOPE_BLOCK)
        return _dumps(doc)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        """Parse and validate a decrypted envelope; raise :class:`EnvelopeFormatError`."""
        if len(raw) == 0 or len(raw) % ENVELOPE_BLOCK:
            raise EnvelopeFormatError("envelope length is not a multiple of 1024 bytes")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # deep nesting: RecursionError
            raise EnvelopeFormatError("envelope is not UTF-8 JSON") from exc
        if not isinstance(doc, dict) or not is_version(doc.get("v"), ENVELOPE_VERSION):
            raise EnvelopeFormatError("not a version-1 envelope")
        kind = doc.get("kind")
        expected = ["v", "kind", "body", "pad"] if kind == "reply" else [
            "v", "kind", "category", "body", "attachments", "pad"]
        if kind not in KINDS or sorted(doc) != sorted(expected):
            raise EnvelopeFormatError(f"envelope fields do not match kind {kind!r}")
        body, pad = doc["body"], doc["pad"]
        if not isinstance(body, str) or not isinstance(pad, str) or pad.strip(" "):
            raise EnvelopeFormatError("body and pad must be strings; pad only spaces")
        if kind == "reply":
            return cls(kind=kind, body=body)
        category, atts = doc["category"], doc["attachments"]
        if not isinstance(category, str) or not isinstance(atts, list):
            raise EnvelopeFormatError("category must be a string and attachments a list")
        return cls(kind=kind, body=body, category=category,
                   attachments=tuple(_parse_attachment(a) for a in atts))


def _parse_attachment(item: object) -> AttachmentRef:
    if not isinstance(item, dict) or sorted(item) != ["key", "name", "size", "type"]:
        raise EnvelopeFormatError("attachment entry must have name, type, size, key")
    name, mime, size, key = item["name"], item["type"], item["size"], item["key"]
    if not isinstance(name, str) or not isinstance(mime, str):
        raise EnvelopeFormatError("attachment name and type must be strings")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise EnvelopeFormatError("attachment size must be a non-negative integer")
    if not isinstance(key, str):
        raise EnvelopeFormatError("attachment key must be base64 text")
    try:
        raw = b64decode(key, size=STREAM_KEY_BYTES)
    except KeyFormatError as exc:
        raise EnvelopeFormatError(f"attachment key: {exc}") from exc
    return AttachmentRef(name=name, type=mime, size=size, key=raw)


def _dumps(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def seal_envelope(envelope: Envelope, recipient: UnitPublicKey) -> bytes:
    """Serialise, pad and seal an envelope to ``recipient`` with ``crypto_box_seal``."""
    return SealedBox(recipient.nacl_key).encrypt(envelope.to_bytes())


def open_envelope(sealed: bytes, secret_key: UnitSecretKey) -> Envelope:
    """Open a sealed envelope; raise :class:`DecryptionError` or :class:`EnvelopeFormatError`."""
    try:
        raw = SealedBox(secret_key.nacl_key).decrypt(sealed)
    except (nacl.exceptions.CryptoError, TypeError, ValueError) as exc:
        raise DecryptionError("envelope does not open with this key (wrong key or altered)") from exc
    return Envelope.from_bytes(raw)


