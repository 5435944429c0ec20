# SPDX-License-Identifier: AGPL-3.0-or-later
"""The unit's passphrase-protected private key file (docs/protocol.md section 1).

Version 1 holds the X25519 unit key; version 2 holds it together with the unit's Ed25519 signing
key (one passphrase, one file). Both versions load; a version-1 file simply has no signing key,
and whatever needs one (``whistle reply``) says how to add it, rather than deriving one silently.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from whistle.core.crypto.errors import KeyFormatError, MissingSigningKeyError, WrongPassphraseError
from whistle.core.crypto.keys import (
    SECRET_KEY_FORMAT,
    UnitPublicKey,
    UnitSecretKey,
    b64decode,
    b64encode,
    is_version,
)
from whistle.core.crypto.signing import UnitSigningKey, UnitVerifyKey


@dataclass(frozen=True)
class UnitKeyFile:
    """What a private key file holds: the unit's X25519 key and (version 2) its signing key."""

    secret_key: UnitSecretKey
    signing_key: UnitSigningKey | None = None

    def require_signing_key(self) -> UnitSigningKey:
        """The signing key; raise :class:`MissingSigningKeyError` for a version-1 file."""
        if self.signing_key is None:
            raise MissingSigningKeyError("this private key file has no signing key")
        return self.signing_key

    def to_encrypted_json(
        self,
        passphrase: str,
        *,
        opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_MODERATE,
        memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_MODERATE,
    ) -> str:
        """Serialise under a passphrase (argon2id + secretbox): version 2 with a signing key,
        version 1 without one."""
        if not passphrase:
            raise KeyFormatError("an empty passphrase cannot protect a private key")
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        box_key = nacl.pwhash.argon2id.kdf(
            32, _norm_key_passphrase(passphrase), salt, opslimit=opslimit, memlimit=memlimit
        )
        nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
        secret = self.secret_key.encode()
        doc: dict[str, object] = {"format": SECRET_KEY_FORMAT, "v": 1,
                                  "public_key": self.secret_key.public_key.to_base64()}
        if self.signing_key is not None:
            # Version 2: the secretbox holds the X25519 secret key then the Ed25519 seed.
            secret += self.signing_key.encode()
            doc["v"] = 2
            doc["signing_public_key"] = self.signing_key.verify_key.to_base64()
        ciphertext = nacl.secret.SecretBox(box_key).encrypt(secret, nonce).ciphertext
        doc |= {"kdf": "argon2id13", "opslimit": opslimit, "memlimit": memlimit,
                "salt": b64encode(salt), "nonce": b64encode(nonce), "ciphertext": b64encode(ciphertext)}
        return json.dumps(doc, indent=1) + "\n"

    @classmethod
    def from_encrypted_json(cls, text: str, passphrase: str) -> UnitKeyFile:
        """Open a private key file of version 1 or 2; raise :class:`WrongPassphraseError` on a
        wrong passphrase, :class:`KeyFormatError` on anything malformed."""
        try:
            doc = json.loads(text)
            if doc.get("format") != SECRET_KEY_FORMAT or not (
                    is_version(doc.get("v"), 1) or is_version(doc.get("v"), 2)):
                raise KeyFormatError("not a whistle private key file")
            signed = doc["v"] == 2
            if doc.get("kdf") != "argon2id13":
                raise KeyFormatError("unsupported key derivation")
            opslimit, memlimit = int(doc["opslimit"]), int(doc["memlimit"])
            salt = b64decode(doc["salt"], size=nacl.pwhash.argon2id.SALTBYTES)
            nonce = b64decode(doc["nonce"], size=nacl.secret.SecretBox.NONCE_SIZE)
            plain_size = 64 if signed else 32
            ciphertext = b64decode(doc["ciphertext"], size=plain_size + nacl.secret.SecretBox.MACBYTES)
            expected = UnitPublicKey.from_base64(doc["public_key"])
            expected_sign = UnitVerifyKey.from_base64(doc["signing_public_key"]) if signed else None
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
        key = UnitSecretKey.from_raw(raw[:32])
        if key.public_key != expected:
            raise KeyFormatError("private key file is corrupt: public key does not match")
        signing = UnitSigningKey.from_seed(raw[32:]) if signed else None
        if signing is not None and signing.verify_key != expected_sign:
            raise KeyFormatError("private key file is corrupt: signing public key does not match")
        return cls(key, signing)

    @classmethod
    def load_encrypted(cls, path: Path, passphrase: str) -> UnitKeyFile:
        """Read and open a private key file from disk."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFormatError(f"cannot read private key file {path}: {exc}") from exc
        return cls.from_encrypted_json(text, passphrase)


def _norm_key_passphrase(passphrase: str) -> bytes:
    # NFC so that the same passphrase typed on two keyboards/OSes derives the same key.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")
