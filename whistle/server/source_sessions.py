# SPDX-License-Identifier: AGPL-3.0-or-later
"""Where a logged-in source's session lives: the report id, and on the server-derived path the
source's private key and case tag while they read replies, and nowhere else.

Two kinds of session. A **browser** session (the page derived the keys, ``POST /api/v1/login``)
holds only the report id: the server never had the source's keys. A **server** session (``POST
/followup``: the server derived them from the passphrase) holds the X25519 secret key, to open
replies, and the case tag, to bind the messages it seals and check the replies it opens. Either is
kept encrypted under a key derived from a random token; the token travels only in the source's
(signed, HttpOnly, SameSite=Strict) session cookie. The store alone cannot decrypt an entry and
the cookie alone holds no key. Entries die after 30 idle minutes or at logout, after which the
cookie is worthless.

Two stores: this process's memory (one worker), or Redis when several workers or hosts serve the
site (a source's next request may land on another worker). Redis keeps only the encrypted
entries, with an expiry, so even a Redis dump on disk reveals no key without the cookie. That
expiry is a whole multiple of :data:`EXPIRY_BUCKET_SECONDS` (so entries live 30 to 35 idle
minutes there): Redis keeps it as an absolute time, and "30 minutes after the last request" to
the millisecond would date the source's last request as precisely.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

import nacl.exceptions
import nacl.secret

from whistle.core.crypto import UnitSecretKey
from whistle.server.config import redis_url

IDLE_SECONDS = 30 * 60
# Redis expiries are rounded up to a whole bucket of wall-clock time: a key then says only in
# which five minutes its source last did something, and every key touched in the same five
# minutes shares one expiry. No jitter on top: within a bucket it would add nothing, and a
# random offset finer than the bucket would just be noise around the same information.
EXPIRY_BUCKET_SECONDS = 5 * 60


def expires_at(now: float, idle_seconds: int, bucket: int = EXPIRY_BUCKET_SECONDS) -> int:
    """The absolute expiry (Unix seconds) for an entry touched at ``now``: at least
    ``idle_seconds`` later, rounded up to a whole multiple of ``bucket``."""
    earliest = math.ceil(now) + idle_seconds
    return -(-earliest // bucket) * bucket


# A server session's plaintext after the report id and its NUL: secret key, then case tag.
_KEY_BYTES, _TAG_BYTES = 32, 16


class SourceSession(NamedTuple):
    """A logged-in source: the report id, and for a server-derived session the source's secret key
    and case tag (both None in a browser session, where the keys never left the page)."""

    report_id: str
    secret_key: UnitSecretKey | None = None
    case_tag: bytes | None = None

    @property
    def browser(self) -> bool:
        """Whether the keys stayed in the browser (no secret key on the server)."""
        return self.secret_key is None


@dataclass
class _Entry:
    sealed: bytes
    last_seen: float


class SourceSessionStore(ABC):
    """Maps ``sha256(token)`` to the encrypted (report id[, source key, case tag]). Subclasses only
    say where the encrypted entries live; sealing, lookup and expiry rules are here, once."""

    def __init__(self, idle_seconds: int = IDLE_SECONDS) -> None:
        self._idle = idle_seconds

    @staticmethod
    def _box(token: str) -> tuple[bytes, nacl.secret.SecretBox]:
        raw = token.encode("ascii")
        lookup = hashlib.sha256(b"whistle-source-session-id:" + raw).digest()
        key = hashlib.blake2b(raw, key=b"whistle-source-session-key", digest_size=32).digest()
        return lookup, nacl.secret.SecretBox(key)

    def open(self, report_id: str, secret_key: UnitSecretKey | None = None,
             case_tag: bytes | None = None) -> str:
        """Start a session; return the token to put in the source's cookie. A server session
        gives both ``secret_key`` and ``case_tag``; a browser session neither."""
        if (secret_key is None) != (case_tag is None):
            raise ValueError("a server session holds both the secret key and the case tag")
        if case_tag is not None and len(case_tag) != _TAG_BYTES:
            raise ValueError("a case tag is 16 bytes")
        keys = b"" if secret_key is None or case_tag is None else secret_key.encode() + case_tag
        token = secrets.token_urlsafe(32)
        lookup, box = self._box(token)
        sealed = box.encrypt(report_id.encode("ascii") + b"\0" + keys)
        self._put(lookup, bytes(sealed))
        return token

    def get(self, token: str) -> SourceSession | None:
        """The session, refreshing its idle timer; None if gone, forged, or of a form this version
        does not write (a session from before case tags: the source logs in again)."""
        try:
            lookup, box = self._box(token)
        except UnicodeEncodeError:
            return None
        sealed = self._touch(lookup)
        if sealed is None:
            return None
        try:
            plain = box.decrypt(sealed)
        except nacl.exceptions.CryptoError:
            return None
        report_id, _, keys = plain.partition(b"\0")
        if not keys:
            return SourceSession(report_id.decode("ascii"))
        if len(keys) != _KEY_BYTES + _TAG_BYTES:
            return None
        return SourceSession(report_id.decode("ascii"), UnitSecretKey.from_raw(keys[:_KEY_BYTES]),
                             keys[_KEY_BYTES:])

    def close(self, token: str) -> None:
        """End a session (logout)."""
        try:
            lookup, _ = self._box(token)
        except UnicodeEncodeError:
            return
        self._drop(lookup)

    @abstractmethod
    def _put(self, lookup: bytes, sealed: bytes) -> None:
        """Store an entry with a fresh idle timer."""

    @abstractmethod
    def _touch(self, lookup: bytes) -> bytes | None:
        """The entry, its idle timer restarted; None if absent or expired."""

    @abstractmethod
    def _drop(self, lookup: bytes) -> None:
        """Remove an entry if present."""

    @abstractmethod
    def __len__(self) -> int:
        """How many live sessions there are."""


class MemorySourceSessionStore(SourceSessionStore):
    """Entries in this process's memory: one worker."""

    def __init__(self, idle_seconds: int = IDLE_SECONDS) -> None:
        super().__init__(idle_seconds)
        self._entries: dict[bytes, _Entry] = {}
        self._lock = threading.Lock()

    def _put(self, lookup: bytes, sealed: bytes) -> None:
        with self._lock:
            self._purge()
            self._entries[lookup] = _Entry(sealed=sealed, last_seen=time.monotonic())

    def _touch(self, lookup: bytes) -> bytes | None:
        with self._lock:
            self._purge()
            entry = self._entries.get(lookup)
            if entry is None:
                return None
            entry.last_seen = time.monotonic()
            return entry.sealed

    def _drop(self, lookup: bytes) -> None:
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


class RedisSourceSessionStore(SourceSessionStore):
    """The same encrypted entries in Redis, shared by every worker, expiring after idle time."""

    def __init__(self, url: str, prefix: str, idle_seconds: int = IDLE_SECONDS) -> None:
        import redis

        super().__init__(idle_seconds)
        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix + "source-session:"

    def _put(self, lookup: bytes, sealed: bytes) -> None:
        # EXAT, an absolute time on the bucket grid, never EX (now + idle, to the millisecond).
        self._redis.set(self._prefix + lookup.hex(), sealed,
                        exat=expires_at(time.time(), self._idle))

    def _touch(self, lookup: bytes) -> bytes | None:
        # GETEX refreshes the idle timer in the same round trip.
        sealed = self._redis.getex(self._prefix + lookup.hex(),
                                   exat=expires_at(time.time(), self._idle))
        return sealed if isinstance(sealed, bytes) else None

    def _drop(self, lookup: bytes) -> None:
        self._redis.delete(self._prefix + lookup.hex())

    def __len__(self) -> int:
        return sum(1 for _ in self._redis.scan_iter(match=self._prefix + "*"))


def make_store(storage_url: str, prefix: str) -> SourceSessionStore:
    """Redis when the rate-limit storage is Redis (several workers), else this process's memory."""
    url = redis_url(storage_url)
    if url is not None:
        return RedisSourceSessionStore(url, prefix)
    return MemorySourceSessionStore()


# The cookie-session key under which a logged-in source's opaque token is kept (never the key).
SESSION_TOKEN = "source_token"  # noqa: S105 - a session key name, not a secret


def current_source() -> SourceSession | None:
    """The logged-in source of this request (report id first, then the keys of a server session),
    or None (expired, logged out, forged). For the views and for checks that run before them
    (quotas.py)."""
    from flask import current_app, session

    token = session.get(SESSION_TOKEN)
    if not isinstance(token, str):
        return None
    # The app's store (state.State.source_sessions), reached without importing state.py, which
    # imports this module.
    store: SourceSessionStore = current_app.extensions["whistle"].source_sessions
    return store.get(token)
