# SPDX-License-Identifier: AGPL-3.0-or-later
"""Cryptography for whistle, on PyNaCl (libsodium).

One fixed encoding (standard base64 with padding), small typed key objects and one exception
hierarchy rooted at :class:`CryptoError`. Formats are specified in ``docs/protocol.md``.

This module imports no Flask and touches no database: the offline workstation uses it as is.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import nacl.exceptions
import nacl.hash
import nacl.pwhash
import nacl.secret
import nacl.utils
from nacl import bindings as _sodium
from nacl.public import PrivateKey, PublicKey, SealedBox

__all__ = [
    "CryptoError",
    "KeyFormatError",
    "DecryptionError",
    "WrongPassphraseError",
    "EnvelopeFormatError",
    "StreamFormatError",
    "UnitPublicKey",
    "UnitSecretKey",
    "AttachmentRef",
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
]

ENVELOPE_VERSION = 1
ENVELOPE_BLOCK = 1024
SEAL_OVERHEAD = _sodium.crypto_box_SEALBYTES  # 48
MAX_BODY_CHARS = 100_000
CHUNK_SIZE = 64 * 1024
STREAM_HEADER_BYTES = _sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24
STREAM_ABYTES = _sodium.crypto_secretstream_xchacha20poly1305_ABYTES  # 17
STREAM_KEY_BYTES = _sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES  # 32
CIPHER_CHUNK_SIZE = CHUNK_SIZE + STREAM_ABYTES
TAG_MESSAGE = _sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = _sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
SECRET_KEY_FORMAT = "whistle-unit-secret-key"  # noqa: S105 - a format tag, not a secret
KINDS = ("report", "message", "reply")


class CryptoError(Exception):
    """Base class of every error raised by :mod:`whistle.crypto`."""


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
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
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


@dataclass(frozen=True)
class AttachmentRef:
    """What the envelope says about one attachment: its name, type, size and stream key."""

    name: str
    type: str
    size: int
    key: bytes = field(repr=False)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "size": self.size, "key": b64encode(self.key)}


@dataclass(frozen=True)
class Envelope:
    """A decrypted report, follow-up message or reply (docs/protocol.md section 2)."""

    kind: str
    body: str
    category: str = ""
    attachments: tuple[AttachmentRef, ...] = ()

    def to_bytes(self) -> bytes:
        """Compact JSON in protocol key order, padded with spaces to a multiple of 1024 bytes."""
        if self.kind not in KINDS:
            raise EnvelopeFormatError(f"unknown envelope kind {self.kind!r}")
        body = unicodedata.normalize("NFC", self.body)
        if len(body) > MAX_BODY_CHARS:
            raise EnvelopeFormatError(f"text longer than {MAX_BODY_CHARS} characters")
        doc: dict[str, object] = {"v": ENVELOPE_VERSION, "kind": self.kind}
        if self.kind == "reply":
            if self.attachments or self.category:
                raise EnvelopeFormatError("a reply carries neither category nor attachments")
            doc["body"] = body
        else:
            doc["category"] = self.category
            doc["body"] = body
            doc["attachments"] = [a.to_json() for a in self.attachments]
        doc["pad"] = ""
        raw = _dumps(doc)
        doc["pad"] = " " * (-len(raw) % ENVELOPE_BLOCK)
        return _dumps(doc)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        """Parse and validate a decrypted envelope; raise :class:`EnvelopeFormatError`."""
        if len(raw) == 0 or len(raw) % ENVELOPE_BLOCK:
            raise EnvelopeFormatError("envelope length is not a multiple of 1024 bytes")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise EnvelopeFormatError("envelope is not UTF-8 JSON") from exc
        if not isinstance(doc, dict) or not is_version(doc.get("v"), ENVELOPE_VERSION):
            raise EnvelopeFormatError("not a version-1 envelope")
        kind = doc.get("kind")
        expected = ["v", "kind", "body", "pad"] if kind == "reply" else [
            "v", "kind", "category", "body", "attachments", "pad"]
        if kind not in KINDS or sorted(doc) != sorted(expected):
            raise EnvelopeFormatError(f"envelope fields do not match kind {kind!r}")
        body, pad = doc["body"], doc["pad"]
        if not isinstance(body, str) or not isinstance(pad, str) or pad.strip(" "):
            raise EnvelopeFormatError("body and pad must be strings; pad only spaces")
        if kind == "reply":
            return cls(kind=kind, body=body)
        category, atts = doc["category"], doc["attachments"]
        if not isinstance(category, str) or not isinstance(atts, list):
            raise EnvelopeFormatError("category must be a string and attachments a list")
        return cls(kind=kind, body=body, category=category,
                   attachments=tuple(_parse_attachment(a) for a in atts))


def _parse_attachment(item: object) -> AttachmentRef:
    if not isinstance(item, dict) or sorted(item) != ["key", "name", "size", "type"]:
        raise EnvelopeFormatError("attachment entry must have name, type, size, key")
    name, mime, size, key = item["name"], item["type"], item["size"], item["key"]
    if not isinstance(name, str) or not isinstance(mime, str):
        raise EnvelopeFormatError("attachment name and type must be strings")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise EnvelopeFormatError("attachment size must be a non-negative integer")
    if not isinstance(key, str):
        raise EnvelopeFormatError("attachment key must be base64 text")
    try:
        raw = b64decode(key, size=STREAM_KEY_BYTES)
    except KeyFormatError as exc:
        raise EnvelopeFormatError(f"attachment key: {exc}") from exc
    return AttachmentRef(name=name, type=mime, size=size, key=raw)


def _dumps(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def seal_envelope(envelope: Envelope, recipient: UnitPublicKey) -> bytes:
    """Serialise, pad and seal an envelope to ``recipient`` with ``crypto_box_seal``."""
    return SealedBox(recipient.nacl_key).encrypt(envelope.to_bytes())


def open_envelope(sealed: bytes, secret_key: UnitSecretKey) -> Envelope:
    """Open a sealed envelope; raise :class:`DecryptionError` or :class:`EnvelopeFormatError`."""
    try:
        raw = SealedBox(secret_key.nacl_key).decrypt(sealed)
    except (nacl.exceptions.CryptoError, TypeError, ValueError) as exc:
        raise DecryptionError("envelope does not open with this key (wrong key or altered)") from exc
    return Envelope.from_bytes(raw)


def new_stream_key() -> bytes:
    """A fresh random 32-byte attachment key."""
    return _sodium.crypto_secretstream_xchacha20poly1305_keygen()


class StreamEncryptor:
    """Incremental secretstream encryption: feed plaintext in any pieces, get ciphertext out.

    Holds at most one 64 KiB chunk of plaintext, so a file of any size streams through it.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != STREAM_KEY_BYTES:
            raise KeyFormatError("a stream key is exactly 32 bytes")
        self._state = _sodium.crypto_secretstream_xchacha20poly1305_state()
        self.header = _sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        self._buffer = bytearray()
        self.plaintext_size = 0
        self._finished = False

    def update(self, data: bytes) -> bytes:
        """Absorb ``data``; return the ciphertext of every chunk completed so far."""
        if self._finished:
            raise CryptoError("stream already finished")
        self.plaintext_size += len(data)
        self._buffer += data
        out = bytearray()
        # Full chunks go out at once; the remainder (0 to 65,535 bytes) becomes the FINAL chunk,
        # exactly as the browser's encryptor does, so both produce the same lengths.
        while len(self._buffer) >= CHUNK_SIZE:
            chunk = bytes(self._buffer[:CHUNK_SIZE])
            del self._buffer[:CHUNK_SIZE]
            out += _sodium.crypto_secretstream_xchacha20poly1305_push(self._state, chunk, None, TAG_MESSAGE)
        return bytes(out)

    def finish(self) -> bytes:
        """Encrypt what is buffered as the FINAL chunk."""
        if self._finished:
            raise CryptoError("stream already finished")
        self._finished = True
        chunk = bytes(self._buffer)
        self._buffer.clear()
        return _sodium.crypto_secretstream_xchacha20poly1305_push(self._state, chunk, None, TAG_FINAL)


def encrypt_stream(src: IO[bytes], dst: IO[bytes], key: bytes) -> int:
    """Encrypt ``src`` into ``dst`` chunk by chunk; return the plaintext size."""
    enc = StreamEncryptor(key)
    dst.write(enc.header)
    while piece := src.read(CHUNK_SIZE):
        dst.write(enc.update(piece))
    dst.write(enc.finish())
    return enc.plaintext_size


def iter_decrypt(chunks: Iterable[bytes], key: bytes) -> Iterator[bytes]:
    """Decrypt a stream given as ciphertext pieces of any size; yield plaintext chunks.

    Raises :class:`StreamFormatError` on a truncated, altered or over-long stream.
    """
    if len(key) != STREAM_KEY_BYTES:
        raise KeyFormatError("a stream key is exactly 32 bytes")
    buf = bytearray()
    state = None
    final = False
    for piece in chunks:
        buf += piece
        if state is None:
            if len(buf) < STREAM_HEADER_BYTES:
                continue
            state = _sodium.crypto_secretstream_xchacha20poly1305_state()
            header = bytes(buf[:STREAM_HEADER_BYTES])
            del buf[:STREAM_HEADER_BYTES]
            _sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
        # A full-size chunk is only known not to be the last once more bytes follow it.
        while len(buf) > CIPHER_CHUNK_SIZE:
            if final:
                raise StreamFormatError("data after the FINAL chunk")
            chunk = bytes(buf[:CIPHER_CHUNK_SIZE])
            del buf[:CIPHER_CHUNK_SIZE]
            plain, tag = _pull(state, chunk)
            if tag == TAG_FINAL:
                final = True
                if buf:
                    raise StreamFormatError("data after the FINAL chunk")
            yield plain
    if state is None:
        raise StreamFormatError("stream shorter than its header")
    if final:
        if buf:
            raise StreamFormatError("data after the FINAL chunk")
        return
    if len(buf) < STREAM_ABYTES:
        raise StreamFormatError("stream truncated")
    plain, tag = _pull(state, bytes(buf))
    if tag != TAG_FINAL:
        raise StreamFormatError("stream truncated: no FINAL chunk")
    yield plain


def _pull(state: _sodium.crypto_secretstream_xchacha20poly1305_state, chunk: bytes) -> tuple[bytes, int]:
    try:
        plain, tag = _sodium.crypto_secretstream_xchacha20poly1305_pull(state, chunk, None)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise StreamFormatError("attachment chunk does not authenticate (wrong key or altered)") from exc
    return plain, tag


def decrypt_stream(
    src: IO[bytes],
    dst: IO[bytes],
    key: bytes,
    expected_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Decrypt a whole stream from ``src`` into ``dst``; return the plaintext size.

    ``progress`` is called with the number of ciphertext bytes consumed per step. Raises
    :class:`StreamFormatError` when the stream is damaged or its size differs from
    ``expected_size``; ``dst`` may then hold a prefix, so callers write to a temporary file.
    """

    def pieces() -> Iterator[bytes]:
        while piece := src.read(CIPHER_CHUNK_SIZE * 4):
            if progress is not None:
                progress(len(piece))
            yield piece

    total = 0
    for plain in iter_decrypt(pieces(), key):
        total += len(plain)
        if expected_size is not None and total > expected_size:
            raise StreamFormatError("attachment longer than the envelope says")
        dst.write(plain)
    if expected_size is not None and total != expected_size:
        raise StreamFormatError("attachment size differs from the envelope")
    return total


def stream_ciphertext_length(plaintext_size: int) -> int:
    """Ciphertext length this module's encryptor produces for ``plaintext_size`` bytes."""
    full, rest = divmod(plaintext_size, CHUNK_SIZE)
    return STREAM_HEADER_BYTES + full * CIPHER_CHUNK_SIZE + rest + STREAM_ABYTES


def is_plausible_stream_length(n: int) -> bool:
    """Whether ``n`` bytes could be a secretstream of 64 KiB chunks (checked without the key)."""
    if n < STREAM_HEADER_BYTES + STREAM_ABYTES:
        return False
    rest = (n - STREAM_HEADER_BYTES) % CIPHER_CHUNK_SIZE
    return rest == 0 or rest >= STREAM_ABYTES


def random_id(nbytes: int = 8) -> str:
    """A random hex identifier (for reports and items): reveals nothing about order or time."""
    return os.urandom(nbytes).hex()
