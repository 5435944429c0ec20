# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the form and API paths share: sealing a form in server memory, checking a browser-sealed
upload, and filing the sealed report through the one intake path (whistle.server.intake)."""

from __future__ import annotations

from collections.abc import Sequence

from flask import current_app, request
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import InternalServerError

from whistle.core.crypto import (
    ENVELOPE_BLOCK,
    SEAL_OVERHEAD,
    AttachmentRef,
    Envelope,
    is_plausible_stream_length,
    seal_envelope,
)
from whistle.core.enums import Channel, ItemKind, Language
from whistle.core.errors import WhistleError
from whistle.server import intake
from whistle.server.state import get_state
from whistle.server.uploads import CiphertextSpool, EncryptingSpool
from whistle.server.web.source import bp


class UploadRejected(WhistleError):
    """A browser-sealed upload is malformed; carries the HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def seal_form(kind: ItemKind, category: str, body: str, files: list[FileStorage]
              ) -> tuple[bytes, list[EncryptingSpool]]:
    """Seal a JavaScript-off post: the files were encrypted as they arrived (uploads.py); the
    text and the files' keys go into an envelope sealed here, in memory."""
    state = get_state()
    limit = state.config.max_envelope_bytes
    # The same ceiling as a browser-sealed envelope (read_sealed_upload): file names come from
    # part headers of up to 2 MiB each, and an envelope the workstation refuses as too large
    # would block the whole bundle. Checked on the names first, before anything is built.
    if sum(len((f.filename or "").encode()) + len((f.mimetype or "").encode()) for f in files) > limit:
        raise UploadRejected(413, "too_large", _("The file names are too long."))
    spools: list[EncryptingSpool] = []
    refs: list[AttachmentRef] = []
    for storage in files:
        stream = storage.stream
        if not isinstance(stream, EncryptingSpool):
            # A part the stream factory did not seal must never be stored.
            raise RuntimeError("attachment was not sealed on arrival")
        stream.finish()
        if not storage.filename and stream.plaintext_size == 0:
            continue  # the browser's placeholder for "no file chosen"
        spools.append(stream)
        refs.append(AttachmentRef(name=storage.filename or "attachment", type=storage.mimetype or "",
                                  size=stream.plaintext_size, key=stream.key))
    # Browsers send textarea line breaks as CRLF in a form post but as LF to JavaScript; LF
    # everywhere makes both paths produce the same envelope.
    envelope = Envelope(kind=kind.value, category=category, body=body.replace("\r\n", "\n"),
                        attachments=tuple(refs))
    if len(envelope.to_bytes()) > limit:
        raise UploadRejected(413, "too_large", _("The file names are too long."))
    return seal_envelope(envelope, state.unit_key), spools


def read_sealed_upload(part: str) -> tuple[bytes, list[CiphertextSpool]]:
    """The sealed envelope part and the encrypted attachment parts of an API post, checked as
    far as the server can without the key; raise :class:`UploadRejected`."""
    state = get_state()
    if part in request.form:
        raise UploadRejected(400, f"bad_{part}", _("The encrypted text must be sent as a file part."))
    parts = request.files.getlist(part)
    if len(parts) != 1 or not isinstance(parts[0].stream, CiphertextSpool):
        raise UploadRejected(400, f"missing_{part}", _("The encrypted text is missing."))
    sealed_part = parts[0].stream
    if sealed_part.size > state.config.max_envelope_bytes + SEAL_OVERHEAD:
        raise UploadRejected(413, "too_large", _("The text is too large."))
    # A sealed envelope is a padded plaintext (a multiple of 1024 bytes) plus the seal overhead;
    # anything else is truncated or not an envelope at all.
    body_len = sealed_part.size - SEAL_OVERHEAD
    if body_len <= 0 or body_len % ENVELOPE_BLOCK:
        raise UploadRejected(400, f"bad_{part}", _("The encrypted text is truncated or malformed."))
    attachments: list[CiphertextSpool] = []
    for storage in request.files.getlist("attachment"):
        stream = storage.stream
        if not isinstance(stream, CiphertextSpool) or not is_plausible_stream_length(stream.size):
            raise UploadRejected(400, "bad_attachment", _("An attachment is not a valid encrypted file."))
        attachments.append(stream)
    if set(request.files) - {part, "attachment"}:
        raise UploadRejected(400, "bad_request", _("The request has unexpected parts."))
    return b"".join(sealed_part.iter_chunks()), attachments


def file_report(sealed: bytes, attachments: Sequence[intake.ChunkSource], channel: Channel,
                lang: str) -> intake.Receipt:
    """File a sealed report through the one intake path, with this instance's database and argon2
    gate; the passphrase is in ``lang`` (Spanish when it is not a language of the site).

    Its failures are answered in one place each: :class:`whistle.core.passphrase.GateBusyError`
    by the app (503, busy), :class:`whistle.server.intake.IntakeError` by :func:`intake_failed`.
    """
    state = get_state()
    return intake.file_report(state.sessions, state.gate, state.secrets.argon2,
                              sealed_envelope=sealed, attachments=attachments, channel=channel,
                              language=Language.coerce(lang))


@bp.errorhandler(intake.IntakeError)
def intake_failed(exc: intake.IntakeError) -> ResponseReturnValue:
    """Nothing was stored: answered like any server fault (a page, or JSON under /api/)."""
    # The type only: the log must not carry anything of the request.
    current_app.logger.error("intake failed: %s", type(exc).__name__)
    return current_app.handle_http_exception(InternalServerError())
