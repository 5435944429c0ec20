# SPDX-License-Identifier: AGPL-3.0-or-later
"""Attachments: served only as downloads, and previewed as plain text for text types.

A report's files are written by a stranger: an HTML or SVG file rendered by the browser would run
its scripts in the casebook's origin. So a download always goes out as
``application/octet-stream`` with ``Content-Disposition: attachment``, ``nosniff`` and a CSP
sandbox, whatever type the source declared; the preview is the file's first 256 KB decoded as
UTF-8 and shown, escaped, inside a page of the casebook's own.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, render_template, send_file

from whistle.workstation.casebook.web import book
from whistle.workstation.casebook.web.views import is_text
from whistle.workstation.names import safe_filename

bp = Blueprint("files", __name__, url_prefix="/attachment")

PREVIEW_BYTES = 256 * 1024


def _attachment(attachment_id: int):  # type: ignore[no-untyped-def]
    row = book().attachment(attachment_id)
    if row is None or not row["sha256"]:
        abort(404)
    return row


@bp.get("/<int:attachment_id>/download")
def download(attachment_id: int) -> Response:
    """The attachment's bytes as a download, never rendered inline."""
    row = _attachment(attachment_id)
    response = send_file(book().blob_path(row["sha256"]), mimetype="application/octet-stream",
                         as_attachment=True, download_name=safe_filename(row["name"]),
                         conditional=False, etag=False, max_age=0)
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/<int:attachment_id>/preview")
def preview(attachment_id: int) -> str:
    """The start of a text attachment, as text in a casebook page."""
    row = _attachment(attachment_id)
    if not is_text(row["type"], row["name"]):
        abort(404)
    with book().blob_path(row["sha256"]).open("rb") as fh:
        data = fh.read(PREVIEW_BYTES + 1)
    text = data[:PREVIEW_BYTES].decode("utf-8", "replace")
    return render_template("casebook/preview.html", attachment=row, text=text,
                           truncated=len(data) > PREVIEW_BYTES)
