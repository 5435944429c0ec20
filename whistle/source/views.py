# SPDX-License-Identifier: AGPL-3.0-or-later
"""Public pages: landing, submission (JavaScript-off path seals on the server), receipt."""

from __future__ import annotations

from flask import current_app, render_template, request
from flask_babel import get_locale

from ..crypto import AttachmentRef, Envelope, seal_envelope
from ..uploads import EncryptingSpool
from . import bp, common


@bp.get("/")
def index() -> str:
    state = current_app.extensions["whistle"]
    return render_template("index.html", fingerprint=state.unit_key.fingerprint())


@bp.route("/submit", methods=["GET", "POST"])
def submit() -> tuple[str, int] | str:
    from .forms import SubmitForm

    state = current_app.extensions["whistle"]
    form = SubmitForm()
    if request.method == "GET" or not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template(
            "submit.html", form=form, fingerprint=state.unit_key.fingerprint(),
            max_upload_mb=state.config.max_upload_mb,
        ), status

    spools: list[EncryptingSpool] = []
    refs: list[AttachmentRef] = []
    for storage in request.files.getlist("attachments"):
        stream = storage.stream
        if not isinstance(stream, EncryptingSpool):
            # A part the stream factory did not seal must never be stored.
            raise RuntimeError("attachment was not sealed on arrival")
        stream.finish()
        if not storage.filename and stream.plaintext_size == 0:
            continue  # the browser's placeholder for "no file chosen"
        spools.append(stream)
        refs.append(AttachmentRef(
            name=storage.filename or "attachment",
            type=storage.mimetype or "",
            size=stream.plaintext_size,
            key=stream.key,
        ))
    # Browsers send textarea line breaks as CRLF in a form post but as LF to JavaScript; LF
    # everywhere makes both paths produce the same envelope.
    body = (form.body.data or "").replace("\r\n", "\n")
    envelope = Envelope(kind="report", category=form.category.data or "", body=body,
                        attachments=tuple(refs))
    sealed = seal_envelope(envelope, state.unit_key)
    # Drop the plaintext references as early as possible; the sealed bytes are all we keep.
    del envelope, refs, body
    form.body.data = ""
    passphrase = common.finish_submission(sealed, spools, "server", str(get_locale()))
    return render_template("receipt.html", passphrase=passphrase, sealed_by="server")
