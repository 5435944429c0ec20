# SPDX-License-Identifier: AGPL-3.0-or-later
"""Public pages: landing, submission (JavaScript-off path seals on the server), receipt."""

from __future__ import annotations

from flask import render_template, request
from flask_babel import get_locale

from whistle.core.enums import Channel, ItemKind
from whistle.server import uploads
from whistle.server.limits import submission_limits
from whistle.server.state import get_state
from whistle.server.uploads import UploadPolicy
from whistle.server.web.source import bp, common


@bp.get("/")
def index() -> str:
    state = get_state()
    return render_template("index.html", fingerprint=state.unit_key.fingerprint())


@bp.route("/submit", methods=["GET", "POST"])
@submission_limits
@uploads.accepts(UploadPolicy.PLAINTEXT, fields=("attachments",), quota="submit")
def submit() -> tuple[str, int] | str:
    from whistle.server.web.source.forms import SubmitForm

    state = get_state()
    form = SubmitForm()
    if request.method == "GET" or not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template(
            "submit.html", form=form, fingerprint=state.unit_key.fingerprint(),
            max_upload_mb=state.config.max_upload_mb,
        ), status
    sealed, spools = common.seal_form(ItemKind.REPORT, form.category.data or "", form.body.data or "",
                                      request.files.getlist("attachments"))
    # The plaintext is not needed any more; don't keep it around for the template.
    form.body.data = ""
    receipt = common.file_report(sealed, spools, Channel.SERVER_FORM, str(get_locale()))
    return render_template("receipt.html", passphrase=receipt.passphrase, channel=receipt.channel)
