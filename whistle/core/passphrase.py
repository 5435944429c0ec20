# SPDX-License-Identifier: AGPL-3.0-or-later
"""Receipt passphrases: generation, normalisation and the one argon2id derivation.

A new passphrase has enough words for at least 90 bits (:func:`word_count`): Spanish, 8 words from
the 2,549 common words of ``wordlists/es.txt`` (90.5 bits; built by scripts/build_wordlist_es.py);
English, 7 words from the EFF list of the ``diceware`` package (7,776 words, 90.3 bits). Older
Spanish receipts have 7 words from diceware's list; they log in the same way: the derivation never
looks at a list. One argon2id derivation with the instance-wide salt gives
the login key (stored only as SHA-256, looked up through a unique index) and the seed of the
source's X25519 keypair. The passphrase itself is never stored.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import re
import secrets
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.resources import files

from argon2.low_level import Type, hash_secret_raw
from diceware.wordlist import WordList, get_wordlist_path

from whistle.core.crypto import UnitSecretKey
from whistle.core.enums import Language
from whistle.core.errors import WhistleError

# The words of every passphrase issued before the Spanish list of issue 11 (both languages);
# logging in never depends on the count: see :func:`issued_word_counts`.
WORDS = 7
# A new passphrase has enough words for this many bits (:func:`word_count`).
MIN_BITS = 90
# How long a request waits for a free argon2 slot before it is answered 503 (Retry-After). Long
# enough to ride out a short burst (a derivation takes well under a second at production cost),
# short enough that a flood of logins cannot hold a worker thread, and the source, indefinitely.
GATE_WAIT_SECONDS = 5.0
# One word list per site language (core.enums.Language): a ``.txt`` file of ``wordlists/`` in this
# package (one word a line; es.txt is built by scripts/build_wordlist_es.py), or the name of a
# list of the ``diceware`` package (English: the EFF long list).
WORDLISTS: dict[str, str] = {Language.ES: "es.txt", Language.EN: "en_eff"}
# A list shorter than this is refused as damaged (it would need 9+ words for 90 bits).
MIN_WORDLIST = 2048
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


# The BLAKE2b "message" of the case tag, keyed with the source's seed (docs/protocol.md
# section 4); libsodium: crypto_generichash(16, CASE_TAG_CONTEXT, seed).
CASE_TAG_CONTEXT = b"whistle-case-tag-v2"
CASE_TAG_BYTES = 16


def case_tag_for(seed: bytes) -> bytes:
    """The 16-byte case tag of a source's seed: keyed BLAKE2b of ``whistle-case-tag-v2``.

    Fixed when the report is filed; only someone holding the passphrase (the source) or the
    decrypted report (the unit) knows it, so a message or reply carrying it is bound to its case.
    """
    if len(seed) != 32:
        raise PassphraseError("a source seed is exactly 32 bytes")
    return hashlib.blake2b(CASE_TAG_CONTEXT, digest_size=CASE_TAG_BYTES, key=seed).digest()


@dataclass(frozen=True)
class SourceKeys:
    """What one passphrase derives to: a lookup hash, the source's keypair and the case tag."""

    login_hash: bytes
    secret_key: UnitSecretKey
    case_tag: bytes = field(repr=False)

    @property
    def public_key_bytes(self) -> bytes:
        return self.secret_key.public_key.encode()


@functools.cache
def wordlist(lang: str) -> tuple[str, ...]:
    """The words of the list for ``lang`` (``es`` or ``en``), in file order."""
    name = WORDLISTS.get(lang)
    if name is None:
        raise PassphraseError(f"no word list for language {lang!r}")
    if name.endswith(".txt"):
        text = files("whistle.core").joinpath("wordlists", name).read_text(encoding="utf-8")
        words = tuple(text.splitlines())
    else:
        words = tuple(WordList(get_wordlist_path(name)))
    if (len(set(words)) != len(words) or len(words) < MIN_WORDLIST
            or not all(w and w == normalise(w) and " " not in w for w in words)):
        raise PassphraseError(f"word list {name} is damaged")
    return words


def word_count(lang: str) -> int:
    """How many words a new passphrase has in ``lang``: ``ceil(MIN_BITS / log2(N))`` for a list of
    N words (Spanish 8, English 7)."""
    return math.ceil(MIN_BITS / math.log2(len(wordlist(lang))))


def issued_word_counts() -> frozenset[int]:
    """Every number of words a passphrase has ever been issued with (7 before the Spanish list of
    issue 11, and today's counts): a login form may say a passphrase of any other length is
    mistyped, before any lookup. The derivation itself never looks at the count or a list."""
    return frozenset({WORDS, *(word_count(lang) for lang in WORDLISTS)})


def generate(lang: str = "es") -> str:
    """:func:`word_count` words drawn with the CSPRNG from the list for ``lang``, joined by spaces."""
    words = wordlist(lang)
    return " ".join(secrets.choice(words) for _ in range(word_count(lang)))


def normalise(typed: str) -> str:
    """What a person typed, reduced to the canonical form: no accents, lower case, one space.

    ``"  Ábaco, PERRO\\tgato "`` and ``"abaco perro gato"`` are the same passphrase.
    """
    decomposed = unicodedata.normalize("NFKD", typed)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SEPARATORS.sub(" ", stripped.casefold()).strip()


def derive(typed: str, params: Argon2Params) -> SourceKeys:
    """One argon2id derivation: bytes 0-31 → login key, bytes 32-63 → keypair seed (and the
    case tag, :func:`case_tag_for`, from that seed)."""
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
    seed = out[32:]
    return SourceKeys(login_hash=login_hash, secret_key=UnitSecretKey.from_seed(seed),
                      case_tag=case_tag_for(seed))


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
