# SPDX-License-Identifier: AGPL-3.0-or-later
"""Coming back: the source logs in, with the receipt passphrase (the form) or with the login key
the page derived from it (the JSON API); the case page itself is in case.py.

The form login (JavaScript off, or the page fell back) is one argon2 derivation and one indexed
lookup, the same work for a right or a wrong passphrase, with one generic message for every
failure of the lookup. Only a passphrase with the wrong number of words is told so, with the
number it had: that is counted before any lookup (it could never match), so it says nothing about
which passphrases exist. Every refusal (wrong passphrase, backoff, busy server, expired form)
shows the login form again, with the reason. The passphrase is never stored, logged, put in a
cookie or written back into a page; the source's private key and case tag live only in the
session store (source_sessions.py).

The API login (``POST /api/v1/login``) takes the login key the browser derived: one SHA-256 and
the same indexed lookup, no argon2, the same limits and failed-passphrase backoff. Its session
holds no key at all: the browser opens the replies itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from flask import (
    Response,
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
from flask_babel import get_locale, ngettext
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from sqlalchemy import select

from whistle.core.crypto import UnitSecretKey
from whistle.core.enums import Language
from whistle.core.passphrase import (
    GateBusyError,
    PassphraseError,
    issued_word_counts,
    normalise,
    word_count,
)
from whistle.server.limits import backoff_failed, backoff_message, login_limits
from whistle.server.models import Report
from whistle.server.source_sessions import SESSION_TOKEN, current_source
from whistle.server.state import get_state
from whistle.server.web.source import bp
from whistle.server.web.source.api import decode_key

F = TypeVar("F", bound=Callable[..., ResponseReturnValue])
TOKEN = SESSION_TOKEN
# Every passphrase length ever issued. Logging in must never depend on today's word list: if a
# shorter list one day needs more words per passphrase, the old 7-word ones keep working.
ISSUED_WORD_COUNTS = issued_word_counts()
# What a busy argon2 gate answers (as the app's 503 handler does).
BUSY_RETRY_AFTER = 30


def login_page(form: object | None = None, *, notice: str | None = None, status: int = 200,
               retry_after: int | None = None) -> Response:
    """The login form with an optional error notice: every answer of /followup, and every refusal
    of it in limits.py and app.py, is this page, so the source can always try again from it."""
    from whistle.server.web.source.forms import FollowupForm

    if form is None:
        # Nothing of a refused body is read back: the box comes back empty.
        form = FollowupForm(formdata=None)
    response = make_response(render_template("followup.html", form=form, notice=notice,
                                             words=page_word_count()), status)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def word_count_error(typed: str) -> str | None:
    """The message for a passphrase with the wrong number of words (counted after the same
    normalisation as the derivation, so "uno,dos" is two words), or None if the count is one a
    passphrase can have. Needs no lookup: a count alone can never tell which passphrases exist."""
    count = len(normalise(typed).split())
    if count in ISSUED_WORD_COUNTS:
        return None
    return str(ngettext(
        "You typed %(num)d word. A receipt passphrase has %(words)d words: please check it "
        "against your note.",
        "You typed %(num)d words. A receipt passphrase has %(words)d words: please check it "
        "against your note.", count, words=page_word_count()))


def page_word_count() -> int:
    """How many words a passphrase issued in the page's language has (what the form tells)."""
    return word_count(Language.coerce(str(get_locale())).value)


def source_required(view: F) -> F:
    @wraps(view)
    def wrapped(*args: object, **kwargs: object) -> ResponseReturnValue:
        if current_source() is None:
            session.pop(TOKEN, None)
            flash(_("Your session has ended. Please enter your passphrase again."), "warning")
            return redirect(url_for("source.followup"))
        return view(*args, **kwargs)
    return wrapped  # type: ignore[return-value]


@bp.route("/followup", methods=["GET", "POST"])
@login_limits
def followup() -> ResponseReturnValue:
    from whistle.server.web.source.forms import FollowupForm

    form = FollowupForm()
    if request.method == "GET" or not form.validate_on_submit():
        return login_page(form, status=400 if request.method == "POST" else 200)
    # The failed-passphrase backoff was checked before the form was read (limits.guard).
    typed = form.passphrase.data or ""
    # The form's field is cleared so the passphrase is never echoed back into a page.
    form.passphrase.data = ""
    miscount = word_count_error(typed)
    if miscount is not None:
        # A typo in the number of words is not a guess at a passphrase: no derivation, no lookup,
        # and no step towards the backoff.
        form.passphrase.errors = [miscount]
        return login_page(form, status=400)
    state = get_state()
    try:
        keys = state.gate.derive(typed, state.secrets.argon2)
    except GateBusyError:
        # Every argon2 slot stayed taken: the form again, with the reason, not a bare 503 page.
        return login_page(form, notice=_("The server is busy. Please wait a minute and try again."),
                          status=503, retry_after=BUSY_RETRY_AFTER)
    except PassphraseError:
        keys = None
    report_id = None
    if keys is not None:
        report_id = find_report(keys.login_hash)
    if report_id is None or keys is None:
        wait = backoff_failed()
        form.passphrase.errors = [wrong_passphrase_message()]
        # The failure that starts (or lengthens) the backoff says so at once, in words.
        return login_page(form, notice=backoff_message(wait) if wait else None, status=400)
    start_source_session(report_id, keys.secret_key, keys.case_tag)
    return redirect(url_for("source.case"))


def find_report(login_hash: bytes) -> str | None:
    """The report filed under ``login_hash`` (one indexed lookup), or None."""
    with get_state().sessions() as db:
        return db.scalar(select(Report.id).where(Report.login_hash == login_hash))


def wrong_passphrase_message() -> str:
    """The one message for every passphrase that matches no report (form and API)."""
    return str(_("That passphrase does not match any report. Check the words and try again."))


def start_source_session(report_id: str, secret_key: UnitSecretKey | None = None,
                         case_tag: bytes | None = None) -> None:
    """Replace this visitor's session with a new source session (a server session with the
    derived secret key and case tag, or a browser session with neither). Nothing from before
    the login carries over (session fixation) but the language."""
    state = get_state()
    lang = session.get("lang")
    old = session.get(TOKEN)
    if isinstance(old, str):
        state.source_sessions.close(old)
    session.clear()
    if lang:
        session["lang"] = lang
    session[TOKEN] = state.source_sessions.open(report_id, secret_key, case_tag)


@bp.post("/api/v1/login")
@login_limits
def api_login() -> ResponseReturnValue:
    """Log in with the login key the page derived from the passphrase (docs/protocol.md 5.3):
    one SHA-256 and one indexed lookup, no argon2. The session holds no source key."""
    # The API's token travels in a header (docs/protocol.md 5.1), never in the form.
    if not (request.headers.get("X-CSRFToken") or request.headers.get("X-CSRF-Token")):
        raise CSRFError("The CSRF token is missing.")
    # The failed-passphrase backoff and the limits were checked before the body was read
    # (limits.guard), as for the form.
    login_key = decode_key(request.form.get("login_key"))
    if login_key is None:
        # Not a guess at a passphrase (no derivation makes this): not counted.
        return jsonify(error="bad_login_key", message=_(
            "The login could not be sent. Please reload the page and try again.")), 400
    report_id = find_report(hashlib.sha256(login_key).digest())
    if report_id is None:
        wait = backoff_failed()
        message = wrong_passphrase_message()
        if wait:
            message += " " + backoff_message(wait)
        return jsonify(error="wrong_passphrase", message=message), 400
    start_source_session(report_id)
    from flask_wtf.csrf import generate_csrf

    # The new session's token, so that a client can post a message without reading a page first
    # (the token read before the login is void: the session was replaced).
    return jsonify(ok=True, case_url=url_for("source.case"), csrf_token=generate_csrf())


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    token = session.get(TOKEN)
    if isinstance(token, str):
        get_state().source_sessions.close(token)
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    flash(_("You have left your report. Close the browser if this computer is shared."), "info")
    return redirect(url_for("source.index"))
