# SPDX-License-Identifier: AGPL-3.0-or-later
"""Public pages: landing, submission (JavaScript-off path seals on the server), receipt."""

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
from whistle.server.web.source import bp, common, receipt


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
    if request.method == "GET" or not form.validate_on_submit() or token is None:
        notice = None
        if request.method == "POST" and token is None and not form.errors:
            # No (or a forged) one-time token: fail closed, nothing is filed.
            notice = _("This form has expired. Please send it again.")
        status = 400 if request.method == "POST" else 200
        # A fresh token each time the form is shown: a token is spent only by a post that files.
        return render_template(
            "submit.html", form=form, fingerprint=state.unit_key.fingerprint(),
            max_upload_mb=state.config.max_upload_mb, notice=notice, once_token=receipt.new_token(),
        ), status
    if not receipt.claim(token):
        # The same form again (a double click, a re-post): nothing is filed; the receipt is the
        # first post's, or "already shown".
        receipt.point_at(token)
        return redirect(url_for("source.receipt"), 303)
    try:
        sealed, spools = common.seal_form(ItemKind.REPORT, form.category.data or "",
                                          form.body.data or "", request.files.getlist("attachments"))
        # The plaintext is not needed any more; don't keep it around.
        form.body.data = ""
        filed = common.file_report(sealed, spools, Channel.SERVER_FORM, str(get_locale()))
    except BaseException:
        # Nothing was stored: the same form may be sent again.
        receipt.release(token)
        raise
    receipt.receipt_ready(token, filed)
    return redirect(url_for("source.receipt"), 303)
