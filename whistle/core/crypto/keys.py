# SPDX-License-Identifier: AGPL-3.0-or-later
"""Keys and the project's one text encoding: unit and source X25519 keys, fingerprints, the
passphrase-protected private key file (docs/protocol.md section 1)."""

from __future__ import annotations

import base64
import binascii
import json
import unicodedata
from pathlib import Path

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.pwhash
import nacl.secret
import nacl.utils
from nacl.public import PrivateKey, PublicKey

from whistle.core.crypto.errors import KeyFormatError, WrongPassphraseError

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
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise KeyFormatError(f"unit public key not found: {path}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFormatError(f"unit public key unreadable: {path}: {exc}") from exc
        lines = [ln.strip() for ln in text.splitlines()]
        keys = [ln for ln in lines if ln and not ln.startswith("#")]
        if len(keys) != 1:
            raise KeyFormatError(f"{path} must hold exactly one base64 key line, found {len(keys)}")
        try:
            return cls.from_base64(keys[0])
        except KeyFormatError as exc:
            raise KeyFormatError(f"{path}: malformed public key ({exc})") from exc

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
        digest = nacl.hash.blake2b(self.encode(), digest_size=16, encoder=nacl.encoding.RawEncoder)
        hexed = digest.hex().upper()
        return " ".join(hexed[i : i + 4] for i in range(0, 32, 4))

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
        """Serialise under a passphrase (argon2id + secretbox); see docs/protocol.md section 1."""
        if not passphrase:
            raise KeyFormatError("an empty passphrase cannot protect a private key")
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        box_key = nacl.pwhash.argon2id.kdf(
            32, _norm_key_passphrase(passphrase), salt, opslimit=opslimit, memlimit=memlimit
        )
        nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
        ciphertext = nacl.secret.SecretBox(box_key).encrypt(self.encode(), nonce).ciphertext
        doc = {
            "format": SECRET_KEY_FORMAT,
            "v": 1,
            "public_key": self.public_key.to_base64(),
            "kdf": "argon2id13",
            "opslimit": opslimit,
            "memlimit": memlimit,
            "salt": b64encode(salt),
            "nonce": b64encode(nonce),
            "ciphertext": b64encode(ciphertext),
        }
        return json.dumps(doc, indent=1) + "\n"

    @classmethod
    def from_encrypted_json(cls, text: str, passphrase: str) -> UnitSecretKey:
        """Open a private key file; raise :class:`WrongPassphraseError` on a wrong passphrase."""
        try:
            doc = json.loads(text)
            if doc.get("format") != SECRET_KEY_FORMAT or not is_version(doc.get("v"), 1):
                raise KeyFormatError("not a whistle private key file")
            if doc.get("kdf") != "argon2id13":
                raise KeyFormatError("unsupported key derivation")
            opslimit, memlimit = int(doc["opslimit"]), int(doc["memlimit"])
            salt = b64decode(doc["salt"], size=nacl.pwhash.argon2id.SALTBYTES)
            nonce = b64decode(doc["nonce"], size=nacl.secret.SecretBox.NONCE_SIZE)
            ciphertext = b64decode(doc["ciphertext"], size=32 + nacl.secret.SecretBox.MACBYTES)
            expected = UnitPublicKey.from_base64(doc["public_key"])
        # OverflowError: a cost of Infinity; RecursionError: deeply nested JSON.
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
            raise KeyFormatError(f"malformed private key file: {exc}") from exc
        # Bound the costs an attacker-supplied file could make us spend.
        if not (1 <= opslimit <= 64 and 8192 <= memlimit <= 4 * 1024**3):
            raise KeyFormatError("private key file asks for unreasonable argon2 costs")
        box_key = nacl.pwhash.argon2id.kdf(
            32, _norm_key_passphrase(passphrase), salt, opslimit=opslimit, memlimit=memlimit
        )
        try:
            raw = nacl.secret.SecretBox(box_key).decrypt(ciphertext, nonce)
        except nacl.exceptions.CryptoError as exc:
            raise WrongPassphraseError("wrong passphrase for this private key file") from exc
        key = cls.from_raw(raw)
        if key.public_key != expected:
            raise KeyFormatError("private key file is corrupt: public key does not match")
        return key

    @classmethod
    def load_encrypted(cls, path: Path, passphrase: str) -> UnitSecretKey:
        """Read and open a private key file from disk."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFormatError(f"cannot read private key file {path}: {exc}") from exc
        return cls.from_encrypted_json(text, passphrase)


def _norm_key_passphrase(passphrase: str) -> bytes:
    # NFC so that the same passphrase typed on two keyboards/OSes derives the same key.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


