# SPDX-License-Identifier: AGPL-3.0-or-later
"""Cryptography for whistle, on PyNaCl (libsodium).

One fixed encoding (standard base64 with padding), small typed key objects and one exception
hierarchy rooted at :class:`CryptoError`. Formats are specified in ``docs/protocol.md``; the
submodules are ``keys``, ``signing`` (the unit's Ed25519 reply-signing key), ``keyfile`` (the
encrypted private key file), ``envelope``, ``stream`` and ``errors``.

This package imports no Flask and touches no database: the offline workstation uses it as is.
"""

from __future__ import annotations

from whistle.core.crypto.envelope import (
    BOUND_ENVELOPE_VERSION,
    BOUND_REPLY_VERSION,
    CASE_TAG_BYTES,
    ENVELOPE_BLOCK,
    ENVELOPE_VERSION,
    KINDS,
    MAX_BODY_CHARS,
    SEAL_OVERHEAD,
    SIGNED_REPLY_VERSION,
    AttachmentRef,
    Binding,
    Envelope,
    open_envelope,
    seal_envelope,
)
from whistle.core.crypto.errors import (
    CryptoError,
    DecryptionError,
    EnvelopeFormatError,
    KeyFormatError,
    MissingSigningKeyError,
    SignatureError,
    StreamFormatError,
    WrongPassphraseError,
)
from whistle.core.crypto.keyfile import UnitKeyFile
from whistle.core.crypto.keys import (
    SECRET_KEY_FORMAT,
    UnitPublicKey,
    UnitSecretKey,
    b64decode,
    b64encode,
    fingerprint,
    is_version,
)
from whistle.core.crypto.signing import SIGNATURE_BYTES, UnitSigningKey, UnitVerifyKey
from whistle.core.crypto.stream import (
    CHUNK_SIZE,
    CIPHER_CHUNK_SIZE,
    STREAM_ABYTES,
    STREAM_HEADER_BYTES,
    STREAM_KEY_BYTES,
    TAG_FINAL,
    TAG_MESSAGE,
    StreamEncryptor,
    decrypt_stream,
    encrypt_stream,
    is_plausible_stream_length,
    iter_decrypt,
    new_stream_key,
    random_id,
    stream_ciphertext_length,
)

__all__ = [
    "CryptoError",
    "KeyFormatError",
    "DecryptionError",
    "WrongPassphraseError",
    "EnvelopeFormatError",
    "StreamFormatError",
    "SignatureError",
    "MissingSigningKeyError",
    "UnitPublicKey",
    "UnitSecretKey",
    "UnitKeyFile",
    "UnitSigningKey",
    "UnitVerifyKey",
    "SIGNATURE_BYTES",
    "fingerprint",
    "AttachmentRef",
    "Binding",
    "Envelope",
    "seal_envelope",
    "open_envelope",
    "new_stream_key",
    "StreamEncryptor",
    "encrypt_stream",
    "decrypt_stream",
    "is_plausible_stream_length",
    "stream_ciphertext_length",
    "b64encode",
    "b64decode",
    "is_version",
    "iter_decrypt",
    "random_id",
    "ENVELOPE_BLOCK",
    "ENVELOPE_VERSION",
    "BOUND_ENVELOPE_VERSION",
    "BOUND_REPLY_VERSION",
    "SIGNED_REPLY_VERSION",
    "CASE_TAG_BYTES",
    "KINDS",
    "MAX_BODY_CHARS",
    "SEAL_OVERHEAD",
    "SECRET_KEY_FORMAT",
    "CHUNK_SIZE",
    "CIPHER_CHUNK_SIZE",
    "STREAM_ABYTES",
    "STREAM_HEADER_BYTES",
    "STREAM_KEY_BYTES",
    "TAG_FINAL",
    "TAG_MESSAGE",
]
