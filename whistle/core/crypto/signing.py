# SPDX-License-Identifier: AGPL-3.0-or-later
"""The unit's Ed25519 signing key: the unit signs its replies with it, so that the server (which
never holds a unit private key) and the source's page can tell a reply the unit wrote from one
anyone else sealed to the source's public key (docs/protocol.md section 1).

``keys/unit-sign.pub`` holds the public half in the same format as ``unit.pub``; its fingerprint is
computed the same way. The private half lives only in the unit's encrypted key file (keyfile.py).
"""

from __future__ import annotations

from pathlib import Path

import nacl.exceptions
from nacl.signing import SigningKey, VerifyKey

from whistle.core.crypto.errors import KeyFormatError, SignatureError
from whistle.core.crypto.keys import b64decode, b64encode, fingerprint, read_key_line

SIGNATURE_BYTES = 64


class UnitVerifyKey:
    """The public half of the unit's signing key: verifies the unit's detached signatures."""

    SIZE = 32

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != self.SIZE:
            raise KeyFormatError("a signing public key is exactly 32 bytes")
        self._key = VerifyKey(raw)

    @classmethod
    def from_base64(cls, text: str) -> UnitVerifyKey:
        """Parse one line of standard base64."""
        return cls(b64decode(text, size=cls.SIZE))

    @classmethod
    def load(cls, path: Path) -> UnitVerifyKey:
        """Read a ``unit-sign.pub`` file: one base64 line, ``#`` comments and blank lines ignored."""
        return cls.from_base64(read_key_line(path, "unit signing key"))

    def encode(self) -> bytes:
        """The 32 raw key bytes."""
        return bytes(self._key)

    def to_base64(self) -> str:
        """The key as standard base64, as written in ``unit-sign.pub``."""
        return b64encode(self.encode())

    def to_file_text(self) -> str:
        """The contents of a ``unit-sign.pub`` file, with the fingerprint as a comment."""
        return (f"# whistle unit signing key (Ed25519), fingerprint {self.fingerprint()}\n"
                f"{self.to_base64()}\n")

    def fingerprint(self) -> str:
        """BLAKE2b-128 of the key bytes as 8 groups of 4 uppercase hex digits (as ``unit.pub``)."""
        return fingerprint(self.encode())

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check a detached Ed25519 signature over ``message``; raise :class:`SignatureError`."""
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
            raise SignatureError("a signature is exactly 64 bytes")
        try:
            self._key.verify(message, signature)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise SignatureError("the signature does not verify with the unit's signing key") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnitVerifyKey) and self.encode() == other.encode()

    def __hash__(self) -> int:
        return hash(self.encode())

    def __repr__(self) -> str:
        return f"UnitVerifyKey({self.fingerprint()!r})"


class UnitSigningKey:
    """The unit's Ed25519 signing key (workstation only, inside the encrypted key file)."""

    SEED_SIZE = 32

    def __init__(self, key: SigningKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> UnitSigningKey:
        """A fresh random signing key from the CSPRNG."""
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> UnitSigningKey:
        """The key ``crypto_sign_seed_keypair`` derives from a 32-byte seed."""
        if not isinstance(seed, bytes) or len(seed) != cls.SEED_SIZE:
            raise KeyFormatError("a signing key seed is exactly 32 bytes")
        return cls(SigningKey(seed))

    def encode(self) -> bytes:
        """The 32-byte seed: what the key file stores. Handle with care."""
        return bytes(self._key)

    @property
    def verify_key(self) -> UnitVerifyKey:
        """The matching public key."""
        return UnitVerifyKey(bytes(self._key.verify_key))

    def sign(self, message: bytes) -> bytes:
        """A detached Ed25519 signature (``crypto_sign_detached``) of 64 bytes over ``message``."""
        return bytes(self._key.sign(message).signature)

    def __repr__(self) -> str:
        # Never print secret bytes, not even in a traceback.
        return f"UnitSigningKey(public={self.verify_key.fingerprint()!r})"
