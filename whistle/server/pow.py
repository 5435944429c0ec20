# SPDX-License-Identifier: AGPL-3.0-or-later
"""Proof of work whose difficulty rises with load (docs/protocol.md section 7, docs/security.md).

Behind Tor nothing tells one client from another, so an expensive request is made to cost its
sender instead: before a report, a passphrase login or a follow-up message, the page's script
finds a nonce such that BLAKE2b-256(challenge || nonce as 8 bytes little-endian) starts with
``difficulty`` zero bits. Challenges are stateless (HMAC under a key derived from the instance
secrets); only spent ones are remembered, until they expire anyway. Difficulty is a low base
plus steps driven by the recent attempt rate on that purpose against its capacity.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
from typing import cast

from flask import current_app

from whistle.core.errors import WhistleError
from whistle.server.counters import MINUTE, CounterStore, boundary, now

PURPOSES = {"submit": 1, "login": 2, "message": 3}
VERSION = 1
# Difficulty in leading zero bits. 12 bits is ~4,096 hashes: a few milliseconds in a browser.
BASE_BITS = 12
# Each doubling of the attempt rate above half the capacity adds this many bits (4x the work).
STEP_BITS = 2
# The most a source is ever asked: 2^22 hashes, seconds with WebAssembly (docs/security.md).
MAX_BITS = 22
# A challenge issued at difficulty d is accepted while the current difficulty is <= d + GRACE:
# the load may rise a little while a source solves, but hoarded easy solutions go stale.
GRACE_BITS = 2
# Challenges live at least this long; the expiry is rounded up to a whole minute.
LIFETIME_SECONDS = 600
_RANDOM = 16
_MAC = 16
_BODY = 3 + 4 + _RANDOM  # version, purpose, difficulty, expiry (minutes since the epoch), random
CHALLENGE_BYTES = _BODY + _MAC
NONCE_BYTES = 8


class PowError(WhistleError):
    """A proof of work was sent but is not acceptable; ``code`` says why (docs/protocol.md)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def counters() -> CounterStore:
    """This app's counter store (created by limits.init_app)."""
    return cast(CounterStore, current_app.extensions["whistle_counters"])


def _mac_key() -> bytes:
    from whistle.server.state import get_state

    # Derived, not the Flask key itself: a MAC under this key reveals nothing about cookies.
    secret = get_state().secrets.flask_secret_key.encode()
    return hmac.new(secret, b"whistle proof-of-work challenge key v1", hashlib.sha256).digest()


def _mac(body: bytes) -> bytes:
    return hmac.new(_mac_key(), body, hashlib.sha256).digest()[:_MAC]


def leading_zero_bits(digest: bytes) -> int:
    """How many zero bits ``digest`` starts with (most significant bit of byte 0 first)."""
    bits = 0
    for byte in digest:
        if byte:
            return bits + 8 - byte.bit_length()
        bits += 8
    return bits


def pow_hash(challenge: bytes, nonce: int) -> bytes:
    """BLAKE2b-256 (libsodium's crypto_generichash, 32 bytes, no key) of challenge || nonce."""
    return hashlib.blake2b(challenge + nonce.to_bytes(NONCE_BYTES, "little"), digest_size=32).digest()


def solve(challenge: bytes, difficulty: int, start: int = 0) -> int:
    """The first nonce from ``start`` that meets ``difficulty`` (tests and docs/protocol.md)."""
    nonce = start
    while leading_zero_bits(pow_hash(challenge, nonce)) < difficulty:
        nonce += 1
    return nonce


def _capacity_per_minute(purpose: str) -> float:
    from limits import parse_many

    from whistle.server.state import get_state

    limits = get_state().config.limits
    items = parse_many(getattr(limits, f"{purpose}_capacity"))
    return min(item.amount * MINUTE / item.get_expiry() for item in items)


def attempt_rate(purpose: str) -> float:
    """Attempts admitted in the last minute, estimated from two whole-minute counters (the
    previous minute weighted by how much of it still lies within the last 60 seconds)."""
    at = now()
    minute = int(at // MINUTE)
    store = counters()
    current = store.get(f"rate:{purpose}:{minute}")
    previous = store.get(f"rate:{purpose}:{minute - 1}")
    elapsed = (at - minute * MINUTE) / MINUTE
    return previous * (1 - elapsed) + current


def record_attempt(purpose: str) -> None:
    """Count one admitted attempt; the counter outlives its minute by one more (for the estimate)."""
    minute = int(now() // MINUTE)
    counters().incr(f"rate:{purpose}:{minute}", (minute + 2) * MINUTE)


def difficulty(purpose: str) -> int:
    """BASE_BITS while the attempt rate is under half the capacity, then STEP_BITS more for each
    doubling above it, at most MAX_BITS."""
    half = _capacity_per_minute(purpose) / 2
    rate = attempt_rate(purpose)
    if rate <= half or half <= 0:
        return BASE_BITS
    steps = math.floor(math.log2(rate / half)) + 1
    return min(MAX_BITS, BASE_BITS + STEP_BITS * steps)


def issue(purpose: str) -> dict[str, object]:
    """A fresh challenge for ``purpose`` at the current difficulty (the JSON of GET /api/v1/pow)."""
    bits = difficulty(purpose)
    expires = boundary(now() + LIFETIME_SECONDS)
    body = (bytes([VERSION, PURPOSES[purpose], bits]) + (expires // MINUTE).to_bytes(4, "big")
            + secrets.token_bytes(_RANDOM))
    challenge = body + _mac(body)
    return {"challenge": base64.b64encode(challenge).decode("ascii"), "difficulty": bits,
            "expires_in": int(expires - now())}


def _parse(token: str) -> tuple[bytes, int]:
    encoded, sep, digits = token.strip().rpartition(".")
    if not sep or not digits.isascii() or not digits.isdigit() or len(digits) > 20:
        raise PowError("pow_malformed")
    nonce = int(digits)
    if nonce >= 1 << (8 * NONCE_BYTES):
        raise PowError("pow_malformed")
    try:
        challenge = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise PowError("pow_malformed") from None
    if len(challenge) != CHALLENGE_BYTES or challenge[0] != VERSION:
        raise PowError("pow_malformed")
    return challenge, nonce


def check(token: str, purpose: str) -> None:
    """Accept ``challenge.nonce`` for ``purpose`` once, or raise :class:`PowError`."""
    challenge, nonce = _parse(token)
    body, mac = challenge[:_BODY], challenge[_BODY:]
    if not hmac.compare_digest(mac, _mac(body)):
        raise PowError("pow_forged")
    if challenge[1] != PURPOSES[purpose]:
        raise PowError("pow_purpose")
    expires = int.from_bytes(challenge[3:7], "big") * MINUTE
    if now() >= expires:
        raise PowError("pow_expired")
    issued_bits = challenge[2]
    if leading_zero_bits(pow_hash(challenge, nonce)) < issued_bits:
        raise PowError("pow_unsolved")
    if difficulty(purpose) > issued_bits + GRACE_BITS:
        raise PowError("pow_stale")
    # Single use: the random part names the challenge; the entry dies when the challenge would.
    if not counters().add(f"pow:{challenge[7:_BODY].hex()}", expires):
        raise PowError("pow_reused")
