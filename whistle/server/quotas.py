# SPDX-License-Identifier: AGPL-3.0-or-later
"""Upload quotas, checked against the declared length *before* a body is read or spooled.

Three kinds of counter, all in the rate limiter's storage (``WHISTLE_RATELIMIT_STORAGE``:
``memory://`` for one worker, Redis so that every worker shares them):

- per case, for a logged-in source's messages: messages and bytes per day, keyed server-side on
  the report id (a replayed cookie gets no fresh bucket);
- per session, for anonymous submissions: bytes per hour (a client that drops its cookie gets a
  new bucket, hence the next one);
- global: bytes per hour across everything sources upload, which is what protects the disk.

A request is charged its declared Content-Length against its case's or session's quota when it is
admitted. The global quota is only checked against the declared length then, and charged as the
bytes really arrive, so a client that declares a large body and trickles it holds no more of
everyone's quota than it has actually sent. If the request then stores nothing (any 4xx/5xx
answer: bad CSRF token, a limit, a full disk, a dropped connection) every charge is given back:
the global quota then bounds what is on disk or in flight, and cannot be used up by bodies that
were never stored. A post that cannot pass the CSRF check (no CSRF session; for the API, a missing
or wrong header token) is refused before its body is read.

Counters live in fixed windows aligned to the UTC hour or day; a key names its window and expires
when the window ends, so neither key nor TTL dates an upload more precisely than its window, and
nothing per source outlives it. Case ids are hashed with an instance secret before use in a key.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from flask import (
    Flask,
    Response,
    flash,
    g,
    jsonify,
    make_response,
    redirect,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import ngettext
from limits.storage import Storage, storage_from_string
from werkzeug.exceptions import RequestEntityTooLarge, TooManyRequests
from werkzeug.wrappers import Response as BaseResponse

from whistle.server import upload_policy
from whistle.server.answers import error_response
from whistle.server.state import get_state
from whistle.server.storage import DiskFullError, translate_disk_full
from whistle.server.upload_policy import QuotaKind

MB = 1024 * 1024
HOUR = 3600
DAY = 86400
# The global quota is charged as bytes arrive, in steps this large (one counter update each).
GLOBAL_STEP = MB
# How long a client is asked to wait after a full disk: long enough for an operator to act.
DISK_FULL_RETRY_AFTER = 900
_EXTENSION = "whistle_quotas"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Charge:
    """One counter a request was charged: key, amount, ceiling and window length (seconds)."""

    key: str
    cost: int
    limit: int
    window: int


class ByteBudget:
    """What an admitted request may still write to its spool files: the stream factory
    (uploads.py) stops the upload as soon as more arrives than was declared, and charges the
    global hourly quota as the bytes really arrive (``on_bytes``, every :data:`GLOBAL_STEP`)."""

    def __init__(self, allowed: int, on_bytes: Callable[[int], None] | None = None) -> None:
        self.allowed = allowed
        self.used = 0
        self._unreported = 0
        self._on_bytes = on_bytes

    def spend(self, amount: int) -> None:
        """Count ``amount`` more bytes; raise 413 past the allowance, 429 past the global quota."""
        self.used += amount
        if self.used > self.allowed:
            raise RequestEntityTooLarge()
        self._unreported += amount
        if self._on_bytes is not None and self._unreported >= GLOBAL_STEP:
            pending, self._unreported = self._unreported, 0
            self._on_bytes(pending)


def window_left(window: int, now: float | None = None) -> int:
    """Whole seconds until the current fixed window (aligned to the UTC hour or day) ends."""
    now = time.time() if now is None else now
    return max(1, math.ceil(window - now % window))


class QuotaCounters:
    """Fixed-window counters over a ``limits`` storage (the limiter's kind and URL)."""

    def __init__(self, storage: Storage, prefix: str, secret: bytes) -> None:
        self.storage = storage
        self._prefix = prefix + "quota:"
        self._secret = hashlib.blake2b(secret, person=b"whistle-quota", digest_size=32).digest()

    def key(self, kind: str, ident: str, window: int, now: float | None = None) -> str:
        """The counter for ``ident`` (hashed: a case id never appears in a key) in this window."""
        now = time.time() if now is None else now
        digest = hashlib.blake2b(ident.encode(), key=self._secret, digest_size=12).hexdigest()
        return f"{self._prefix}{kind}:{digest}:{int(now // window)}"

    def charge(self, charges: list[Charge]) -> Charge | None:
        """Add every charge, or none: on the first counter that would pass its ceiling, undo what
        was added and return that charge. Raises if the storage is unreachable (fail closed)."""
        done: list[Charge] = []
        for item in charges:
            total = self.storage.incr(item.key, window_left(item.window), item.cost)
            done.append(item)
            if total > item.limit:
                self.refund(done)
                return item
        return None

    def refund(self, charges: list[Charge]) -> None:
        """Give charges back (a negative increment: Redis INCRBY and memory both take one)."""
        for item in charges:
            self.storage.incr(item.key, window_left(item.window), -item.cost)

    def used(self, key: str) -> int:
        """The counter's current value (tests and diagnostics)."""
        return self.storage.get(key)


def counters(app: Flask | None = None) -> QuotaCounters:
    """This application's quota counters."""
    from flask import current_app

    return (app or current_app).extensions[_EXTENSION]  # type: ignore[no-any-return]


def request_budget() -> ByteBudget | None:
    """The byte allowance of the current request, if a quota admitted it."""
    budget = g.get("whistle_quota_budget")
    return budget if isinstance(budget, ByteBudget) else None


def _wait_words(seconds: int) -> str:
    if seconds > 2 * HOUR:
        hours = math.ceil(seconds / HOUR)
        return str(ngettext("Nothing was stored. Please try again in %(num)d hour.",
                            "Nothing was stored. Please try again in %(num)d hours.", hours))
    minutes = math.ceil(seconds / 60)
    return str(ngettext("Nothing was stored. Please try again in %(num)d minute.",
                        "Nothing was stored. Please try again in %(num)d minutes.", minutes))


def _charges(kind: QuotaKind, declared: int) -> list[Charge] | BaseResponse:
    """The counters this request must fit in, most specific first; or a refusal (not logged in)."""
    state = get_state()
    quotas, store = state.config.quotas, counters()
    charges: list[Charge] = []
    if kind == "message":
        from whistle.server.source_sessions import SESSION_TOKEN as TOKEN
        from whistle.server.source_sessions import current_source

        current = current_source()
        if current is None:
            # Refused here, before Flask-WTF would read the body: the view would refuse anyway.
            message = _("Your session has ended. Please enter your passphrase again.")
            if request.path.startswith("/api/"):
                return make_response(jsonify(error="session", message=message), 401)
            from flask import session

            session.pop(TOKEN, None)
            flash(message, "warning")
            return redirect(url_for("source.followup"))
        case = "case:" + current[0]
        charges += [Charge(store.key("cm", case, DAY), 1, quotas.case_messages_per_day, DAY),
                    Charge(store.key("cb", case, DAY), declared, quotas.case_mb_per_day * MB, DAY)]
    else:
        from whistle.server.limits import session_key

        charges.append(Charge(store.key("sb", session_key(), HOUR), declared,
                              quotas.session_mb_per_hour * MB, HOUR))
    return [c for c in charges if c.cost > 0]


def _global_charge() -> Charge:
    """The global hourly counter. Unlike the others it is not charged the declared length on
    admission: a client that declares a large body and then trickles it would hold that share
    of everyone's quota for as long as it keeps the connection open. It is checked against the
    declared length, then charged as the bytes really arrive (:class:`ByteBudget`), so holding
    a share of it costs the holder that many bytes actually sent."""
    limit = get_state().config.quotas.global_mb_per_hour * MB
    return Charge(counters().key("gb", "all", HOUR), 0, limit, HOUR)


def _charge_global(amount: int) -> None:
    """Charge ``amount`` bytes that have arrived; stop the upload (429) past the global quota."""
    glob = _global_charge()
    total = counters().storage.incr(glob.key, window_left(glob.window), amount)
    g.whistle_quota_global = g.get("whistle_quota_global", 0) + amount
    if total > glob.limit:
        raise TooManyRequests(retry_after=window_left(glob.window))


def _csrf_precheck() -> None:
    """Refuse, before the body is read, a post that cannot pass the CSRF check anyway: no CSRF
    session at all, or (the API, whose token travels in a header) a missing or wrong token.
    Flask-WTF's own check looks for the token in the form first, so it reads the whole body."""
    from flask import current_app, session
    from flask_wtf.csrf import CSRFError, validate_csrf
    from wtforms import ValidationError

    if current_app.config.get("WTF_CSRF_ENABLED") is False:
        return
    if "csrf_token" not in session:
        raise CSRFError("The CSRF session token is missing.")
    header = request.headers.get("X-CSRFToken") or request.headers.get("X-CSRF-Token")
    if header:
        try:
            validate_csrf(header)
        except ValidationError as exc:
            raise CSRFError(exc.args[0]) from None
    elif request.path.startswith("/api/"):
        raise CSRFError("The CSRF token is missing.")


def check_quota() -> BaseResponse | None:
    """``before_request``, ahead of CSRF and the limiter: admit an upload on its declared length
    or refuse it without touching ``request.stream`` (411, 413, 429 with Retry-After)."""
    # The quota is declared on the view with uploads.accepts(…, quota=…) (upload_policy.py):
    # "submit" for anonymous reports (form and API), "message" for a logged-in source's messages.
    declaration = upload_policy.declared()
    if request.method != "POST" or declaration is None or declaration.quota is None:
        return None
    if request.headers.get("Transfer-Encoding"):
        # A chunked body declares no size: it cannot be checked against a quota before it is read.
        return error_response(411, "length_required", _(
            "The upload did not say how large it is, which this server requires. "
            "Nothing was stored; please try again."))
    declared = request.content_length or 0
    largest = get_state().config.max_upload_mb * MB
    if declared > largest:
        return error_response(413, "too_large", _(
            "What you sent is larger than this server accepts at once (%(mb)d MB). "
            "Nothing was stored.", mb=largest // MB))
    _csrf_precheck()
    charges = _charges(declaration.quota, declared)
    if isinstance(charges, BaseResponse):
        return charges
    glob = _global_charge()
    refused = glob if counters().used(glob.key) + declared > glob.limit else counters().charge(charges)
    if refused is not None:
        wait = window_left(refused.window)
        return error_response(429, "quota_exceeded", _(
            "This server cannot accept more uploads right now.") + " " + _wait_words(wait),
                        retry_after=wait)
    g.whistle_quota_charges = charges
    g.whistle_quota_declared = declared
    g.whistle_quota_budget = ByteBudget(declared, _charge_global)
    return None


def _settle(response: Response) -> Response:
    # Anything but success stored nothing: give the charge back (see the module docstring). A
    # success keeps its charges, and the global quota is charged the rest of the declared length
    # (form fields and the last partial step, which the spool did not report).
    charges = g.pop("whistle_quota_charges", None)
    arrived = g.pop("whistle_quota_global", 0)
    declared = g.pop("whistle_quota_declared", 0)
    if charges is None:
        return response
    if response.status_code >= 400:
        _refund(charges, arrived)
    elif declared > arrived:
        try:
            glob = _global_charge()
            counters().storage.incr(glob.key, window_left(glob.window), declared - arrived)
        except Exception as exc:  # noqa: BLE001 - stored already; the count is advisory now
            _log.warning("quota charge failed: %s", type(exc).__name__)
    return response


def _refund_unsettled(exc: BaseException | None) -> None:
    # A request that never reached after_request (an error escaping every handler).
    charges = g.pop("whistle_quota_charges", None)
    if charges is not None:
        _refund(charges, g.pop("whistle_quota_global", 0))


def _refund(charges: list[Charge], arrived: int) -> None:
    try:
        counters().refund(charges)
        if arrived:
            glob = _global_charge()
            counters().storage.incr(glob.key, window_left(glob.window), -arrived)
    except Exception as exc:  # noqa: BLE001 - storage gone: the charge stands until its window ends
        _log.warning("quota refund failed: %s", type(exc).__name__)


def disk_full(exc: DiskFullError) -> Response:
    """507 for a full disk (blob, spool or database): the transaction was rolled back."""
    _log.error("disk full: nothing was stored")
    return error_response(507, "disk_full", _(
        "The server has no room left to store what you sent. Nothing was stored; "
        "please try again later."), retry_after=DISK_FULL_RETRY_AFTER)


def init_app(app: Flask) -> None:
    """Create the counters and put :func:`check_quota` first among the ``before_request``
    functions, so it runs before Flask-WTF's CSRF check (which parses, and so reads, the form)."""
    state = app.extensions["whistle"]
    uri = state.config.ratelimit_storage
    # Its own storage object, of the limiter's kind and URL: flask-limiter keeps a single storage
    # per Limiter, replaced by each init_app, and the quotas must stay with their app.
    storage = cast(Storage, storage_from_string(uri))
    app.extensions[_EXTENSION] = QuotaCounters(storage, state.secrets.key_prefix,
                                               state.secrets.flask_secret_key.encode())
    app.before_request_funcs.setdefault(None, []).insert(0, check_quota)
    app.after_request(_settle)
    app.teardown_request(_refund_unsettled)
    app.register_error_handler(DiskFullError, disk_full)
    translate_disk_full(state.engine)
