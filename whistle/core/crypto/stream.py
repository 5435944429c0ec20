# SPDX-License-Identifier: AGPL-3.0-or-later
"""Attachment streams: secretstream XChaCha20-Poly1305 in 64 KiB chunks, encrypted and decrypted
incrementally so that a file of any size streams through (docs/protocol.md section 3)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO

import nacl.exceptions
from nacl import bindings as _sodium

from whistle.core.crypto.errors import CryptoError, KeyFormatError, StreamFormatError

CHUNK_SIZE = 64 * 1024
STREAM_HEADER_BYTES = _sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24
STREAM_ABYTES = _sodium.crypto_secretstream_xchacha20poly1305_ABYTES  # 17
STREAM_KEY_BYTES = _sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES  # 32
CIPHER_CHUNK_SIZE = CHUNK_SIZE + STREAM_ABYTES
TAG_MESSAGE = _sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = _sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL


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
