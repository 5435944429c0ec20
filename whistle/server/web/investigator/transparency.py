# SPDX-License-Identifier: AGPL-3.0-or-later
"""Administrators upload the transparency file (``whistle casebook publish``, docs/protocol.md
section 10); the public ``/transparencia`` page shows it. A refused file changes nothing and
says why in one line; an accepted one replaces the previous figures and is audited."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from whistle.core.transparency import MAX_BYTES, TransparencyError
from whistle.server import audit, transparency, uploads
from whistle.server.state import get_state
from whistle.server.uploads import CiphertextSpool, UploadPolicy
from whistle.server.web.investigator import bp
from whistle.server.web.investigator.auth import admin_required, current_investigator


@bp.route("/admin/transparency", methods=["GET", "POST"])
@admin_required
@uploads.accepts(UploadPolicy.CIPHERTEXT, fields=("figures",))
def transparency_upload() -> ResponseReturnValue:
    """Show what is published and take a new file."""
    state = get_state()
    current = transparency.published(state.config)
    if request.method == "GET":
        return render_template("investigator/transparency.html", current=current)
    upload = request.files.get("figures")
    if upload is None or not isinstance(upload.stream, CiphertextSpool):
        return render_template("investigator/transparency.html", current=current, refused=_(
            "Choose the file made with 'whistle casebook publish' on the workstation.")), 400
    if upload.stream.size > MAX_BYTES:
        abort(413)
    raw = b"".join(upload.stream.iter_chunks())
    try:
        figures = transparency.validate(state.config, raw)
    except TransparencyError as exc:
        # The reason is the reader's one line (English, as the file format is); the notice around
        # it is in the page's language.
        return render_template("investigator/transparency.html", current=current, refused=_(
            "The file was refused and the published figures did not change."), reason=str(exc)), 400
    with state.sessions.begin() as db:
        audit.record(db, current_investigator().name, audit.TRANSPARENCY_UPLOAD, None,
                     f"{figures.period_from}..{figures.period_to}")
        transparency.accept(state.config, raw)
    flash(_("The figures from %(start)s to %(end)s are now published.",
            start=figures.period_from, end=figures.period_to), "success")
    return redirect(url_for("investigator.transparency_upload"), 303)
