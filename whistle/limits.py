# SPDX-License-Identifier: AGPL-3.0-or-later
"""Rate limits (flask-limiter). Behind Tor every request comes from 127.0.0.1, so no limit is
ever keyed on the client address: limits are global, per session, or per account name.

Storage is ``WHISTLE_RATELIMIT_STORAGE``: ``memory://`` keeps counters per process (fine for one
worker); with several workers or hosts use Redis so they share one set of counters.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TypeVar, cast

from flask import Flask, Response, session
from flask_limiter import Limiter

from .config import Limits
from .state import get_state

F = TypeVar("F", bound=Callable[..., object])
_SESSION_KEY = "rl"
BACKOFF_CAP_SECONDS = 300
FREE_FAILURES = 3


def instance_key(name: str) -> str:
    """A limiter key for this instance. flask-limiter keeps the key prefix of the first app it was
    bound to, so the instance's own prefix goes into every key instead: two instances sharing one
    Redis (or two apps in one test process) never share counters."""
    return get_state().secrets.key_prefix + name


def _global_key() -> str:
    # One bucket for everyone: a ceiling on an expensive endpoint, whoever calls it.
    return instance_key("global")


def session_key() -> str:
    """A random id kept in the (signed) session cookie: per-visitor limits without addresses.

    A client that drops its cookies gets a new bucket, which is why every per-session limit has a
    global ceiling beside it."""
    rid = session.get(_SESSION_KEY)
    if not isinstance(rid, str):
        rid = secrets.token_urlsafe(12)
        session[_SESSION_KEY] = rid
    return instance_key("s:" + rid)


# Rate-limit headers off: they would tell a flooder exactly how much room is left. The 429 page
# carries a Retry-After computed from the limit that was hit (retry_after below).
limiter = Limiter(key_func=_global_key, default_limits=[], headers_enabled=False)


def retry_after() -> int:
    """Seconds until the limit that refused this request lets the next one through."""
    current = limiter.current_limit
    if current is None:
        return 60
    return max(1, int(current.reset_at - time.time()) + 1)


def _failed(response: Response) -> bool:
    return response.status_code == 400


def _limits() -> Limits:
    # Read at request time, so each app (and each test) uses its own configuration.
    return get_state().config.limits


def _apply(view: F, *decorators: Callable[[Callable[..., object]], Callable[..., object]]) -> F:
    wrapped: Callable[..., object] = view
    for decorate in decorators:
        wrapped = decorate(wrapped)
    return cast(F, wrapped)


def submission_limits(view: F) -> F:
    """Global and per-session ceilings shared by the form and the API (one bucket for both)."""
    return _apply(
        view,
        limiter.shared_limit(lambda: _limits().submit_global, scope="submit-global",
                             key_func=_global_key, methods=["POST"]),
        limiter.shared_limit(lambda: _limits().submit_session, scope="submit-session",
                             key_func=session_key, methods=["POST"]),
    )


def login_limits(view: F) -> F:
    """Passphrase logins: global and per-session ceilings, and a global cap on failures."""
    return _apply(
        view,
        limiter.limit(lambda: _limits().login_global, key_func=_global_key, methods=["POST"]),
        limiter.limit(lambda: _limits().login_session, key_func=session_key, methods=["POST"]),
        limiter.limit(lambda: _limits().login_failures_global,
                      key_func=lambda: instance_key("login-failures"), methods=["POST"],
                      deduct_when=_failed),
    )


def message_limits(view: F) -> F:
    """Follow-up messages from a logged-in source (form and API share the bucket)."""
    return _apply(view, limiter.shared_limit(lambda: _limits().message_session, scope="messages",
                                             key_func=session_key, methods=["POST"]))


def backoff_remaining() -> int:
    """Seconds this session must still wait after failed passphrases (0: may try now)."""
    until = session.get("pf_until", 0)
    if not isinstance(until, (int, float)):
        return 0
    return max(0, int(until) - int(time.time()))


def backoff_failed() -> int:
    """Record a failed passphrase. Typos happen: the first three are free; then the wait doubles
    with each failure (1, 2, 4 … 300 s)."""
    failures = int(session.get("pf_n", 0)) + 1
    wait = 0 if failures <= FREE_FAILURES else min(1 << min(failures - FREE_FAILURES - 1, 16),
                                                   BACKOFF_CAP_SECONDS)
    session["pf_n"] = failures
    # Whole seconds in a signed cookie the source holds; nothing is stored on the server.
    session["pf_until"] = int(time.time()) + wait
    return wait


def init_app(app: Flask) -> None:
    config = app.extensions["whistle"].config
    app.config["RATELIMIT_STORAGE_URI"] = config.ratelimit_storage
    app.config.setdefault("RATELIMIT_ENABLED", True)
    # Fail closed: if the shared storage (Redis) is down, refuse rather than run unlimited.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", False)
    limiter.init_app(app)
