# SPDX-License-Identifier: AGPL-3.0-or-later
"""whistle.core.passphrase: receipt passphrases, their normalisation and the argon2id derivation."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import threading
import time
from pathlib import Path

import pytest
from argon2.low_level import Type, hash_secret_raw
from diceware.wordlist import get_wordlist_path
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey
from support import file_report, source_login

from whistle.core import passphrase as pp
from whistle.core.passphrase import (
    Argon2Params,
    DerivationGate,
    GateBusyError,
    PassphraseError,
    derive,
    generate,
    normalise,
)

SALT = bytes(range(16))
# Tiny argon2 costs: tests only. Production costs are Argon2Params' defaults.
TINY = Argon2Params(salt=SALT, time_cost=1, memory_cost_kib=8)


def _words_from_file(name: str) -> set[str]:
    """Read a diceware list straight from the package's file, independently of the module."""
    lines = Path(get_wordlist_path(name)).read_text(encoding="utf-8").splitlines()
    # wordlist_en_eff.txt is "11111<TAB>abacus"; wordlist_es.txt is one word per line.
    return {ln.split("\t")[-1].strip() for ln in lines if ln.strip()}


REPO = Path(__file__).resolve().parent.parent
SHIPPED_ES = REPO / "whistle" / "core" / "wordlists" / "es.txt"
# The Spanish list of every receipt issued before issue 11 (item 7): diceware's, 7 words.
OLD_SPANISH = _words_from_file("es")
SPANISH = set(SHIPPED_ES.read_text(encoding="utf-8").splitlines())
ENGLISH = _words_from_file("en_eff")
# Names from real receipts that sources could not spell back from paper (issue 11, item 7).
FOREIGN_NAMES = ("meijide", "cafiero", "lewis", "zurich", "winston", "taylor")


def _build_script():  # type: ignore[no-untyped-def]
    path = REPO / "scripts" / "build_wordlist_es.py"
    spec = importlib.util.spec_from_file_location("build_wordlist_es", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wordlists_have_the_documented_sizes() -> None:
    assert len(SPANISH) == 2549 == len(pp.wordlist("es"))
    assert len(OLD_SPANISH) == 8192
    assert len(ENGLISH) == 7776 == len(pp.wordlist("en"))


def test_generate_default_is_eight_spanish_words() -> None:
    assert pp.word_count("es") == 8
    for _ in range(20):
        words = generate().split(" ")
        assert len(words) == 8
        assert all(w in SPANISH for w in words), words


def test_generate_english_uses_eff_list() -> None:
    phrases = [generate("en").split(" ") for _ in range(20)]
    assert all(len(words) == 7 for words in phrases)
    assert all(w in ENGLISH for words in phrases for w in words)
    # And they really come from the English list, not the Spanish one.
    assert any(w not in SPANISH for words in phrases for w in words)


def test_generate_two_calls_differ() -> None:
    assert generate() != generate()
    assert generate("en") != generate("en")


def test_generate_is_already_normalised() -> None:
    # What is shown to the source is exactly what a careful retype normalises to.
    for lang in ("es", "en"):
        phrase = generate(lang)
        assert normalise(phrase) == phrase


def test_generate_unknown_language_refused() -> None:
    with pytest.raises(PassphraseError):
        generate("fr")
    with pytest.raises(PassphraseError):
        pp.word_count("fr")


# --------------------------------------------------------------------------- the Spanish word list


def test_wordlist_es_is_exactly_what_the_script_builds() -> None:
    """scripts/build_wordlist_es.py, run on its pinned inputs, gives the shipped file byte for byte."""
    script = _build_script()
    missing = script.missing_inputs()
    if missing:
        pytest.skip(f"dictionary input not installed: {', '.join(missing)} "
                    "(apt-get install wspanish hunspell-es; .ci/run does)")
    try:
        words = script.build()
    except SystemExit as exc:  # an input that is not the pinned version: say which
        pytest.fail(str(exc))
    assert script.render(words) == SHIPPED_ES.read_text(encoding="utf-8")
    assert SHIPPED_ES.read_bytes() == script.render(words).encode("utf-8")  # LF, UTF-8, nothing else


def test_wordlist_es_has_no_foreign_names() -> None:
    """The names sources stumbled on came from diceware's list; the shipped list has none."""
    spanish = set(pp.wordlist("es"))
    for name in FOREIGN_NAMES:
        assert name in OLD_SPANISH  # so the check means something
        assert name not in spanish, name
    # Nor the names and places the script leaves out by hand, nor a word that is only capitalised
    # in the dictionary.
    assert not spanish & {"carlos", "teresa", "rusia", "caracas", "godoy", "mierda"}


def test_wordlist_es_words_are_typed_as_shown() -> None:
    """4-8 letters a-z (no accent, no ñ: what is shown is what is typed), unique, prefix-free."""
    words = pp.wordlist("es")
    assert len(set(words)) == len(words)
    assert all(len(w) in range(4, 9) and w.isascii() and w.isalpha() and w.islower() for w in words)
    assert all(normalise(w) == w for w in words)
    assert all(w <= v for w, v in zip(words, words[1:], strict=False)), "not in alphabetical order"
    kept = set(words)
    assert not [w for w in words if any(w[:i] in kept for i in range(4, len(w)))]


@pytest.mark.parametrize("lang", ["es", "en"])
def test_passphrases_keep_at_least_90_bits(lang: str) -> None:
    size, count = len(pp.wordlist(lang)), pp.word_count(lang)
    assert count == math.ceil(90 / math.log2(size))
    assert count * math.log2(size) >= 90
    assert len(generate(lang).split(" ")) == count


def test_issued_word_counts_keep_the_old_seven() -> None:
    assert pp.issued_word_counts() == {7, 8}


def test_old_seven_word_spanish_passphrase_derives_without_any_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Login never depends on the list: derive() reads no word list, so a receipt of diceware's old
    Spanish list (with the names the new list left out) derives the same keys as ever."""
    old = "meijide cafiero lewis zurich winston taylor abajo"
    assert all(w in OLD_SPANISH for w in old.split())
    before = derive(old, TINY)

    def no_list(lang: str) -> tuple[str, ...]:
        raise AssertionError("derive() looked at a word list")

    monkeypatch.setattr(pp, "wordlist", no_list)
    after = derive(old, TINY)
    assert after.login_hash == before.login_hash and after.public_key_bytes == before.public_key_bytes


def test_old_seven_and_new_eight_word_receipts_both_log_in(client: FlaskClient,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A receipt issued before the new list (7 words of diceware's list, foreign names and all) and
    one issued today (8 words) both log in through the form; the word-count hint lets both through
    and tells the source about any other count."""
    from whistle.server import intake
    from whistle.server.web.source.followup import word_count_error

    old = "meijide cafiero lewis zurich winston taylor abajo"
    monkeypatch.setattr(intake, "generate", lambda lang="es": old)
    assert file_report(client, "Informe con un recibo antiguo") == old
    monkeypatch.undo()
    new = file_report(client, "Informe con un recibo nuevo")
    assert len(new.split()) == 8 and all(w in SPANISH for w in new.split())
    for phrase in (old, new):
        other = client.application.test_client()
        resp = source_login(other, phrase)
        assert resp.status_code == 302 and resp.headers["Location"].endswith("/case"), phrase
    with client.application.test_request_context("/followup"):
        assert word_count_error(old) is None and word_count_error(new) is None
        assert word_count_error(" ".join(new.split()[:6]))
        assert word_count_error(new + " casa")


@pytest.mark.parametrize("typed,expected", [
    ("ÁBACO  perro\tGato", "abaco perro gato"),
    ("  Ábaco, PERRO\tgato ", "abaco perro gato"),
    ("abaco,perro;gato.", "abaco perro gato"),
    ("abaco\n\nperro\r\ngato", "abaco perro gato"),
    ("ÑANDÚ pingüino", "nandu pinguino"),
    ("abaco\u00a0perro", "abaco perro"),  # no-break space from a copy-paste
    ("ｐｅｒｒｏ", "perro"),  # full-width letters (NFKD)
    ("abaco", "abaco"),
])
def test_normalise_case_accents_spaces_and_punctuation(typed: str, expected: str) -> None:
    assert normalise(typed) == expected


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=60))
def test_normalise_is_idempotent_and_canonical(typed: str) -> None:
    once = normalise(typed)
    assert normalise(once) == once
    assert once == once.strip()
    assert "  " not in once
    assert not any(c in once for c in ",.;\t\n")


def test_derive_is_deterministic() -> None:
    a = derive("abaco perro gato casa luna sol mar", TINY)
    b = derive("abaco perro gato casa luna sol mar", TINY)
    assert a.login_hash == b.login_hash
    assert a.secret_key.encode() == b.secret_key.encode()
    assert a.public_key_bytes == b.public_key_bytes


def test_derive_different_salt_or_passphrase_gives_different_keys() -> None:
    phrase = "abaco perro gato casa luna sol mar"
    a = derive(phrase, TINY)
    b = derive(phrase, Argon2Params(salt=bytes(16), time_cost=1, memory_cost_kib=8))
    c = derive(phrase + " rio", TINY)
    assert len({a.login_hash, b.login_hash, c.login_hash}) == 3
    assert len({a.public_key_bytes, b.public_key_bytes, c.public_key_bytes}) == 3


def test_derive_different_costs_give_different_keys() -> None:
    phrase = "abaco perro gato"
    a = derive(phrase, TINY)
    b = derive(phrase, Argon2Params(salt=SALT, time_cost=2, memory_cost_kib=8))
    assert a.login_hash != b.login_hash


def test_derive_matches_independent_argon2id_computation() -> None:
    phrase = "abaco perro gato casa luna sol mar"
    raw = hash_secret_raw(secret=phrase.encode("utf-8"), salt=SALT, time_cost=1, memory_cost=8,
                          parallelism=1, hash_len=64, type=Type.ID)
    keys = derive(phrase, TINY)
    assert len(keys.login_hash) == 32
    assert keys.login_hash == hashlib.sha256(raw[:32]).digest()
    # The login key itself is never what is stored.
    assert keys.login_hash != raw[:32]
    expected = PrivateKey.from_seed(raw[32:64])
    assert keys.public_key_bytes == bytes(expected.public_key)
    assert keys.secret_key.encode() == bytes(expected)
    # The case tag: libsodium's crypto_generichash(16, "whistle-case-tag-v2", key=seed).
    import nacl.encoding
    import nacl.hash

    tag = nacl.hash.generichash(b"whistle-case-tag-v2", digest_size=16, key=raw[32:64],
                                encoder=nacl.encoding.RawEncoder)
    assert keys.case_tag == tag == pp.case_tag_for(raw[32:64])
    assert len(keys.case_tag) == 16 and keys.case_tag.hex() not in repr(keys)


def test_case_tag_for_known_answer_and_seed_length() -> None:
    # A fixed vector, so a JavaScript client can check its derivation against the same bytes.
    assert pp.case_tag_for(bytes(range(32))).hex() == "62668959ac2790475466904c32c43344"
    assert pp.case_tag_for(bytes(32)) != pp.case_tag_for(bytes(31) + b"\x01")
    for bad in (b"", bytes(31), bytes(33), bytes(64)):
        with pytest.raises(PassphraseError):
            pp.case_tag_for(bad)


def test_derive_normalised_variants_give_the_same_keys() -> None:
    base = derive("abaco perro gato casa luna sol mar", TINY)
    for variant in ["ÁBACO  Perro\tgato, casa; luna. sol mar ", "  abaco perro gato casa luna sol mar\n",
                    "Abaco Pérro Gató Casa Luna Sol Mar"]:
        keys = derive(variant, TINY)
        assert keys.login_hash == base.login_hash
        assert keys.public_key_bytes == base.public_key_bytes
        assert keys.case_tag == base.case_tag


@pytest.mark.parametrize("typed", ["", "   ", " ,.; \t\n"])
def test_derive_empty_passphrase_raises(typed: str) -> None:
    with pytest.raises(PassphraseError):
        derive(typed, TINY)


def test_argon2params_refuses_short_salt_and_zero_costs() -> None:
    with pytest.raises(PassphraseError):
        Argon2Params(salt=bytes(8))
    with pytest.raises(PassphraseError):
        Argon2Params(salt=SALT, time_cost=0)
    with pytest.raises(PassphraseError):
        Argon2Params(salt=SALT, memory_cost_kib=4)


def test_argon2params_defaults_are_production_costs() -> None:
    params = Argon2Params(salt=SALT)
    assert (params.time_cost, params.memory_cost_kib, params.parallelism) == (3, 65536, 1)


def test_derivationgate_derives_like_derive() -> None:
    gate = DerivationGate(1)
    keys = gate.derive("abaco perro", TINY)
    assert keys.login_hash == derive("abaco perro", TINY).login_hash


HOLD = "frase que se queda dentro"


def _hold_slot(
    monkeypatch: pytest.MonkeyPatch, gate: DerivationGate
) -> tuple[threading.Thread, threading.Event]:
    """Start a thread whose derivation of HOLD sits inside the gate until the event is set."""
    inside = threading.Event()
    release = threading.Event()
    real_derive = pp.derive

    def slow_derive(typed: str, params: Argon2Params) -> pp.SourceKeys:
        if typed == HOLD:
            inside.set()
            release.wait(10)
        return real_derive(typed, params)

    monkeypatch.setattr(pp, "derive", slow_derive)
    thread = threading.Thread(target=gate.derive, args=(HOLD, TINY))
    thread.start()
    assert inside.wait(10), "the first derivation never entered the gate"
    return thread, release


def test_derivationgate_concurrency_one_serialises(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = DerivationGate(1)
    thread, release = _hold_slot(monkeypatch, gate)
    try:
        with pytest.raises(GateBusyError):
            gate.derive("otra frase", TINY, timeout=0.05)
    finally:
        release.set()
        thread.join(10)
    assert not thread.is_alive()
    # The slot is free again once the first derivation finished.
    assert len(gate.derive("otra frase", TINY, timeout=1).login_hash) == 32


def test_derivationgate_concurrency_two_admits_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = DerivationGate(2)
    thread, release = _hold_slot(monkeypatch, gate)
    try:
        keys = gate.derive("otra frase", TINY, timeout=0.05)
        assert thread.is_alive()  # the first one really was still inside
    finally:
        release.set()
        thread.join(10)
    assert keys.login_hash == derive("otra frase", TINY).login_hash


def test_derivationgate_releases_slot_when_derivation_fails() -> None:
    gate = DerivationGate(1)
    with pytest.raises(PassphraseError):
        gate.derive("   ", TINY)
    assert gate.derive("abaco", TINY, timeout=0.05).login_hash


def test_gatebusyerror_is_a_passphraseerror() -> None:
    assert issubclass(GateBusyError, PassphraseError)


def test_derivationgate_default_wait_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit timeout a derivation waits GATE_WAIT_SECONDS, never indefinitely."""
    monkeypatch.setattr(pp, "GATE_WAIT_SECONDS", 0.2)
    gate = DerivationGate(1)
    thread, release = _hold_slot(monkeypatch, gate)
    try:
        started = time.monotonic()
        with pytest.raises(GateBusyError):
            gate.derive("otra frase", TINY)
        assert 0.15 < time.monotonic() - started < 3
    finally:
        release.set()
        thread.join(10)
