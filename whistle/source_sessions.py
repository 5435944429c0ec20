# SPDX-License-Identifier: AGPL-3.0-or-later
"""Where a logged-in source's private key lives while they read replies, and nowhere else.

The source's X25519 key is re-derived from the passphrase at login. It is kept in this process's
memory, encrypted under a key derived from a random token; the token travels only in the source's
(signed, HttpOnly, SameSite=Strict) session cookie. The store alone cannot decrypt an entry and the
cookie alone holds no key. Entries die after 30 idle minutes or at logout, after which the cookie
is worthless. Nothing is written to disk.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

import nacl.exceptions
import nacl.secret

from .crypto import UnitSecretKey

IDLE_SECONDS = 30 * 60


@dataclass
class _Entry:
    sealed: bytes
    last_seen: float


class SourceSessionStore:
    """An in-memory map from ``sha256(token)`` to the encrypted (report id, source key)."""

    def __init__(self, idle_seconds: int = IDLE_SECONDS) -> None:
        self._idle = idle_seconds
        self._entries: dict[bytes, _Entry] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _box(token: str) -> tuple[bytes, nacl.secret.SecretBox]:
        raw = token.encode("ascii")
        lookup = hashlib.sha256(b"whistle-source-session-id:" + raw).digest()
        key = hashlib.blake2b(raw, key=b"whistle-source-session-key", digest_size=32).digest()
        return lookup, nacl.secret.SecretBox(key)

    def open(self, report_id: str, secret_key: UnitSecretKey) -> str:
        """Start a session; return the token to put in the source's cookie."""
        token = secrets.token_urlsafe(32)
        lookup, box = self._box(token)
        sealed = box.encrypt(report_id.encode("ascii") + b"\0" + secret_key.encode())
        with self._lock:
            self._purge()
            self._entries[lookup] = _Entry(sealed=bytes(sealed), last_seen=time.monotonic())
        return token

    def get(self, token: str) -> tuple[str, UnitSecretKey] | None:
        """The session's report id and key, refreshing its idle timer; None if gone or forged."""
        try:
            lookup, box = self._box(token)
        except UnicodeEncodeError:
            return None
        with self._lock:
            self._purge()
            entry = self._entries.get(lookup)
            if entry is None:
                return None
            entry.last_seen = time.monotonic()
            sealed = entry.sealed
        try:
            plain = box.decrypt(sealed)
        except nacl.exceptions.CryptoError:
            return None
        report_id, _, raw_key = plain.partition(b"\0")
        return report_id.decode("ascii"), UnitSecretKey.from_raw(raw_key)

    def close(self, token: str) -> None:
        """End a session (logout)."""
        lookup, _ = self._box(token)
        with self._lock:
            self._entries.pop(lookup, None)

    def _purge(self) -> None:
        cutoff = time.monotonic() - self._idle
        for key in [k for k, e in self._entries.items() if e.last_seen < cutoff]:
            del self._entries[key]

    def __len__(self) -> int:
        with self._lock:
            self._purge()
            return len(self._entries)
