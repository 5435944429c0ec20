# SPDX-License-Identifier: AGPL-3.0-or-later
"""Public pages: landing, submission (the JavaScript-off path derives and seals on the server)."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import get_locale
from flask_babel import gettext as _

from whistle.core.enums import Channel, ItemKind
from whistle.server import uploads
from whistle.server.limits import submission_limits
from whistle.server.state import get_state
from whistle.server.uploads import UploadPolicy
from whistle.server.web.source import bp, common, questions, receipt


@bp.get("/")
def index() -> str:
    state = get_state()
    return render_template("index.html", fingerprint=state.unit_key.fingerprint())


@bp.route("/submit", methods=["GET", "POST"])
@submission_limits
@uploads.accepts(UploadPolicy.PLAINTEXT, fields=("attachments",), quota="submit")
def submit() -> ResponseReturnValue:
    """The JavaScript-off form. Post/redirect/get to a receipt shown once (receipt.py): a reload
    of the receipt, Back, or a second post of the same form never files the report again."""
    from whistle.server.web.source.forms import SubmitForm

    state = get_state()
    form = SubmitForm()
    token = receipt.posted_token() if request.method == "POST" else None
    # The answers to the deployment's optional questions (questions.py), checked before anything
    # is filed: a refused answer shows the form again with everything the source typed.
    answers: tuple[tuple[str, str], ...] = ()
    answer_error = None
    if request.method == "POST":
        answers, answer_error = questions.posted_answers(form.category.data or "")
    if (request.method == "GET" or not form.validate_on_submit() or answer_error is not None
            or token is None):
        notice = None
        if answer_error is not None:
            notice = _("Please check your answer to “%(question)s”.",
                       question=questions.error_label(answer_error))
        elif request.method == "POST" and token is None and not form.errors:
            # No (or a forged) one-time token: fail closed, nothing is filed.
            notice = _("This form has expired. Please send it again.")
        status = 400 if request.method == "POST" else 200
        # A fresh token each time the form is shown: a token is spent only by a post that files.
        return render_template(
            "submit.html", form=form, fingerprint=state.unit_key.fingerprint(),
            max_upload_mb=state.config.max_upload_mb, notice=notice, once_token=receipt.new_token(),
            question_groups=questions.shown_groups(answer_error.question_id if answer_error else None),
        ), status
    if not receipt.claim(token):
        # The same form again (a double click, a re-post): nothing is filed; the receipt is the
        # first post's, or "already shown".
        receipt.point_at(token)
        return redirect(url_for("source.receipt"), 303)
    try:
        sealer = common.seal_form(ItemKind.REPORT, form.category.data or "",
                                  form.body.data or "", request.files.getlist("attachments"),
                                  fields=answers)
        # The plaintext is in the sealer now; don't keep another copy around.
        form.body.data = ""
        # The server draws the passphrase, derives the keys and seals the report bound to them
        # (case tag, seq 1, the derived public key), all in memory.
        filed = common.file_derived_report(sealer, Channel.SERVER_FORM, str(get_locale()))
    except BaseException:
        # Nothing was stored: the same form may be sent again.
        receipt.release(token)
        raise
    receipt.receipt_ready(token, filed)
    return redirect(url_for("source.receipt"), 303)
