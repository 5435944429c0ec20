# SPDX-License-Identifier: AGPL-3.0-or-later
"""Coming back: the source logs in with the receipt passphrase, reads replies, sends messages.

Login is one argon2 derivation and one indexed lookup, the same work for a right or a wrong
passphrase, with one generic message for every failure of the lookup. Only a passphrase with the
wrong number of words is told so, with the number it had: that is counted before any lookup (it
could never match), so it says nothing about which passphrases exist. Every refusal (wrong
passphrase, backoff, busy server, expired form) shows the login form again, with the reason.
The passphrase is never stored, logged, put in a cookie or written back into a page; the source's
private key lives only in the session store (source_sessions.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from flask import Response, flash, make_response, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import ngettext
from sqlalchemy import select

from whistle.core.crypto import CryptoError, UnitSecretKey
from whistle.core.enums import Channel, ItemKind
from whistle.core.passphrase import WORDS, GateBusyError, PassphraseError, normalise
from whistle.core.replies import ReplyAuthError, SealedReply, open_reply
from whistle.server import uploads
from whistle.server.blobstore import read_bytes
from whistle.server.casework import add_message
from whistle.server.limits import backoff_failed, backoff_message, login_limits, message_limits
from whistle.server.models import Report
from whistle.server.source_sessions import SESSION_TOKEN, current_source
from whistle.server.state import get_state
from whistle.server.uploads import UploadPolicy
from whistle.server.web.source import bp, common, receipt

F = TypeVar("F", bound=Callable[..., ResponseReturnValue])
TOKEN = SESSION_TOKEN
# Every passphrase length ever issued. Logging in must never depend on today's word list: if a
# shorter list one day needs more words per passphrase, the old 7-word ones keep working.
ISSUED_WORD_COUNTS = frozenset({7, WORDS})
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
                                             words=WORDS), status)
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
        "against your note.", count, words=WORDS))


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
        with state.sessions() as db:
            report_id = db.scalar(select(Report.id).where(Report.login_hash == keys.login_hash))
    if report_id is None or keys is None:
        wait = backoff_failed()
        form.passphrase.errors = [_("That passphrase does not match any report. Check the words "
                                    "and try again.")]
        # The failure that starts (or lengthens) the backoff says so at once, in words.
        return login_page(form, notice=backoff_message(wait) if wait else None, status=400)
    lang = session.get("lang")
    old = session.get(TOKEN)
    if isinstance(old, str):
        state.source_sessions.close(old)
    # A fresh session: nothing from before the login carries over (session fixation).
    session.clear()
    if lang:
        session["lang"] = lang
    session[TOKEN] = state.source_sessions.open(report_id, keys.secret_key)
    return redirect(url_for("source.case"))


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


@bp.route("/case", methods=["GET", "POST"])
@source_required
@message_limits
@uploads.accepts(UploadPolicy.PLAINTEXT, fields=("attachments",), quota="message")
def case() -> ResponseReturnValue:
    from whistle.server.web.source.forms import MessageForm

    current = current_source()
    assert current is not None  # noqa: S101 - source_required guarantees it
    report_id, secret_key = current
    form = MessageForm()
    status = 200
    if request.method == "POST":
        once = receipt.posted_token()
        valid = form.validate_on_submit()
        if valid and once is None:
            # No (or a forged) one-time token: fail closed, nothing is stored.
            form.form_errors.append(_("This form has expired. Please send it again."))
        elif valid and once is not None:
            # Post/redirect/get with a one-time token (receipt.py): a double click or a re-post of
            # the same form stores the message once.
            if not receipt.claim(once, receipt.SENT):
                flash(_("This message was already sent."), "info")
                return redirect(url_for("source.case"))
            try:
                sealed, spools = common.seal_form(ItemKind.MESSAGE, "", form.body.data or "",
                                                  request.files.getlist("attachments"))
                form.body.data = ""
                with get_state().sessions.begin() as db:
                    add_message(db, report_id, sealed, spools, Channel.SERVER_FORM)
            except BaseException:
                receipt.release(once)
                raise
            flash(_("Your message was encrypted and sent."), "success")
            return redirect(url_for("source.case"))
        status = 400
    return render_template("case.html", form=form, fingerprint=get_state().unit_key.fingerprint(),
                           once_token=receipt.new_token(), **case_view(report_id, secret_key)), status


def case_view(report_id: str, secret_key: UnitSecretKey) -> dict[str, object]:
    """What the source sees: status, dates, and the conversation with replies decrypted.

    A reply is shown as the unit's only when its signature verifies with ``unit-sign.pub`` over the
    stored ciphertext, this report's id and the *stored* source key, and the opened envelope names
    the same report and key. Anything else (planted in the database, re-sealed after a key swap,
    stored before replies were signed) is withheld: listed, so the source knows, never shown."""
    state = get_state()
    with state.sessions() as db:
        report = db.get(Report, report_id)
        if report is None:
            return {"report": None, "entries": []}
        entries = []
        for item in report.items:
            entry: dict[str, object] = {"kind": item.kind, "date": item.created_on,
                                        "attachments": len(item.attachments)}
            if item.kind == ItemKind.REPLY:
                reply = SealedReply(report.id, report.source_public_key,
                                    read_bytes(db, item.envelope_blob_id), item.signature or b"")
                try:
                    entry["body"] = open_reply(reply, secret_key, state.unit_sign_key)
                except ReplyAuthError:
                    entry["withheld"] = True
                except CryptoError:
                    # Signed by the unit but does not open: shown, never skipped, so the source
                    # knows a reply exists and can ask for it again.
                    entry["error"] = True
            entries.append(entry)
        return {"report": report, "entries": entries}


@bp.post("/api/v1/messages")
@message_limits
@uploads.accepts(UploadPolicy.CIPHERTEXT, quota="message")
def api_message() -> ResponseReturnValue:
    from flask import jsonify

    current = current_source()
    if current is None:
        return jsonify(error="session", message=_(
            "Your session has ended. Please enter your passphrase again.")), 401
    sealed, attachments = common.read_sealed_upload("message")
    with get_state().sessions.begin() as db:
        add_message(db, current[0], sealed, attachments, Channel.BROWSER)
    # Shown on the page the script reloads, as after the JavaScript-off post.
    flash(_("Your message was encrypted and sent."), "success")
    return jsonify(ok=True, channel=Channel.BROWSER.value), 201
