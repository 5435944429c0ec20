# SPDX-License-Identifier: AGPL-3.0-or-later
"""The JSON API used by the page's own script (JavaScript on: the browser derives the source's
keys and seals everything; the server runs no argon2 for it). docs/protocol.md section 5.

What the script needs to derive as the server would (``/api/v1/params``, the word lists), the
unit's keys to seal to and to check replies with, and filing a report under the keys the browser
derived. The login with the browser-derived login key is in followup.py, beside the form login.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import secrets

import nacl.exceptions
from flask import Response, abort, jsonify, make_response, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from nacl.bindings import crypto_scalarmult

from whistle.core import passphrase
from whistle.core.enums import Channel, Language
from whistle.server import intake, uploads
from whistle.server.limits import submission_limits
from whistle.server.state import get_state
from whistle.server.uploads import UploadPolicy
from whistle.server.web.source import bp, common

# docs/protocol.md section 4: the keyed BLAKE2b message of the case tag, for the browser.
CASE_TAG_CONTEXT = "whistle-case-tag-v2"
# libsodium's name for argon2id version 1.3 (crypto_pwhash_ALG_ARGON2ID13).
ARGON2_ALG = "argon2id13"
# How long a browser may keep the parameters and a word list: they change only with a new
# instance secret (never in practice) or a new word list (a release).
PARAMS_MAX_AGE = 3600
WORDLIST_MAX_AGE = 86400
KEY_BYTES = 32
# A key field's value: 32 bytes as canonical padded standard base64 (44 characters).
KEY_FIELD_CHARS = 44


@bp.get("/api/v1/unit-key")
def api_unit_key() -> ResponseReturnValue:
    """The unit's public key (to seal to) and signing key (to check replies with), with their
    fingerprints: the page's script compares both with the ones printed on the page."""
    state = get_state()
    key, sign = state.unit_key, state.unit_sign_key
    return jsonify(public_key=key.to_base64(), fingerprint=key.fingerprint(),
                   signing_public_key=sign.to_base64(), signing_fingerprint=sign.fingerprint())


@bp.get("/api/v1/pow")
def api_pow() -> ResponseReturnValue:
    """A proof-of-work challenge for ``purpose`` (submit, login or message): docs/protocol.md."""
    from whistle.server import pow as proof

    purpose = request.args.get("purpose", "")
    if purpose not in proof.PURPOSES:
        return jsonify(error="bad_purpose", message=_("Unknown purpose.")), 400
    return jsonify(proof.issue(purpose))


@functools.cache
def wordlist_bytes(lang: str) -> bytes:
    """The word list for ``lang`` as ``/api/v1/wordlist/<lang>`` serves it: one word per line,
    each ending in LF, in list order (the order the passphrase's words are drawn from)."""
    return "".join(word + "\n" for word in passphrase.wordlist(lang)).encode("utf-8")


def _cacheable(response: Response, max_age: int) -> Response:
    # Public data, the same for every visitor: the one kind of answer a browser may keep
    # (security.py leaves an explicit "public" Cache-Control alone).
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    return response


@bp.get("/api/v1/params")
def api_params() -> ResponseReturnValue:
    """Everything the browser needs to derive a source's keys exactly as the server would: the
    instance's argon2id salt and costs (libsodium ``crypto_pwhash`` terms), the case tag's
    context, and per language the passphrase length and the word list's size and SHA-256."""
    params = get_state().secrets.argon2
    if params.parallelism != 1:
        # libsodium's argon2id has one lane: a browser could not derive what the server does.
        raise RuntimeError("the browser derivation needs argon2 parallelism 1")
    lists = {}
    for lang in Language:
        data = wordlist_bytes(lang.value)
        lists[lang.value] = {"words": passphrase.word_count(lang.value),
                             "list_size": len(passphrase.wordlist(lang.value)),
                             "sha256": hashlib.sha256(data).hexdigest(),
                             "url": url_for("source.api_wordlist", lang=lang.value)}
    return _cacheable(jsonify({
        "v": 2,
        "argon2": {"alg": ARGON2_ALG, "salt": base64.b64encode(params.salt).decode("ascii"),
                   "opslimit": params.time_cost, "memlimit": params.memory_cost_kib * 1024,
                   "bytes": 64},
        "case_tag_context": CASE_TAG_CONTEXT,
        "passphrase": lists,
    }), PARAMS_MAX_AGE)


@bp.get("/api/v1/wordlist/<lang>")
def api_wordlist(lang: str) -> ResponseReturnValue:
    """A passphrase word list as plain text (its SHA-256 is in ``/api/v1/params``)."""
    if lang not in tuple(Language):
        abort(404)
    response = make_response(wordlist_bytes(lang))
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    return _cacheable(response, WORDLIST_MAX_AGE)


def decode_key(value: object) -> bytes | None:
    """A 32-byte value sent as canonical padded standard base64, or None when it is anything
    else (not text, bad base64, another length, a non-canonical encoding, all zeros)."""
    if not isinstance(value, str) or len(value) != KEY_FIELD_CHARS:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    # Canonical: the one encoding of these bytes (no stray bits in the last character).
    if len(raw) != KEY_BYTES or base64.b64encode(raw).decode("ascii") != value or not any(raw):
        return None
    return raw


def is_usable_public_key(raw: bytes) -> bool:
    """Whether replies could be sealed to ``raw``: an X25519 point of small order (zero, one and
    the like) gives a shared secret of zeros, which libsodium refuses."""
    try:
        crypto_scalarmult(secrets.token_bytes(32), raw)
    except nacl.exceptions.RuntimeError:
        return False
    return True


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
    """File a report the browser sealed, under the login hash and public key it derived from
    the passphrase it drew: no argon2 here, and no passphrase in the answer (the server never
    had it). A login hash already stored is 409: the browser draws a new passphrase."""
    sealed, attachments = common.read_sealed_upload("report")
    fields = ("login_hash", "source_public_key")
    if any(name not in request.form for name in fields):
        raise common.UploadRejected(400, "missing_keys", _(
            "The report could not be sent: the keys made from your passphrase are missing."))
    login_hash, public_key = (decode_key(request.form.get(name)) for name in fields)
    if login_hash is None or public_key is None or not is_usable_public_key(public_key):
        raise common.UploadRejected(400, "bad_keys", _(
            "The report could not be sent: the keys made from your passphrase are not valid."))
    state = get_state()
    try:
        intake.file_report(state.sessions, login_hash=login_hash, source_public_key=public_key,
                           sealed_envelope=sealed, attachments=attachments,
                           channel=Channel.BROWSER)
    except intake.LoginTakenError:
        raise common.UploadRejected(409, "passphrase_taken", _(
            "This passphrase is already in use. A new one is being made.")) from None
    return jsonify(ok=True, channel=Channel.BROWSER.value), 201
