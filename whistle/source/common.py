# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the form and the API share: issuing the passphrase and storing the sealed report."""

from __future__ import annotations

from collections.abc import Sequence

from flask import abort, current_app
from sqlalchemy.exc import IntegrityError

from ..passphrase import GateBusyError
from ..submissions import ChunkSource, is_duplicate_login, new_passphrase, store_report


def finish_submission(
    sealed: bytes, attachments: Sequence[ChunkSource], sealed_by: str, lang: str
) -> str:
    """Issue a passphrase, store the report under it; return the passphrase (shown once)."""
    state = current_app.extensions["whistle"]
    lang = lang if lang in ("es", "en") else "es"
    for _attempt in range(3):
        try:
            phrase, keys = new_passphrase(state.gate, state.secrets.argon2, lang)
        except GateBusyError:
            abort(503)
        try:
            store_report(state.sessions, keys=keys, sealed_envelope=sealed,
                         attachments=attachments, sealed_by=sealed_by)
        except IntegrityError as exc:
            if is_duplicate_login(exc):
                continue
            raise
        return phrase
    abort(500)
