# SPDX-License-Identifier: AGPL-3.0-or-later
"""The JSON API used by the page's own script (JavaScript on: everything sealed in the browser)."""

from __future__ import annotations

from flask import current_app, jsonify, request
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from ..crypto import ENVELOPE_BLOCK, SEAL_OVERHEAD, is_plausible_stream_length
from ..uploads import CiphertextSpool
from . import bp, common


def _error(status: int, code: str, message: str) -> ResponseReturnValue:
    return jsonify(error=code, message=message), status


@bp.get("/api/v1/unit-key")
def api_unit_key() -> ResponseReturnValue:
    key = current_app.extensions["whistle"].unit_key
    return jsonify(public_key=key.to_base64(), fingerprint=key.fingerprint())


@bp.post("/api/v1/reports")
def api_submit() -> ResponseReturnValue:
    state = current_app.extensions["whistle"]
    if "report" in request.form:
        return _error(400, "bad_report", _("The report must be sent as a file part."))
    reports = request.files.getlist("report")
    if len(reports) != 1:
        return _error(400, "missing_report", _("The encrypted report is missing."))
    report = reports[0].stream
    if not isinstance(report, CiphertextSpool):
        return _error(400, "bad_report", _("The encrypted report could not be read."))
    if report.size > state.config.max_envelope_bytes + SEAL_OVERHEAD:
        return _error(413, "too_large", _("The report text is too large."))
    # A sealed envelope is a padded plaintext (a multiple of 1024 bytes) plus the seal overhead;
    # anything else is truncated or not an envelope at all.
    body_len = report.size - SEAL_OVERHEAD
    if body_len <= 0 or body_len % ENVELOPE_BLOCK:
        return _error(400, "bad_report", _("The encrypted report is truncated or malformed."))
    sealed = b"".join(report.iter_chunks())

    attachments: list[CiphertextSpool] = []
    for part in request.files.getlist("attachment"):
        stream = part.stream
        if not isinstance(stream, CiphertextSpool) or not is_plausible_stream_length(stream.size):
            return _error(400, "bad_attachment", _("An attachment is not a valid encrypted file."))
        attachments.append(stream)
    unexpected = set(request.files) - {"report", "attachment"}
    if unexpected:
        return _error(400, "bad_request", _("The request has unexpected parts."))

    lang = request.form.get("lang", "es")
    passphrase = common.finish_submission(sealed, attachments, "browser", lang)
    return jsonify(passphrase=passphrase, sealed_by="browser"), 201
