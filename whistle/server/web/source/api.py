# SPDX-License-Identifier: AGPL-3.0-or-later
"""The JSON API used by the page's own script (JavaScript on: everything sealed in the browser)."""

from __future__ import annotations

from flask import jsonify, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import get_locale

from whistle.core.enums import Channel
from whistle.server import uploads
from whistle.server.config import LANGUAGES
from whistle.server.limits import submission_limits
from whistle.server.state import get_state
from whistle.server.uploads import UploadPolicy
from whistle.server.web.source import bp, common, receipt


@bp.get("/api/v1/unit-key")
def api_unit_key() -> ResponseReturnValue:
    key = get_state().unit_key
    return jsonify(public_key=key.to_base64(), fingerprint=key.fingerprint())


@bp.get("/api/v1/pow")
def api_pow() -> ResponseReturnValue:
    """A proof-of-work challenge for ``purpose`` (submit, login or message): docs/protocol.md."""
    from flask_babel import gettext as _

    from whistle.server import pow as proof

    purpose = request.args.get("purpose", "")
    if purpose not in proof.PURPOSES:
        return jsonify(error="bad_purpose", message=_("Unknown purpose.")), 400
    return jsonify(proof.issue(purpose))


@bp.errorhandler(common.UploadRejected)
def upload_rejected(exc: common.UploadRejected) -> ResponseReturnValue:
    """JSON for the API; the error page for a form (nothing was stored either way)."""
    if request.path.startswith("/api/"):
        return jsonify(error=exc.code, message=exc.message), exc.status
    return render_template("error.html", code=exc.status, message=exc.message), exc.status


@bp.post("/api/v1/reports")
@submission_limits
@uploads.accepts(UploadPolicy.CIPHERTEXT, quota="submit")
def api_submit() -> ResponseReturnValue:
    sealed, attachments = common.read_sealed_upload("report")
    # The passphrase is in the page's language: the script sends it as `lang`; without it (or
    # with a language the site does not have) the session's, as on the form path, not Spanish.
    lang = request.form.get("lang", "")
    if lang not in LANGUAGES:
        lang = str(get_locale())
    filed = common.file_report(sealed, attachments, Channel.BROWSER, lang)
    # The script shows the receipt on the page; its language links re-render it once each from
    # `receipt_url` (receipt.py), so switching language never loses the passphrase.
    ticket = receipt.receipt_shown(filed)
    return jsonify(passphrase=filed.passphrase, channel=filed.channel.value,
                   receipt_url=url_for("source.receipt", show=ticket)), 201
