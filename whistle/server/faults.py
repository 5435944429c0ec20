# SPDX-License-Identifier: AGPL-3.0-or-later
"""Which failures mean "a backend is unreachable or busy, try again later" (503), not a bug (500).

The database (PostgreSQL down or restarting, SQLite locked past its busy timeout) and Redis (rate
limits, source sessions) are the backends every request may need. When one of them fails, the
request's own transaction has already been rolled back — every write runs inside a
``with sessions.begin()`` / ``with sessions()`` block that rolls back on the way out — so the
answer can truthfully say that nothing was stored. Redis down still fails closed: the limiter
raises (``RATELIMIT_SWALLOW_ERRORS=False``), and the request is refused with a 503, never served
unlimited.

A full disk is deliberately *not* classified here: it has its own answer (507).
"""

from __future__ import annotations

import errno

import redis.exceptions
import sqlalchemy.exc
from limits.errors import StorageError

# What the 503 page's Retry-After says. PostgreSQL restarts and Redis outages measured in the
# fault-injection run recovered within a second; 30 s keeps retries from piling onto a backend
# that is coming back, without telling a source to give up.
RETRY_AFTER_SECONDS = 30

_DB_FAULTS = (
    sqlalchemy.exc.OperationalError,  # connection refused or lost, server restarting, db locked
    sqlalchemy.exc.InterfaceError,  # the driver's connection object is unusable
    sqlalchemy.exc.DisconnectionError,  # raised by pool pre-ping / checkout handlers
    sqlalchemy.exc.TimeoutError,  # the connection pool had no free connection in time
)
# redis-py's ConnectionError covers refused connections and BusyLoadingError (Redis restarting);
# TimeoutError a Redis that accepts but does not answer. flask-limiter re-raises these as they
# are; limits wraps them in StorageError only when asked to (wrap_exceptions), covered anyway.
_REDIS_FAULTS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, StorageError)
# SQLite's and PostgreSQL's words for a full disk: those belong to the 507 answer.
_DISK_FULL_WORDS = ("database or disk is full", "no space left on device", "could not extend file")
_DISK_FULL_SQLSTATE = "53100"
_SQLITE_FULL = 13


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, then whatever it wraps: Werkzeug's original_exception and explicit causes."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        original = getattr(current, "original_exception", None)
        current = original if isinstance(original, BaseException) else current.__cause__
    return seen


def _is_disk_full(exc: BaseException) -> bool:
    # Left to the 507 answer (whistle.server.storage turns these into DiskFullError on the engine; this
    # check keeps a full disk out of the 503 answer even where that translation did not run).
    for link in _chain(exc):
        if isinstance(link, OSError) and link.errno == errno.ENOSPC:
            return True
        if isinstance(link, sqlalchemy.exc.DBAPIError):
            if getattr(link.orig, "sqlstate", None) == _DISK_FULL_SQLSTATE:
                return True
            if getattr(link.orig, "sqlite_errorcode", None) == _SQLITE_FULL:
                return True
            # Only the driver's own message is read (never logged): it names the condition.
            words = str(link.orig).lower()
            if any(w in words for w in _DISK_FULL_WORDS):
                return True
    return False


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database or Redis cannot be reached right now (answer 503)."""
    if _is_disk_full(exc):
        return False
    for link in _chain(exc):
        if isinstance(link, _DB_FAULTS + _REDIS_FAULTS):
            return True
        if isinstance(link, sqlalchemy.exc.DBAPIError) and link.connection_invalidated:
            return True
    return False
