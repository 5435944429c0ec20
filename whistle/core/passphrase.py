# SPDX-License-Identifier: AGPL-3.0-or-later
"""Receipt passphrases: generation, normalisation and the one argon2id derivation.

A passphrase is 7 words from the ``diceware`` package's lists (Spanish: 8,192 words, 91 bits;
English EFF: 7,776 words, 90.3 bits). One argon2id derivation with the instance-wide salt gives
the login key (stored only as SHA-256, looked up through a unique index) and the seed of the
source's X25519 keypair. The passphrase itself is never stored.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import secrets
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw
from diceware.wordlist import WordList, get_wordlist_path

from whistle.core.crypto import UnitSecretKey
from whistle.core.enums import Language
from whistle.core.errors import WhistleError

WORDS = 7
# How long a request waits for a free argon2 slot before it is answered 503 (Retry-After). Long
# enough to ride out a short burst (a derivation takes well under a second at production cost),
# short enough that a flood of logins cannot hold a worker thread, and the source, indefinitely.
GATE_WAIT_SECONDS = 5.0
# One word list per site language (core.enums.Language).
WORDLISTS: dict[str, str] = {Language.ES: "es", Language.EN: "en_eff"}
_SEPARATORS = re.compile(r"[\s,.;]+")


class PassphraseError(WhistleError):
    """A passphrase cannot be used: empty, or the derivation parameters are invalid."""


@dataclass(frozen=True)
class Argon2Params:
    """Instance-wide argon2id parameters, stored with the instance secrets."""

    salt: bytes
    time_cost: int = 3
    memory_cost_kib: int = 64 * 1024
    parallelism: int = 1

    def __post_init__(self) -> None:
        if len(self.salt) < 16:
            raise PassphraseError("the passphrase salt must be at least 16 bytes")
        if self.time_cost < 1 or self.memory_cost_kib < 8 * self.parallelism:
            raise PassphraseError("argon2 costs out of range")


@dataclass(frozen=True)
class SourceKeys:
    """What one passphrase derives to: a lookup hash and the source's keypair."""

    login_hash: bytes
    secret_key: UnitSecretKey

    @property
    def public_key_bytes(self) -> bytes:
        return self.secret_key.public_key.encode()


@functools.cache
def wordlist(lang: str) -> tuple[str, ...]:
    """The words of the list for ``lang`` (``es`` or ``en``), read from the diceware package."""
    name = WORDLISTS.get(lang)
    if name is None:
        raise PassphraseError(f"no word list for language {lang!r}")
    words = tuple(WordList(get_wordlist_path(name)))
    if len(set(words)) != len(words) or len(words) < 7776:
        raise PassphraseError(f"word list {name} is damaged")
    return words


def generate(lang: str = "es") -> str:
    """Seven words drawn with the CSPRNG from the list for ``lang``, joined by spaces."""
    words = wordlist(lang)
    return " ".join(secrets.choice(words) for _ in range(WORDS))


def normalise(typed: str) -> str:
    """What a person typed, reduced to the canonical form: no accents, lower case, one space.

    ``"  Ábaco, PERRO\\tgato "`` and ``"abaco perro gato"`` are the same passphrase.
    """
    decomposed = unicodedata.normalize("NFKD", typed)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SEPARATORS.sub(" ", stripped.casefold()).strip()


def derive(typed: str, params: Argon2Params) -> SourceKeys:
    """One argon2id derivation: bytes 0-31 → login key, bytes 32-63 → keypair seed."""
    canonical = normalise(typed)
    if not canonical:
        raise PassphraseError("empty passphrase")
    try:
        secret = canonical.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates (surrogateescape): never a passphrase
        raise PassphraseError("passphrase is not valid Unicode text") from exc
    out = hash_secret_raw(
        secret=secret,
        salt=params.salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_cost_kib,
        parallelism=params.parallelism,
        hash_len=64,
        type=Type.ID,
    )
    login_hash = hashlib.sha256(out[:32]).digest()
    return SourceKeys(login_hash=login_hash, secret_key=UnitSecretKey.from_seed(out[32:]))


class DerivationGate:
    """Bounds how many derivations run at once: each holds its whole memory cost.

    Every wait for a slot is bounded (:data:`GATE_WAIT_SECONDS` unless told otherwise).
    """

    def __init__(self, concurrency: int) -> None:
        self._sem = threading.BoundedSemaphore(concurrency)

    @contextlib.contextmanager
    def slot(self, timeout: float | None = None) -> Iterator[None]:
        """Hold one slot for the block; raise :class:`GateBusyError` if none frees in time."""
        # Read at call time, so a deployment (or a test) can change the module constant.
        wait = GATE_WAIT_SECONDS if timeout is None else timeout
        if not self._sem.acquire(timeout=wait):
            raise GateBusyError("too many argon2 derivations at once")
        try:
            yield
        finally:
            self._sem.release()

    def derive(self, typed: str, params: Argon2Params, timeout: float | None = None) -> SourceKeys:
        """Derive under the semaphore; raise :class:`GateBusyError` if no slot frees in time."""
        with self.slot(timeout):
            return derive(typed, params)


class GateBusyError(PassphraseError):
    """No derivation slot became free in time; the caller should answer 503/429."""
