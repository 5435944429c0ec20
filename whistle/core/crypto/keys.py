# SPDX-License-Identifier: AGPL-3.0-or-later
"""Keys and the project's one text encoding: unit and source X25519 keys, fingerprints, the
passphrase-protected private key file (docs/protocol.md section 1)."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import nacl.encoding
import nacl.hash
import nacl.pwhash
from nacl.public import PrivateKey, PublicKey

from whistle.core.crypto.errors import KeyFormatError

SECRET_KEY_FORMAT = "whistle-unit-secret-key"  # noqa: S105 - a format tag, not a secret


def is_version(value: object, expected: int) -> bool:
    """Whether a JSON ``v`` field is exactly the integer ``expected`` (JSON true and 1.0 are not)."""
    return type(value) is int and value == expected


def b64encode(data: bytes) -> str:
    """Encode bytes as standard base64 with padding: the project's one text encoding."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, *, size: int | None = None) -> bytes:
    """Decode strict standard base64; raise :class:`KeyFormatError` on bad input or size."""
    try:
        data = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError, AttributeError) as exc:
        raise KeyFormatError("not valid base64") from exc
    if size is not None and len(data) != size:
        raise KeyFormatError(f"expected {size} bytes, got {len(data)}")
    return data


def fingerprint(raw: bytes) -> str:
    """BLAKE2b-128 of public-key bytes as 8 groups of 4 uppercase hex digits (docs/protocol.md)."""
    digest = nacl.hash.blake2b(raw, digest_size=16, encoder=nacl.encoding.RawEncoder)
    hexed = digest.hex().upper()
    return " ".join(hexed[i : i + 4] for i in range(0, 32, 4))


def read_key_line(path: Path, what: str) -> str:
    """The one base64 line of a public key file (``unit.pub``, ``unit-sign.pub``): ``#`` comments
    and blank lines ignored; raise :class:`KeyFormatError` naming ``what`` and ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise KeyFormatError(f"{what} not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFormatError(f"{what} unreadable: {path}: {exc}") from exc
    lines = [ln.strip() for ln in text.splitlines()]
    keys = [ln for ln in lines if ln and not ln.startswith("#")]
    if len(keys) != 1:
        raise KeyFormatError(f"{path} must hold exactly one base64 key line, found {len(keys)}")
    try:
        b64decode(keys[0], size=32)
    except KeyFormatError as exc:
        raise KeyFormatError(f"{path}: malformed public key ({exc})") from exc
    return keys[0]


class UnitPublicKey:
    """The investigation unit's X25519 public key: reports are sealed to it."""

    SIZE = 32

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != self.SIZE:
            raise KeyFormatError("a public key is exactly 32 bytes")
        self._key = PublicKey(raw)

    @classmethod
    def from_base64(cls, text: str) -> UnitPublicKey:
        """Parse one line of standard base64."""
        return cls(b64decode(text, size=cls.SIZE))

    @classmethod
    def load(cls, path: Path) -> UnitPublicKey:
        """Read a ``unit.pub`` file: one base64 line, ``#`` comments and blank lines ignored."""
        return cls.from_base64(read_key_line(path, "unit public key"))

    def encode(self) -> bytes:
        """The 32 raw key bytes."""
        return bytes(self._key)

    def to_base64(self) -> str:
        """The key as standard base64, as written in ``unit.pub``."""
        return b64encode(self.encode())

    def to_file_text(self) -> str:
        """The contents of a ``unit.pub`` file, with the fingerprint as a comment."""
        return f"# whistle unit public key, fingerprint {self.fingerprint()}\n{self.to_base64()}\n"

    def fingerprint(self) -> str:
        """BLAKE2b-128 of the key bytes as 8 groups of 4 uppercase hex digits."""
        return fingerprint(self.encode())

    @property
    def nacl_key(self) -> PublicKey:
        """The underlying PyNaCl key."""
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnitPublicKey) and self.encode() == other.encode()

    def __hash__(self) -> int:
        return hash(self.encode())

    def __repr__(self) -> str:
        return f"UnitPublicKey({self.fingerprint()!r})"


class UnitSecretKey:
    """An X25519 secret key: the unit's (workstation only) or a source's (derived, in memory)."""

    def __init__(self, key: PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> UnitSecretKey:
        """A fresh random keypair from the CSPRNG."""
        return cls(PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> UnitSecretKey:
        """The keypair ``crypto_box_seed_keypair`` derives from a 32-byte seed."""
        if len(seed) != 32:
            raise KeyFormatError("a seed is exactly 32 bytes")
        return cls(PrivateKey.from_seed(seed))

    @classmethod
    def from_raw(cls, raw: bytes) -> UnitSecretKey:
        """A secret key from its 32 raw bytes."""
        if len(raw) != 32:
            raise KeyFormatError("a secret key is exactly 32 bytes")
        return cls(PrivateKey(raw))

    @property
    def public_key(self) -> UnitPublicKey:
        """The matching public key."""
        return UnitPublicKey(bytes(self._key.public_key))

    def encode(self) -> bytes:
        """The 32 raw secret bytes. Handle with care."""
        return bytes(self._key)

    @property
    def nacl_key(self) -> PrivateKey:
        """The underlying PyNaCl key."""
        return self._key

    def __repr__(self) -> str:
        # Never print secret bytes, not even in a traceback.
        return f"UnitSecretKey(public={self.public_key.fingerprint()!r})"

    def to_encrypted_json(
        self,
        passphrase: str,
        *,
        opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_MODERATE,
        memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_MODERATE,
    ) -> str:
        """Serialise alone (a version-1 key file) under a passphrase; docs/protocol.md section 1.
        :class:`whistle.core.crypto.keyfile.UnitKeyFile` writes the key with its signing key."""
        from whistle.core.crypto.keyfile import UnitKeyFile  # keyfile imports this module

        return UnitKeyFile(self).to_encrypted_json(passphrase, opslimit=opslimit, memlimit=memlimit)

    @classmethod
    def from_encrypted_json(cls, text: str, passphrase: str) -> UnitSecretKey:
        """Open a private key file (version 1 or 2) for its X25519 key; raise
        :class:`WrongPassphraseError` on a wrong passphrase, :class:`KeyFormatError` on a bad file."""
        from whistle.core.crypto.keyfile import UnitKeyFile

        return UnitKeyFile.from_encrypted_json(text, passphrase).secret_key

    @classmethod
    def load_encrypted(cls, path: Path, passphrase: str) -> UnitSecretKey:
        """Read and open a private key file from disk."""
        from whistle.core.crypto.keyfile import UnitKeyFile

        return UnitKeyFile.load_encrypted(path, passphrase).secret_key

