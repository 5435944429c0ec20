# SPDX-License-Identifier: AGPL-3.0-or-later
"""Small expiring counters for the fairness limits (limits.py, pow.py): attempt rates, ceilings,
spent proof-of-work challenges and the failed-passphrase backoff.

Every entry expires at an absolute time that callers put on a minute (or hour) boundary
(:func:`boundary`), so neither a key nor its TTL dates a source's action to the second. Two
stores, as for source sessions: this process's memory (one worker) or Redis (several workers);
a Redis error propagates, so the caller refuses rather than runs unlimited (fail closed).
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod

from whistle.server.config import redis_url

MINUTE = 60


def now() -> float:
    """The wall clock (one place, so tests can move it)."""
    return time.time()


def boundary(at: float, step: int = MINUTE) -> int:
    """The first multiple of ``step`` seconds at or after ``at``: expiries land there."""
    return int(math.ceil(at / step) * step)


class CounterStore(ABC):
    """Integer entries that vanish at an absolute time (whole seconds since the epoch)."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix + "fair:"

    @abstractmethod
    def incr(self, key: str, expires_at: int) -> int:
        """Add one and return the new value; the entry now expires at ``expires_at``."""

    @abstractmethod
    def get(self, key: str) -> int:
        """The value, 0 if absent or expired."""

    @abstractmethod
    def put(self, key: str, value: int, expires_at: int) -> None:
        """Set the value and its expiry."""

    @abstractmethod
    def add(self, key: str, expires_at: int) -> bool:
        """Create the entry if absent; True if this call created it (atomic: single use)."""


class MemoryCounterStore(CounterStore):
    """Entries in this process's memory: one worker."""

    _PURGE_EVERY = 512

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self._entries: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._ops = 0

    def _live(self, key: str, at: float) -> int | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= at:
            del self._entries[key]
            return None
        return entry[0]

    def _tick(self, at: float) -> None:
        # Drop expired entries now and then, so a flood of fresh sessions cannot grow memory.
        self._ops += 1
        if self._ops % self._PURGE_EVERY == 0:
            for key in [k for k, (_, exp) in self._entries.items() if exp <= at]:
                del self._entries[key]

    def incr(self, key: str, expires_at: int) -> int:
        at = now()
        with self._lock:
            self._tick(at)
            value = (self._live(self._prefix + key, at) or 0) + 1
            self._entries[self._prefix + key] = (value, expires_at)
            return value

    def get(self, key: str) -> int:
        with self._lock:
            return self._live(self._prefix + key, now()) or 0

    def put(self, key: str, value: int, expires_at: int) -> None:
        with self._lock:
            self._tick(now())
            self._entries[self._prefix + key] = (value, expires_at)

    def add(self, key: str, expires_at: int) -> bool:
        at = now()
        with self._lock:
            self._tick(at)
            if self._live(self._prefix + key, at) is not None:
                return False
            self._entries[self._prefix + key] = (1, expires_at)
            return True

    def __len__(self) -> int:
        at = now()
        with self._lock:
            return sum(1 for _, exp in self._entries.values() if exp > at)


class RedisCounterStore(CounterStore):
    """The same entries in Redis, shared by every worker; EXPIREAT puts each on its boundary."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        super().__init__(prefix)
        self._redis = redis.Redis.from_url(url)

    def incr(self, key: str, expires_at: int) -> int:
        pipe = self._redis.pipeline(transaction=True)
        pipe.incr(self._prefix + key)
        pipe.expireat(self._prefix + key, expires_at)
        value, _ = pipe.execute()
        return int(value)

    def get(self, key: str) -> int:
        raw = self._redis.get(self._prefix + key)
        return int(raw) if isinstance(raw, (bytes, str)) else 0

    def put(self, key: str, value: int, expires_at: int) -> None:
        self._redis.set(self._prefix + key, value, exat=expires_at)

    def add(self, key: str, expires_at: int) -> bool:
        return bool(self._redis.set(self._prefix + key, 1, nx=True, exat=expires_at))


def make_counters(storage_url: str, prefix: str) -> CounterStore:
    """Redis when the rate-limit storage is Redis (several workers), else this process's memory."""
    url = redis_url(storage_url)
    if url is not None:
        return RedisCounterStore(url, prefix)
    return MemoryCounterStore(prefix)
