# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the form and API paths share: sealing a form in server memory, checking a browser-sealed
upload, and filing the sealed report through the one intake path (whistle.server.intake)."""

from __future__ import annotations

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
from whistle.core.crypto.envelope import CASE_TAG_BYTES, SOURCE_KEY_BYTES, Binding
from whistle.core.enums import Channel, ItemKind, Language
from whistle.core.errors import WhistleError
from whistle.core.passphrase import SourceKeys
from whistle.server import intake
from whistle.server.state import get_state
from whistle.server.uploads import CiphertextSpool, EncryptingSpool
from whistle.server.web.source import bp


class UploadRejected(WhistleError):
    """A browser-sealed upload is malformed; carries the HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FormSealer:
    """A JavaScript-off post, ready to seal: its files were encrypted as they arrived
    (uploads.py), and :meth:`seal` puts the text and the files' keys into a v2 envelope bound to
    the case, sealed to the unit key in memory. Sealed as often as needed (the server-derived
    report path seals again under a fresh passphrase when one was taken)."""

    def __init__(self, kind: ItemKind, category: str, body: str,
                 refs: tuple[AttachmentRef, ...], spools: list[EncryptingSpool],
                 fields: tuple[tuple[str, str], ...] = ()) -> None:
        self.kind, self.category, self.spools = kind, category, spools
        # Answers to the questionnaire, already validated (Questionnaire.validate_answers).
        self._fields = fields
        # Browsers send textarea line breaks as CRLF in a form post but as LF to JavaScript; LF
        # everywhere makes both paths produce the same envelope.
        self._body, self._refs = body.replace("\r\n", "\n"), refs

    def envelope(self, binding: Binding) -> Envelope:
        """The plaintext envelope bound by ``binding`` (kept only as long as the caller keeps it)."""
        return Envelope(kind=self.kind.value, category=self.category, body=self._body,
                        attachments=self._refs, binding=binding, fields=self._fields)

    def seal(self, binding: Binding) -> bytes:
        """The envelope bound by ``binding``, sealed to the unit key."""
        return seal_envelope(self.envelope(binding), get_state().unit_key)

    def seal_for(self, keys: SourceKeys) -> bytes:
        """A report sealed for freshly derived keys: item 1 of the case they name."""
        return self.seal(Binding(case_tag=keys.case_tag, seq=1,
                                 source_public_key=keys.public_key_bytes))


def seal_form(kind: ItemKind, category: str, body: str, files: list[FileStorage],
              seq: int = 1, fields: tuple[tuple[str, str], ...] = ()) -> FormSealer:
    """Prepare a JavaScript-off post for sealing (:class:`FormSealer`), refusing with
    :class:`UploadRejected` an envelope the workstation would refuse as too large — checked here,
    before any argon2 derivation, with a stand-in binding of the same size (``seq``, the item's
    number, has as many digits as the real one)."""
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
    sealer = FormSealer(kind, category, body, tuple(refs), spools, fields)
    stand_in = Binding(case_tag=b"\x01" * CASE_TAG_BYTES, seq=seq,
                       source_public_key=b"\x01" * SOURCE_KEY_BYTES)
    if len(sealer.envelope(stand_in).to_bytes()) > limit:
        raise UploadRejected(413, "too_large", _("The file names are too long."))
    return sealer


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


def file_derived_report(sealer: FormSealer, channel: Channel, lang: str) -> intake.Receipt:
    """File a JavaScript-off report: the server draws a passphrase in ``lang`` (Spanish when it is
    not a language of the site), derives its keys under this instance's argon2 gate and seals the
    report bound to them (:func:`whistle.server.intake.file_derived_report`).

    Its failures are answered in one place each: :class:`whistle.core.passphrase.GateBusyError`
    by the app (503, busy), :class:`whistle.server.intake.IntakeError` by :func:`intake_failed`.
    """
    state = get_state()
    return intake.file_derived_report(state.sessions, state.gate, state.secrets.argon2,
                                      seal=sealer.seal_for, attachments=sealer.spools,
                                      channel=channel, language=Language.coerce(lang))


@bp.errorhandler(intake.IntakeError)
def intake_failed(exc: intake.IntakeError) -> ResponseReturnValue:
    """Nothing was stored: answered like any server fault (a page, or JSON under /api/)."""
    # The type only: the log must not carry anything of the request.
    current_app.logger.error("intake failed: %s", type(exc).__name__)
    return current_app.handle_http_exception(InternalServerError())
