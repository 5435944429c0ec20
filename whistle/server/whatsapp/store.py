# SPDX-License-Identifier: AGPL-3.0-or-later
"""Where an unfinished WhatsApp conversation waits: this process's memory or Redis, encrypted,
under a key that says nothing, for a short idle time.

Every conversation is addressed by three values derived from the sender's number with
HMAC-SHA256 under the **bridge secret** (:class:`BridgeSecret`), 32 random bytes drawn when the
bridge process starts and never written anywhere:

- ``lookup``: HMAC(secret, "whatsapp-conv" || number), the store's key;
- ``box``: a secretbox keyed with HMAC(secret, "whatsapp-state" || number), which encrypts the
  value (step, language, category, answers, the source's public key and case tag, the passphrase
  until it is sent, hashes of the message ids handled, and the sealed items);
- ``tag``: HMAC(secret, "whatsapp-limit" || number), what the per-number limits count under.

The instance secrets on disk are deliberately not the key: phone numbers are few (about 10^10
in a country plan), so an HMAC under a secret that a seized disk holds could be reversed by
trying them all. With a secret that lives only in the bridge's memory, a Redis dump together with
the whole disk reveals neither numbers nor passphrases; the cost is that a restart of the bridge
forgets the conversations in progress (they were at most an idle half hour old, and nothing of
them had been filed). Message ids are hashed the same way (``message``): WhatsApp's ``wamid``
values embed the sender's number.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.secret

from whistle.server.config import redis_url
from whistle.server.source_sessions import expires_at


class BridgeSecret:
    """32 random bytes for this bridge process (see the module docstring)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else os.urandom(32)

    def _mac(self, label: bytes, value: str) -> bytes:
        return hmac.new(self._secret, label + value.encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    def lookup(self, number: str) -> str:
        """Only the store key of ``number``'s conversation (what the webhook's queue needs)."""
        return self._mac(b"whatsapp-conv", number).hex()

    def keys(self, number: str) -> ConversationKeys:
        """The lookup key, the value's box and the limit tag of ``number``'s conversation."""
        return ConversationKeys(
            lookup=self.lookup(number),
            box=nacl.secret.SecretBox(self._mac(b"whatsapp-state", number)),
            tag=self._mac(b"whatsapp-limit", number)[:16].hex(),
        )

    def message(self, message_id: str) -> str:
        """A message id as the bridge remembers it (the raw id embeds the sender's number)."""
        return self._mac(b"whatsapp-msg", message_id)[:16].hex()


@dataclass(frozen=True)
class ConversationKeys:
    lookup: str
    box: nacl.secret.SecretBox = field(repr=False)
    tag: str


class ConversationStore(ABC):
    """Encrypted conversation values under their lookup keys, forgotten after ``idle_seconds``.

    Subclasses only say where the bytes live; sealing and opening are here, once."""

    def __init__(self, idle_seconds: int) -> None:
        self.idle_seconds = idle_seconds

    def load(self, keys: ConversationKeys) -> bytes | None:
        """The conversation's plaintext, or None when there is none (or it does not open)."""
        sealed = self._get(keys.lookup)
        if sealed is None:
            return None
        try:
            return bytes(keys.box.decrypt(sealed))
        except nacl.exceptions.CryptoError:
            return None

    def save(self, keys: ConversationKeys, plain: bytes) -> None:
        """Encrypt and store ``plain``; its idle time starts again."""
        self._put(keys.lookup, bytes(keys.box.encrypt(plain)),
                  expires_at(time.time(), self.idle_seconds))

    def drop(self, keys: ConversationKeys) -> None:
        self._delete(keys.lookup)

    @abstractmethod
    def _get(self, lookup: str) -> bytes | None: ...

    @abstractmethod
    def _put(self, lookup: str, sealed: bytes, expires: int) -> None: ...

    @abstractmethod
    def _delete(self, lookup: str) -> None: ...


class MemoryConversationStore(ConversationStore):
    """In this process's memory (the bridge runs one process: docs/whatsapp.md)."""

    SWEEP_SECONDS = 30

    def __init__(self, idle_seconds: int) -> None:
        super().__init__(idle_seconds)
        self._entries: dict[str, tuple[bytes, int]] = {}
        self._lock = threading.Lock()
        self._swept = 0.0

    def _get(self, lookup: str) -> bytes | None:
        now = time.time()
        with self._lock:
            # Expired entries go now and then (a scan per request would grow with the entries).
            if now - self._swept > self.SWEEP_SECONDS:
                self._swept = now
                for key in [k for k, (_, exp) in self._entries.items() if exp <= now]:
                    del self._entries[key]
            entry = self._entries.get(lookup)
            return entry[0] if entry is not None and entry[1] > now else None

    def _put(self, lookup: str, sealed: bytes, expires: int) -> None:
        with self._lock:
            self._entries[lookup] = (sealed, expires)

    def _delete(self, lookup: str) -> None:
        with self._lock:
            self._entries.pop(lookup, None)

    def __len__(self) -> int:
        now = time.time()
        return sum(1 for _, exp in self._entries.values() if exp > now)


class RedisConversationStore(ConversationStore):
    """In Redis, with an expiry rounded up to five minutes (a key does not date a message)."""

    def __init__(self, url: str, prefix: str, idle_seconds: int) -> None:
        import redis

        super().__init__(idle_seconds)
        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix + "wa:"

    def _get(self, lookup: str) -> bytes | None:
        value = self._redis.get(self._prefix + lookup)
        return value if isinstance(value, bytes) else None

    def _put(self, lookup: str, sealed: bytes, expires: int) -> None:
        self._redis.set(self._prefix + lookup, sealed, exat=expires)

    def _delete(self, lookup: str) -> None:
        self._redis.delete(self._prefix + lookup)

    def __len__(self) -> int:
        return sum(1 for _ in self._redis.scan_iter(match=self._prefix + "*", count=1000))


def make_conversation_store(storage_url: str, prefix: str, idle_seconds: int) -> ConversationStore:
    """Redis when the rate-limit storage is Redis, else this process's memory."""
    url = redis_url(storage_url)
    if url is not None:
        return RedisConversationStore(url, prefix, idle_seconds)
    return MemoryConversationStore(idle_seconds)
