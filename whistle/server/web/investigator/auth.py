# SPDX-License-Identifier: AGPL-3.0-or-later
"""Investigator login, logout and the guards every investigator view relies on.

The session is Flask's signed cookie. It holds the account id, the account's ``session_version``
when the session began, the minute of the last request and the minute of login (all in minutes
since the epoch). A session ends after 30 idle minutes, 12 hours after login, or at the next
request once the account is disabled or its ``session_version`` changes (password or 2FA reset,
logout). A session holding a source's ``source_token`` is never an investigator's.

Every view of the blueprint except the login page needs a login even without a decorator (a
``before_request`` guard, defence in depth); ``login_required`` / ``admin_required`` state it
explicitly and ``admin_required`` adds the admin check.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, ParamSpec

from flask import Response, abort, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length, Regexp

from whistle.server import accounts, audit
from whistle.server.limits import instance_key, limiter, retry_after
from whistle.server.models import Investigator
from whistle.server.source_sessions import SESSION_TOKEN
from whistle.server.state import get_state
from whistle.server.web.investigator import bp

P = ParamSpec("P")

SESSION_ID = "inv_id"
SESSION_VERSION = "inv_version"
SESSION_SEEN = "inv_seen"
SESSION_LOGIN = "inv_login"
SOURCE_TOKEN = SESSION_TOKEN  # the source side's session key name
IDLE_MINUTES = 30
LIFETIME_MINUTES = 12 * 60
# Per account name (known or not), counting failed attempts only; and one ceiling for everyone,
# which also bounds the argon2 work a burst of logins can cause.
LOGIN_LIMIT = "5 per 15 minutes"
LOGIN_CEILING = "60 per minute"
HOME_PATH = "/investigator/"
PUBLIC_ENDPOINTS = frozenset({"investigator.login"})


class LoginForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no type hints
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=1024)])
    code = StringField(
        _l("6-digit code from your authenticator app"),
        validators=[DataRequired(), Regexp(r"^\s*\d{3}\s?\d{3}\s*$",
                                           message=_l("Enter the 6 digits your app shows."))],
    )


def _now_minutes() -> int:
    return int(time.time() // 60)


def home_url() -> str:
    """Where investigators land after login: the case list."""
    return request.script_root + HOME_PATH


def _restart_session(**values: int) -> None:
    """A fresh session holding only ``values`` (and the language): nothing survives a login."""
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    session.update(values)


def _load_investigator() -> Investigator | None:
    """The logged-in account for this request, or ``None``; ends a stale session. Cached in ``g``."""
    if "investigator" in g:
        cached: Investigator | None = g.investigator
        return cached
    g.investigator = None
    if SOURCE_TOKEN in session:
        return None
    ident, version = session.get(SESSION_ID), session.get(SESSION_VERSION)
    seen, since = session.get(SESSION_SEEN), session.get(SESSION_LOGIN)
    if not (isinstance(ident, int) and isinstance(version, int) and isinstance(seen, int)
            and isinstance(since, int)):
        return None
    now = _now_minutes()
    if now - seen >= IDLE_MINUTES or now - since >= LIFETIME_MINUTES or seen > now:
        _end_session()
        return None
    with get_state().sessions() as db:
        account: Investigator | None = db.get(Investigator, ident)
    if account is None or account.disabled or account.session_version != version:
        _end_session()
        return None
    if seen != now:
        session[SESSION_SEEN] = now
    g.investigator = account
    return account


def _end_session() -> None:
    _restart_session()
    g.session_ended = True


def _login_redirect() -> ResponseReturnValue:
    args: dict[str, Any] = {}
    if request.method == "GET" and request.path.startswith(HOME_PATH):
        args["next"] = request.full_path.rstrip("?")
    if g.get("session_ended"):
        args["ended"] = "1"
    return redirect(url_for("investigator.login", **args), 303)


def current_investigator() -> Investigator:
    """The logged-in account (a detached snapshot: reload it by ``id`` in your session to change it).

    Only valid inside a view protected by :func:`login_required` or :func:`admin_required`.
    """
    account = _load_investigator()
    if account is None:
        raise RuntimeError("current_investigator() called outside a login_required view")
    return account


def login_required(view: Callable[P, ResponseReturnValue]) -> Callable[P, ResponseReturnValue]:
    """Let only a logged-in investigator through; anyone else is sent to the login page."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
        if _load_investigator() is None:
            return _login_redirect()
        return view(*args, **kwargs)

    return wrapper


def admin_required(view: Callable[P, ResponseReturnValue]) -> Callable[P, ResponseReturnValue]:
    """Like :func:`login_required`, and answer 403 to an investigator who is not an admin."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
        account = _load_investigator()
        if account is None:
            return _login_redirect()
        if not account.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapper


@bp.before_request
def _guard() -> ResponseReturnValue | None:
    # A view that forgot its decorator is still closed to anonymous and source sessions.
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if _load_investigator() is None:
        return _login_redirect()
    return None


@bp.context_processor
def _inject() -> dict[str, object]:
    return {"current_account": g.get("investigator"), "investigator_home": home_url()}


@bp.errorhandler(403)
def _forbidden(exc: Exception) -> ResponseReturnValue:
    message = _("Your account is not allowed to open this page.")
    return render_template("error.html", code=403, message=message), 403


@bp.errorhandler(429)
def _throttled(exc: Exception) -> ResponseReturnValue:
    if request.endpoint == "investigator.login":
        message = _("Too many login attempts. Wait 15 minutes, then try again. If you did not "
                    "make these attempts, tell an administrator.")
    else:
        message = _("Too many requests right now. Please wait a few minutes and try again.")
    return render_template("error.html", code=429, message=message), 429, {
        "Retry-After": str(retry_after())}


def _name_key() -> str:
    # Normalised like account names, so "Alice" and "alice " share one bucket; cut so a huge
    # submitted name cannot bloat the limiter's storage.
    return instance_key("login-name:" + accounts.normalise_name(request.form.get("name", ""))[:80])


def _login_failed(_response: Response) -> bool:
    return bool(g.get("login_failed"))


def _safe_next(target: str | None) -> str | None:
    # Only back into the investigator pages of this site: never an open redirect.
    # isprintable(): a CR/LF in the Location header was a 500 (Werkzeug refuses it).
    if (target and target.startswith(HOME_PATH) and "\\" not in target and "//" not in target
            and target.isprintable()):
        return request.script_root + target
    return None


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(LOGIN_CEILING, methods=["POST"])
@limiter.limit(LOGIN_LIMIT, key_func=_name_key, methods=["POST"], deduct_when=_login_failed)
def login() -> ResponseReturnValue:
    """The login page: name, password and a TOTP code."""
    target = _safe_next(request.args.get("next"))
    if request.method == "GET" and _load_investigator() is not None:
        return redirect(target or home_url(), 303)
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        state = get_state()
        with state.sessions() as db:
            try:
                account = accounts.authenticate(db, form.name.data, form.password.data,
                                                form.code.data)
            except accounts.AuthenticationError as exc:
                g.login_failed = True
                db.rollback()
                if exc.account is not None:
                    audit.record(db, exc.account, audit.LOGIN_FAILED, detail=exc.reason)
                    db.commit()
                error = _("Wrong name, password or code.")
            else:
                audit.record(db, account.name, audit.LOGIN)
                db.commit()
                _restart_session(**{SESSION_ID: account.id, SESSION_VERSION: account.session_version,
                                    SESSION_SEEN: _now_minutes(), SESSION_LOGIN: _now_minutes()})
                return redirect(target or home_url(), 303)
    status = 200 if request.method == "GET" or error else 400
    form.password.data = ""
    return render_template("investigator/login.html", form=form, error=error,
                           ended=request.args.get("ended") == "1", next=request.args.get("next")
                           ), status


@bp.post("/logout")
@login_required
def logout() -> ResponseReturnValue:
    """End this session and, by bumping ``session_version``, every other session of the account.

    Signed-cookie sessions cannot be revoked one by one: a copied cookie would outlive a logout
    that only cleared this browser's.
    """
    state = get_state()
    with state.sessions() as db:
        account = db.get(Investigator, current_investigator().id)
        if account is not None:
            account.session_version += 1
            audit.record(db, account.name, audit.LOGOUT)
            db.commit()
    _restart_session()
    return redirect(url_for("investigator.login"), 303)
