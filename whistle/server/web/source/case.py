# SPDX-License-Identifier: AGPL-3.0-or-later
"""The logged-in source's case page: status, the conversation with the unit's replies, and
follow-up messages (the JavaScript-off form and the page script's API).

Two kinds of source session (source_sessions.py). In a **server** session (the form login: the
server derived the keys) replies are verified and opened here, with the case tag and reply
numbers checked, and a JavaScript-off message is sealed here as a v2 envelope bound to the case.
In a **browser** session (``POST /api/v1/login``) the server holds no key: each reply is put into
the page sealed, with its signature, for the page's script to verify and open, and messages come
sealed by the browser through ``POST /api/v1/messages``. Either way a message must carry the
case's next source number (``seq``), so a replayed or stale one is refused with nothing stored.
"""

from __future__ import annotations

from flask import flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from whistle.core.crypto import Binding, CryptoError, b64encode
from whistle.core.enums import Channel, ItemKind
from whistle.core.replies import ReplyAuthError, SealedReply, open_reply
from whistle.server import uploads
from whistle.server.blobstore import read_bytes
from whistle.server.casework import StaleSeqError, add_message, next_source_seq
from whistle.server.limits import message_limits
from whistle.server.models import Report
from whistle.server.source_sessions import SourceSession, current_source
from whistle.server.state import get_state
from whistle.server.uploads import UploadPolicy
from whistle.server.web.source import bp, common, receipt
from whistle.server.web.source.followup import source_required

# The longest decimal ``seq`` field read (a source has far fewer items than 10^9).
SEQ_FIELD_MAX_CHARS = 9


@bp.route("/case", methods=["GET", "POST"])
@source_required
@message_limits
@uploads.accepts(UploadPolicy.PLAINTEXT, fields=("attachments",), quota="message")
def case() -> ResponseReturnValue:
    """The case page; a JavaScript-off message is sealed here, bound to the case, and stored once
    (post/redirect/get with the form's one-time token)."""
    from whistle.server.web.source.forms import MessageForm

    current = current_source()
    assert current is not None  # noqa: S101 - source_required guarantees it
    form = MessageForm()
    status = 200
    if request.method == "POST":
        once = receipt.posted_token()
        valid = form.validate_on_submit()
        if valid and current.browser:
            # The keys stayed in the browser: the server has no case tag to bind a message with,
            # and an unbound message would be quarantined on the workstation. Fail closed.
            form.form_errors.append(_("This message could not be sealed here. Please log in again "
                                      "with your passphrase and send it again."))
        elif valid and once is None:
            # No (or a forged) one-time token: fail closed, nothing is stored.
            form.form_errors.append(_("This form has expired. Please send it again."))
        elif valid and once is not None:
            # Post/redirect/get with a one-time token (receipt.py): a double click or a re-post of
            # the same form stores the message once.
            if not receipt.claim(once, receipt.SENT):
                flash(_("This message was already sent."), "info")
                return redirect(url_for("source.case"))
            try:
                send_form_message(current, form.body.data or "")
                form.body.data = ""
            except BaseException:
                receipt.release(once)
                raise
            flash(_("Your message was encrypted and sent."), "success")
            return redirect(url_for("source.case"))
        status = 400
    return render_template("case.html", form=form, fingerprint=get_state().unit_key.fingerprint(),
                           once_token=receipt.new_token(), **case_view(current)), status


def send_form_message(current: SourceSession, body: str) -> None:
    """Seal a JavaScript-off message as the source's next item of the case (v2: case tag, seq,
    the source's public key) and store it, in one transaction: the seq is taken under the case's
    row lock, so two messages sent at once cannot share one."""
    assert current.secret_key is not None and current.case_tag is not None  # noqa: S101 - a server session
    with get_state().sessions.begin() as db:
        seq = next_source_seq(db, current.report_id)
        sealer = common.seal_form(ItemKind.MESSAGE, "", body, request.files.getlist("attachments"),
                                  seq=seq)
        sealed = sealer.seal(Binding(case_tag=current.case_tag, seq=seq,
                                     source_public_key=current.secret_key.public_key.encode()))
        add_message(db, current.report_id, sealed, sealer.spools, Channel.SERVER_FORM, seq=seq)


def case_view(current: SourceSession) -> dict[str, object]:
    """What the source sees: status, dates, the conversation, and what the page's script needs
    (``browser_session``, ``next_seq``, ``source_public_key_b64``).

    In a server session a reply is shown as the unit's only when its signature verifies with
    ``unit-sign.pub`` over the stored ciphertext, this report's id and the *stored* source key, the
    opened envelope names the same report and key, and (a v3 reply) carries the case tag of the
    session and a number no earlier reply had. Anything else (planted in the database, re-sealed
    after a key swap, moved from another case, replayed, stored before replies were signed) is
    withheld: listed, so the source knows, never shown. In a browser session each reply entry
    carries ``sealed`` and ``signature`` (base64) instead, and the page makes the same checks."""
    state = get_state()
    with state.sessions() as db:
        report = db.get(Report, current.report_id)
        if report is None:
            return {"report": None, "entries": [], "browser_session": current.browser,
                    "next_seq": 0, "source_public_key_b64": ""}
        entries = []
        seen: set[int] = set()
        for item in report.items:
            entry: dict[str, object] = {"kind": item.kind, "date": item.created_on,
                                        "attachments": len(item.attachments)}
            if item.kind == ItemKind.REPLY:
                sealed = read_bytes(db, item.envelope_blob_id)
                if current.secret_key is None:
                    entry["sealed"] = b64encode(sealed)
                    entry["signature"] = b64encode(item.signature) if item.signature else ""
                else:
                    entry.update(_opened(SealedReply(report.id, report.source_public_key, sealed,
                                                     item.signature or b""), current, seen))
            entries.append(entry)
        return {"report": report, "entries": entries, "browser_session": current.browser,
                "next_seq": next_source_seq(db, report.id, lock=False),
                "source_public_key_b64": b64encode(report.source_public_key)}


def _opened(reply: SealedReply, current: SourceSession, seen: set[int]) -> dict[str, object]:
    """A reply opened on the server, as the entry's fields: ``body``, ``withheld`` or ``error``."""
    assert current.secret_key is not None  # noqa: S101 - a server session
    try:
        opened = open_reply(reply, current.secret_key, get_state().unit_sign_key,
                            case_tag=current.case_tag)
    except ReplyAuthError:
        return {"withheld": True}
    except CryptoError:
        # Signed by the unit but does not open: shown, never skipped, so the source knows a
        # reply exists and can ask for it again.
        return {"error": True}
    if opened.seq is not None:
        if opened.seq in seen:
            # The unit numbers its replies 1, 2, …: a second one with a number already shown is
            # a replay (a copy stored again), never shown twice as if the unit had said it again.
            return {"withheld": True}
        seen.add(opened.seq)
    return {"body": opened.body}


def declared_seq() -> int | None:
    """The ``seq`` field of a message post as a number, or None when missing or not decimal."""
    text = request.form.get("seq", "")
    if not text.isascii() or not text.isdigit() or len(text) > SEQ_FIELD_MAX_CHARS:
        return None
    return int(text)


@bp.post("/api/v1/messages")
@message_limits
@uploads.accepts(UploadPolicy.CIPHERTEXT, quota="message")
def api_message() -> ResponseReturnValue:
    """A message the browser sealed, as the case's next source item: its declared ``seq`` must be
    the case's next one (409 ``stale_seq`` otherwise: the page reloads the case and retries)."""
    current = current_source()
    if current is None:
        return jsonify(error="session", message=_(
            "Your session has ended. Please enter your passphrase again.")), 401
    sealed, attachments = common.read_sealed_upload("message")
    seq = declared_seq()
    if seq is None:
        return jsonify(error="bad_seq", message=_(
            "The message could not be sent. Please reload the page and try again.")), 400
    try:
        with get_state().sessions.begin() as db:
            add_message(db, current.report_id, sealed, attachments, Channel.BROWSER, seq=seq)
    except StaleSeqError:
        return jsonify(error="stale_seq", message=_(
            "Your case changed while you were writing. Nothing was sent; the page will reload "
            "and send your message again.")), 409
    # Shown on the page the script reloads, as after the JavaScript-off post.
    flash(_("Your message was encrypted and sent."), "success")
    return jsonify(ok=True, channel=Channel.BROWSER.value), 201
