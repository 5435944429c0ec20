# SPDX-License-Identifier: AGPL-3.0-or-later
"""Forms sent once and receipts shown once (post/redirect/get on the source's pages).

A source's form carries a random one-time token. Posting it *claims* the token here before
anything is filed: a second post of the same form (a double click, a reload that re-posts) finds
it taken and files nothing. For a report, the entry then holds the receipt passphrase, encrypted
under a key derived from the token, until the receipt page has shown it; the token itself travels
only in the form and in the source's session cookie, so the store alone cannot open an entry and
the cookie alone holds no passphrase. Entries live in this process's memory or in Redis (several
workers), never on disk, and die after :data:`RECEIPT_SECONDS` whatever happens.

Redis expiries are rounded up to a bucket of wall-clock time (source_sessions.expires_at): an
exact expiry would date the filing of a report to the second.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from abc import ABC, abstractmethod

import nacl.exceptions
import nacl.secret

from whistle.server.config import redis_url
from whistle.server.source_sessions import expires_at

# Long enough to show the receipt, switch its language and reload; short enough that a shared
# computer's next user finds nothing (and the page itself is only shown again with a ticket).
RECEIPT_SECONDS = 15 * 60
# Random tokens of secrets.token_urlsafe(32): 43 characters of the URL-safe alphabet.
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def well_formed(token: object) -> bool:
    """Whether ``token`` looks like one this server issues (checked before any lookup)."""
    return isinstance(token, str) and 32 <= len(token) <= 64 and set(token) <= TOKEN_CHARS


class OnceStore(ABC):
    """Maps a hash of a one-time token to a small record (a dict) encrypted under the token.
    Subclasses only say where the encrypted entries live."""

    def __init__(self, ttl_seconds: int = RECEIPT_SECONDS) -> None:
        self._ttl = ttl_seconds

    @staticmethod
    def _box(token: str) -> tuple[bytes, nacl.secret.SecretBox]:
        raw = token.encode("ascii")
        lookup = hashlib.sha256(b"whistle-once-id:" + raw).digest()
        key = hashlib.blake2b(raw, key=b"whistle-once-key", digest_size=32).digest()
        return lookup, nacl.secret.SecretBox(key)

    def _seal(self, token: str, record: dict[str, str]) -> tuple[bytes, bytes]:
        lookup, box = self._box(token)
        return lookup, bytes(box.encrypt(json.dumps(record).encode()))

    def claim(self, token: str, record: dict[str, str]) -> bool:
        """Take ``token`` for one post, holding ``record``; False when it was already taken."""
        lookup, sealed = self._seal(token, record)
        return self._add(lookup, sealed)

    def put(self, token: str, record: dict[str, str]) -> None:
        """Replace the record of a claimed token (the lifetime is not extended)."""
        lookup, sealed = self._seal(token, record)
        self._set(lookup, sealed)

    def get(self, token: str) -> dict[str, str] | None:
        """The token's record; None when it was never claimed, has expired or was dropped."""
        if not well_formed(token):
            return None
        lookup, box = self._box(token)
        sealed = self._get(lookup)
        if sealed is None:
            return None
        try:
            record = json.loads(box.decrypt(sealed))
        except (nacl.exceptions.CryptoError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def drop(self, token: str) -> None:
        """Forget a token: after a failed filing (so the same form can be sent again)."""
        if well_formed(token):
            self._drop(self._box(token)[0])

    @abstractmethod
    def _add(self, lookup: bytes, sealed: bytes) -> bool:
        """Store an entry unless one exists (atomically); whether it was stored."""

    @abstractmethod
    def _set(self, lookup: bytes, sealed: bytes) -> None:
        """Overwrite an existing entry, keeping its expiry; do nothing if it has gone."""

    @abstractmethod
    def _get(self, lookup: bytes) -> bytes | None:
        """The entry, or None."""

    @abstractmethod
    def _drop(self, lookup: bytes) -> None:
        """Remove an entry if present."""


class MemoryOnceStore(OnceStore):
    """Entries in this process's memory: one worker."""

    def __init__(self, ttl_seconds: int = RECEIPT_SECONDS) -> None:
        super().__init__(ttl_seconds)
        self._entries: dict[bytes, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def _purge(self) -> None:
        now = time.monotonic()
        for key in [k for k, (_, until) in self._entries.items() if until < now]:
            del self._entries[key]

    def _add(self, lookup: bytes, sealed: bytes) -> bool:
        with self._lock:
            self._purge()
            if lookup in self._entries:
                return False
            self._entries[lookup] = (sealed, time.monotonic() + self._ttl)
            return True

    def _set(self, lookup: bytes, sealed: bytes) -> None:
        with self._lock:
            self._purge()
            if lookup in self._entries:
                self._entries[lookup] = (sealed, self._entries[lookup][1])

    def _get(self, lookup: bytes) -> bytes | None:
        with self._lock:
            self._purge()
            entry = self._entries.get(lookup)
            return entry[0] if entry else None

    def _drop(self, lookup: bytes) -> None:
        with self._lock:
            self._entries.pop(lookup, None)


class RedisOnceStore(OnceStore):
    """The same encrypted entries in Redis, shared by every worker."""

    def __init__(self, url: str, prefix: str, ttl_seconds: int = RECEIPT_SECONDS) -> None:
        import redis

        super().__init__(ttl_seconds)
        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix + "once:"

    def _add(self, lookup: bytes, sealed: bytes) -> bool:
        # SET NX: of two posts of the same form racing on two workers, exactly one wins.
        return bool(self._redis.set(self._prefix + lookup.hex(), sealed, nx=True,
                                    exat=expires_at(time.time(), self._ttl)))

    def _set(self, lookup: bytes, sealed: bytes) -> None:
        self._redis.set(self._prefix + lookup.hex(), sealed, xx=True, keepttl=True)

    def _get(self, lookup: bytes) -> bytes | None:
        sealed = self._redis.get(self._prefix + lookup.hex())
        return sealed if isinstance(sealed, bytes) else None

    def _drop(self, lookup: bytes) -> None:
        self._redis.delete(self._prefix + lookup.hex())


def make_once_store(storage_url: str, prefix: str) -> OnceStore:
    """Redis when the rate-limit storage is Redis (several workers), else this process's memory."""
    url = redis_url(storage_url)
    if url is not None:
        return RedisOnceStore(url, prefix)
    return MemoryOnceStore()
