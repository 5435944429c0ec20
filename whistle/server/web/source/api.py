# SPDX-License-Identifier: AGPL-3.0-or-later
"""The JSON API used by the page's own script (JavaScript on: everything sealed in the browser)."""

from __future__ import annotations

from flask import jsonify, render_template, request
from flask.typing import ResponseReturnValue

from whistle.core.enums import Channel
from whistle.server import uploads
from whistle.server.limits import submission_limits
from whistle.server.state import get_state
from whistle.server.uploads import UploadPolicy
from whistle.server.web.source import bp, common


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
    receipt = common.file_report(sealed, attachments, Channel.BROWSER, request.form.get("lang", "es"))
    return jsonify(passphrase=receipt.passphrase, channel=receipt.channel.value), 201
