# SPDX-License-Identifier: AGPL-3.0-or-later
"""The one exception hierarchy of :mod:`whistle.core.crypto`, rooted at :class:`CryptoError`."""

from __future__ import annotations

from whistle.core.errors import WhistleError


class CryptoError(WhistleError):
    """Base class of every error raised by :mod:`whistle.core.crypto`."""


class KeyFormatError(CryptoError):
    """A key or key file is malformed: wrong length, bad base64, unknown format."""


class DecryptionError(CryptoError):
    """Ciphertext did not authenticate: wrong key, or the bytes were altered."""


class WrongPassphraseError(DecryptionError):
    """The passphrase given for an encrypted private key file is wrong."""


class EnvelopeFormatError(CryptoError):
    """A decrypted envelope is not a valid version-1 envelope (see docs/protocol.md)."""


class StreamFormatError(DecryptionError):
    """An attachment stream is truncated, reordered, altered or of the wrong size."""


class SignatureError(CryptoError):
    """A detached signature did not verify: another key made it, or the signed bytes changed."""


class MissingSigningKeyError(KeyFormatError):
    """A private key file holds no signing key (a version-1 file, written before replies were
    signed); ``whistle keygen --add-signing-key`` adds one."""
