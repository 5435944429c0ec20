# SPDX-License-Identifier: AGPL-3.0-or-later
"""Fair limits behind Tor (docs/security.md, "Fair limits"). Every request comes from 127.0.0.1,
so nothing is keyed on the client address, and nothing locks everyone out:

- an expensive request (report, passphrase login, follow-up message) that carries a valid proof
  of work (pow.py) has paid for itself and passes every global ceiling;
- without one (JavaScript off) it counts against a per-minute machine ceiling, so the longest
  anyone waits is under a minute, told in words, with the form on the page;
- per-session ceilings and the failed-passphrase backoff are held server-side under a random
  session id, so replaying an old cookie gets no fresh bucket and no reset.

These checks run in a ``before_request`` placed ahead of Flask-WTF's CSRF check, which parses
(reads) the body: a refused request is refused before its body is read. flask-limiter remains
for the investigator login (investigator/auth.py).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from typing import TypeVar

from flask import (
    Flask,
    Response,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_limiter import Limiter
from limits import parse_many
from werkzeug.wrappers import Response as BaseResponse

from whistle.server import pow as proof
from whistle.server.config import Limits
from whistle.server.counters import CounterStore, boundary, make_counters, now
from whistle.server.state import get_state

F = TypeVar("F", bound=Callable[..., object])
_SESSION_KEY = "rl"
BACKOFF_CAP_SECONDS = 300
FREE_FAILURES = 3
# Failures are forgotten this long after the last one (plus the longest wait).
BACKOFF_FORGET_SECONDS = 15 * 60
# A form's ``pow`` field is read before the CSRF check only from a body this small (the login
# form); larger posts carry the proof of work in the X-Whistle-PoW header.
POW_FIELD_MAX_BODY = 64 * 1024
POW_HEADER = "X-Whistle-PoW"
# A refused JavaScript-off report this small gets its text back in the form (see _refuse).
REFILL_MAX_BODY = 256 * 1024


def instance_key(name: str) -> str:
    """A limiter key for this instance. flask-limiter keeps the key prefix of the first app it was
    bound to, so the instance's own prefix goes into every key instead: two instances sharing one
    Redis (or two apps in one test process) never share counters."""
    return get_state().secrets.key_prefix + name


def _global_key() -> str:
    # One bucket for everyone: a ceiling on an expensive endpoint, whoever calls it.
    return instance_key("global")


def session_id() -> str:
    """The random id of this visitor's session, created server-side the first time the session
    is seen (and put into every source page's cookie by :func:`_stamp_session`), so the cookie a
    client replays always carries the id its counters are kept under."""
    rid = session.get(_SESSION_KEY)
    if not isinstance(rid, str):
        rid = secrets.token_urlsafe(12)
        session[_SESSION_KEY] = rid
    return rid


def session_key() -> str:
    """A per-session limiter key: per-visitor limits without addresses. A client that drops its
    cookies gets a new id, which is why the expensive endpoints also ask for proof of work."""
    return instance_key("s:" + session_id())


def _session_tag() -> str:
    # The stores never see the cookie's id itself: a dump cannot be matched to a cookie by eye.
    return hashlib.blake2b(session_id().encode(), digest_size=12).hexdigest()


# Rate-limit headers off: they would tell a flooder exactly how much room is left.
limiter = Limiter(key_func=_global_key, default_limits=[], headers_enabled=False)


def retry_after() -> int:
    """Seconds until the flask-limiter limit that refused this request lets the next one through."""
    current = limiter.current_limit
    if current is None:
        return 60
    return max(1, int(current.reset_at - time.time()) + 1)


def _limits() -> Limits:
    # Read at request time, so each app (and each test) uses its own configuration.
    return get_state().config.limits


def _store() -> CounterStore:
    return proof.counters()


def _mark(view: F, purpose: str) -> F:
    # The guard finds the purpose on the view; the checks themselves run before the view.
    view._whistle_purpose = purpose  # type: ignore[attr-defined]
    return view


def submission_limits(view: F) -> F:
    """Reports (form and API): proof of work or the machine ceiling, and the session ceiling."""
    return _mark(view, "submit")


def login_limits(view: F) -> F:
    """Passphrase logins: as reports, plus the failed-passphrase backoff."""
    return _mark(view, "login")


def message_limits(view: F) -> F:
    """Follow-up messages from a logged-in source (form and API)."""
    return _mark(view, "message")


def _purpose() -> str | None:
    if request.method != "POST" or request.endpoint is None:
        return None
    view = current_app.view_functions.get(request.endpoint)
    purpose = getattr(view, "_whistle_purpose", None)
    return purpose if isinstance(purpose, str) else None


def _hit(kind: str, spec: str) -> int:
    """Count this request in each fixed window of ``spec`` (windows aligned to the epoch, so a
    key and its expiry name only the window); return the seconds to wait if one is full, else 0."""
    at = now()
    wait = 0
    for item in parse_many(spec):
        window = item.get_expiry()
        index = int(at // window)
        if _store().incr(f"{kind}:{window}:{index}", (index + 1) * window) > item.amount:
            wait = max(wait, math.ceil((index + 1) * window - at))
    return wait


def _pow_token() -> str | None:
    token = request.headers.get(POW_HEADER, "").strip()
    if token:
        return token
    length = request.content_length
    if (length is not None and length <= POW_FIELD_MAX_BODY
            and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data")):
        field = request.form.get("pow", "").strip()
        return field or None
    return None


def guard() -> ResponseReturnValue | None:
    """``before_request``: proof of work, per-session ceilings, the machine ceiling and the
    passphrase backoff, in that order, before anything reads the body."""
    purpose = _purpose()
    if purpose is None:
        return None
    sid = _session_tag()
    if purpose == "login":
        wait = backoff_remaining()
        if wait:
            return _refuse(purpose, 429, "http_429", backoff_message(wait), wait)
    token = _pow_token()
    if token:
        try:
            proof.check(token, purpose)
        except proof.PowError as exc:
            return _refuse(purpose, 400, exc.code, _pow_message(exc.code))
    wait = _hit(f"s:{sid}:{purpose}", getattr(_limits(), f"{purpose}_session"))
    if wait:
        minutes = math.ceil(wait / 60)
        return _refuse(purpose, 429, "http_429", ngettext(
            "You have sent many requests from this browser. Nothing was sent. "
            "Please wait %(num)d minute and try again.",
            "You have sent many requests from this browser. Nothing was sent. "
            "Please wait %(num)d minutes and try again.", minutes), wait)
    if not token:
        wait = _hit(f"g:{purpose}", getattr(_limits(), f"{purpose}_global"))
        if wait:
            return _refuse(purpose, 429, "http_429", ngettext(
                "Many people are using this site right now. Nothing was sent. "
                "Please wait %(num)d second and try again.",
                "Many people are using this site right now. Nothing was sent. "
                "Please wait %(num)d seconds and try again.", wait), wait)
    proof.record_attempt(purpose)
    return None


def backoff_message(wait: int) -> str:
    """The failed-passphrase wait in words: seconds while it is short, whole minutes (rounded up,
    so the source never comes back too early) once it is a minute or more — "256 seconds" is
    arithmetic a frightened person should not have to do."""
    if wait < 60:
        return str(ngettext(
            "Too many wrong passphrases. Please wait %(num)d second and try again.",
            "Too many wrong passphrases. Please wait %(num)d seconds and try again.", wait))
    minutes = math.ceil(wait / 60)
    return str(ngettext(
        "Too many wrong passphrases. Please wait %(num)d minute and try again.",
        "Too many wrong passphrases. Please wait %(num)d minutes and try again.", minutes))


def _pow_message(code: str) -> str:
    if code in ("pow_expired", "pow_stale", "pow_reused"):
        return str(_("The security check expired. Nothing was sent. Please try again."))
    return str(_("The security check failed. Nothing was sent. Please try again."))


def _refuse(purpose: str, status: int, code: str, message: str,
            wait: int | None = None) -> ResponseReturnValue:
    """The refusal in the client's terms: JSON for the API; for a form, the form itself again
    (nothing of the body was read, so it comes back empty) with the reason and the wait."""
    response: BaseResponse
    if request.path.startswith("/api/"):
        response = make_response(jsonify(error=code, message=message), status)
    elif purpose == "login":
        # The login form itself, never a bare error page: the source can try again from here.
        from whistle.server.web.source.followup import login_page

        response = make_response(login_page(notice=message, status=status))
    elif purpose == "submit":
        from whistle.server.web.source.forms import SubmitForm

        state = get_state()
        # A source who wrote a long report with JavaScript off must not lose it to a wait. A small
        # body (the text, no attachment) is read back into the form — the production worker has
        # it in memory already; a larger one is left unread and the form comes back empty.
        length = request.content_length
        small = length is not None and length <= REFILL_MAX_BODY
        form = SubmitForm(formdata=request.form if small else None)
        response = make_response(render_template(
            "submit.html", form=form, notice=message,
            fingerprint=state.unit_key.fingerprint(), max_upload_mb=state.config.max_upload_mb,
        ), status)
    else:
        # The message form lives on the case page: back there, with the reason on top.
        flash(message, "error")  # refused: the message was not sent
        response = redirect(url_for("source.case"), 303)
    if wait:
        response.headers["Retry-After"] = str(wait)
    return response


def backoff_remaining() -> int:
    """Seconds this session must still wait after failed passphrases (0: may try now).

    The count lives server-side; the store keeps the end of the wait only rounded up to the
    minute. The exact end is in the signed cookie, and trusted only while the cookie's count
    equals the server's: a replayed older cookie gets the rounded-up wait, never a reset."""
    store = _store()
    sid = _session_tag()
    failures = store.get(f"pf:{sid}")
    if not failures:
        return 0
    at = now()
    until = session.get("pf_until")
    if not (session.get("pf_n") == failures and isinstance(until, int)):
        until = store.get(f"pfu:{sid}")
    # Rounded up: a client that waits the Retry-After it is given is never refused again.
    return max(0, math.ceil(until - at))


def backoff_wait(failures: int) -> int:
    """The wait, in seconds, that the ``failures``-th failed passphrase of a session sets
    (docs/protocol.md, "Limits"). Typos happen: failures 1 to :data:`FREE_FAILURES` set none, so
    that many wrong passphrases and one more are each answered 400; the next failure sets 1 s,
    and each further one doubles it, up to :data:`BACKOFF_CAP_SECONDS`."""
    if failures <= FREE_FAILURES:
        return 0
    return min(1 << min(failures - FREE_FAILURES - 1, 16), BACKOFF_CAP_SECONDS)


def backoff_failed() -> int:
    """Record a failed passphrase; return the wait it sets (:func:`backoff_wait`)."""
    store = _store()
    sid = _session_tag()
    at = now()
    failures = store.incr(f"pf:{sid}", boundary(at + BACKOFF_CAP_SECONDS + BACKOFF_FORGET_SECONDS))
    wait = backoff_wait(failures)
    if wait:
        coarse = boundary(at + wait)
        store.put(f"pfu:{sid}", coarse, coarse)
    session["pf_n"] = failures
    # Whole seconds, rounded up: the wait lasts at least ``wait`` seconds from the failure (the
    # second truncated, a 1-second wait could end at once), and the cookie dates nothing finer.
    session["pf_until"] = math.ceil(at + wait) if wait else 0
    return wait


def _stamp_session(response: Response) -> Response:
    # Any source page that writes a session writes the id with it (see session_id).
    if request.blueprint == "source" and session and _SESSION_KEY not in session:
        session_id()
    return response


def init_app(app: Flask) -> None:
    """Bind flask-limiter and the fairness guard; both run before Flask-WTF's CSRF check."""
    state = app.extensions["whistle"]
    config = state.config
    app.config["RATELIMIT_STORAGE_URI"] = config.ratelimit_storage
    app.config.setdefault("RATELIMIT_ENABLED", True)
    # Fail closed: if the shared storage (Redis) is down, refuse rather than run unlimited.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", False)
    limiter.init_app(app)
    app.extensions["whistle_counters"] = make_counters(config.ratelimit_storage,
                                                       state.secrets.key_prefix)
    # Ahead of CSRFProtect's hook (registered earlier by create_app), which reads the form.
    hooks = app.before_request_funcs.setdefault(None, [])
    for hook in (guard, limiter._check_request_limit):
        if hook in hooks:
            hooks.remove(hook)
    hooks[0:0] = [limiter._check_request_limit, guard]
    app.after_request(_stamp_session)
