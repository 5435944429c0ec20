# SPDX-License-Identifier: AGPL-3.0-or-later
"""whistle.core.crypto: unit keys, fingerprints, private key files, envelopes and attachment streams.

Formats are checked against docs/protocol.md, independently of the module where possible
(hashlib for the fingerprint, raw libsodium bindings for hand-built streams).
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import io
import json
import os
import tracemalloc
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings as sodium
from nacl.public import SealedBox
from support import FAST_MEM, FAST_OPS, KEY_PASSPHRASE

from whistle.core import crypto
from whistle.core.crypto import (
    CHUNK_SIZE,
    CIPHER_CHUNK_SIZE,
    STREAM_HEADER_BYTES,
    AttachmentRef,
    Binding,
    CryptoError,
    DecryptionError,
    Envelope,
    EnvelopeFormatError,
    KeyFormatError,
    StreamEncryptor,
    StreamFormatError,
    UnitPublicKey,
    UnitSecretKey,
    WrongPassphraseError,
    decrypt_stream,
    encrypt_stream,
    is_plausible_stream_length,
    iter_decrypt,
    new_stream_key,
    open_envelope,
    seal_envelope,
    stream_ciphertext_length,
)

FIXED_KEY = bytes(range(32))
# BLAKE2b-128 of bytes(range(32)), grouped as docs/protocol.md section 1 says. Hard-coded so that
# any change to the fingerprint format (case, grouping, digest) breaks this test.
FIXED_FINGERPRINT = "F39A 2CAD 5841 1CD4 9F57 7E50 86B8 031F"


@pytest.fixture(scope="module")
def unit() -> UnitSecretKey:
    return UnitSecretKey.generate()


# --------------------------------------------------------------------------- exception hierarchy


def test_exceptions_all_subclass_cryptoerror_and_are_documented() -> None:
    classes = [
        obj for obj in vars(crypto).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
        and obj.__module__.startswith(crypto.__name__)
    ]
    assert {c.__name__ for c in classes} >= {
        "CryptoError", "KeyFormatError", "DecryptionError", "WrongPassphraseError",
        "EnvelopeFormatError", "StreamFormatError",
    }
    for cls in classes:
        assert issubclass(cls, CryptoError), cls
        assert cls.__doc__ and cls.__doc__.strip(), f"{cls.__name__} has no docstring"


def test_exceptions_wrong_passphrase_and_stream_errors_are_decryption_errors() -> None:
    # Callers that catch DecryptionError also catch a bad passphrase and a damaged stream.
    assert issubclass(WrongPassphraseError, DecryptionError)
    assert issubclass(StreamFormatError, DecryptionError)


# --------------------------------------------------------------------------- UnitPublicKey


def test_unitpublickey_load_ignores_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "unit.pub"
    b64 = base64.b64encode(FIXED_KEY).decode()
    path.write_text(f"# whistle unit key\n\n   \n# another comment\n  {b64}  \n\n", encoding="utf-8")
    key = UnitPublicKey.load(path)
    assert key.encode() == FIXED_KEY
    assert key.to_base64() == b64


def test_unitpublickey_file_text_round_trips(tmp_path: Path) -> None:
    key = UnitSecretKey.generate().public_key
    path = tmp_path / "unit.pub"
    path.write_text(key.to_file_text(), encoding="utf-8")
    assert UnitPublicKey.load(path) == key
    assert key.fingerprint() in key.to_file_text()


def test_unitpublickey_load_rejects_two_key_lines(tmp_path: Path) -> None:
    path = tmp_path / "unit.pub"
    b64 = base64.b64encode(FIXED_KEY).decode()
    path.write_text(f"{b64}\n{b64}\n", encoding="utf-8")
    with pytest.raises(KeyFormatError, match="exactly one"):
        UnitPublicKey.load(path)


def test_unitpublickey_load_rejects_only_comments(tmp_path: Path) -> None:
    path = tmp_path / "unit.pub"
    path.write_text("# nothing here\n\n", encoding="utf-8")
    with pytest.raises(KeyFormatError, match="found 0"):
        UnitPublicKey.load(path)


@pytest.mark.parametrize("raw", [bytes(31), bytes(33), bytes(64), bytes(1)])
def test_unitpublickey_load_rejects_wrong_length(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "unit.pub"
    path.write_text(base64.b64encode(raw).decode() + "\n", encoding="utf-8")
    with pytest.raises(KeyFormatError, match="malformed public key"):
        UnitPublicKey.load(path)


@pytest.mark.parametrize("text", [
    "not base64 at all!!",
    base64.urlsafe_b64encode(bytes([0xFB] * 32)).decode(),  # URL-safe alphabet: '-' and '_'
    base64.b64encode(FIXED_KEY).decode().rstrip("="),  # padding missing
    "AAAA AAAA",
])
def test_unitpublickey_load_rejects_bad_base64(tmp_path: Path, text: str) -> None:
    path = tmp_path / "unit.pub"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(KeyFormatError, match="malformed public key"):
        UnitPublicKey.load(path)


def test_unitpublickey_load_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "unit.pub"
    with pytest.raises(KeyFormatError, match="not found") as info:
        UnitPublicKey.load(path)
    assert str(path) in str(info.value)


def test_unitpublickey_rejects_non_bytes_and_wrong_size() -> None:
    with pytest.raises(KeyFormatError):
        UnitPublicKey(bytearray(32))  # type: ignore[arg-type]
    with pytest.raises(KeyFormatError):
        UnitPublicKey(bytes(16))


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_known_answer_for_fixed_key() -> None:
    digest = hashlib.blake2b(FIXED_KEY, digest_size=16).hexdigest().upper()
    expected = " ".join(digest[i : i + 4] for i in range(0, 32, 4))
    assert expected == FIXED_FINGERPRINT
    assert UnitPublicKey(FIXED_KEY).fingerprint() == FIXED_FINGERPRINT


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_fingerprint_format_is_8_groups_of_4_uppercase_hex(raw: bytes) -> None:
    fp = UnitPublicKey(raw).fingerprint()
    groups = fp.split(" ")
    assert len(groups) == 8
    assert all(len(g) == 4 and all(c in "0123456789ABCDEF" for c in g) for g in groups)
    assert fp.replace(" ", "") == hashlib.blake2b(raw, digest_size=16).hexdigest().upper()


# --------------------------------------------------------------------------- private key file


def _key_file(key: UnitSecretKey, passphrase: str = KEY_PASSPHRASE) -> str:
    return key.to_encrypted_json(passphrase, opslimit=FAST_OPS, memlimit=FAST_MEM)


def test_secretkey_file_round_trip(tmp_path: Path) -> None:
    key = UnitSecretKey.generate()
    text = _key_file(key)
    doc = json.loads(text)
    assert list(doc) == ["format", "v", "public_key", "kdf", "opslimit", "memlimit", "salt",
                         "nonce", "ciphertext"]
    assert doc["format"] == "whistle-unit-secret-key" and doc["v"] == 1 and doc["kdf"] == "argon2id13"
    assert doc["public_key"] == key.public_key.to_base64()
    # The secret never appears in the clear.
    assert base64.b64encode(key.encode()).decode() not in text
    path = tmp_path / "unit.key"
    path.write_text(text, encoding="utf-8")
    opened = UnitSecretKey.load_encrypted(path, KEY_PASSPHRASE)
    assert opened.encode() == key.encode()
    assert opened.public_key == key.public_key


def test_secretkey_file_wrong_passphrase_raises() -> None:
    text = _key_file(UnitSecretKey.generate())
    with pytest.raises(WrongPassphraseError):
        UnitSecretKey.from_encrypted_json(text, KEY_PASSPHRASE + "x")


def test_secretkey_file_altered_ciphertext_raises() -> None:
    doc = json.loads(_key_file(UnitSecretKey.generate()))
    ct = bytearray(base64.b64decode(doc["ciphertext"]))
    ct[5] ^= 0x01
    doc["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    with pytest.raises(DecryptionError):  # WrongPassphraseError is a DecryptionError
        UnitSecretKey.from_encrypted_json(json.dumps(doc), KEY_PASSPHRASE)


def test_secretkey_file_swapped_public_key_raises_keyformaterror() -> None:
    doc = json.loads(_key_file(UnitSecretKey.generate()))
    doc["public_key"] = UnitSecretKey.generate().public_key.to_base64()
    with pytest.raises(KeyFormatError, match="does not match"):
        UnitSecretKey.from_encrypted_json(json.dumps(doc), KEY_PASSPHRASE)


@pytest.mark.parametrize("field,value", [
    ("opslimit", 10**9),
    ("opslimit", 0),
    ("memlimit", 1024),
    ("memlimit", 2**60),
])
def test_secretkey_file_absurd_costs_raise_keyformaterror(field: str, value: int) -> None:
    doc = json.loads(_key_file(UnitSecretKey.generate()))
    doc[field] = value
    with pytest.raises(KeyFormatError, match="unreasonable"):
        UnitSecretKey.from_encrypted_json(json.dumps(doc), KEY_PASSPHRASE)


@pytest.mark.parametrize("text", [
    "this is not json",
    "",
    "[1, 2, 3]",
    "null",
    '{"format": "something-else", "v": 1}',
])
def test_secretkey_file_not_a_key_file_raises_keyformaterror(text: str) -> None:
    with pytest.raises(KeyFormatError):
        UnitSecretKey.from_encrypted_json(text, KEY_PASSPHRASE)


@pytest.mark.parametrize("field,value", [
    ("salt", base64.b64encode(bytes(8)).decode()),
    ("nonce", "!!!"),
    ("ciphertext", 12),
    ("kdf", "scrypt"),
    ("v", 2),
])
def test_secretkey_file_bad_fields_raise_keyformaterror(field: str, value: object) -> None:
    doc = json.loads(_key_file(UnitSecretKey.generate()))
    doc[field] = value
    with pytest.raises(KeyFormatError):
        UnitSecretKey.from_encrypted_json(json.dumps(doc), KEY_PASSPHRASE)


def test_secretkey_file_missing_field_raises_keyformaterror() -> None:
    doc = json.loads(_key_file(UnitSecretKey.generate()))
    del doc["salt"]
    with pytest.raises(KeyFormatError):
        UnitSecretKey.from_encrypted_json(json.dumps(doc), KEY_PASSPHRASE)


def test_secretkey_file_nfc_and_nfd_passphrases_are_equivalent() -> None:
    passphrase = "contraseña del señor Pérez"
    nfc = unicodedata.normalize("NFC", passphrase)
    nfd = unicodedata.normalize("NFD", passphrase)
    assert nfc != nfd  # the test means something only if the two spellings differ
    key = UnitSecretKey.generate()
    assert UnitSecretKey.from_encrypted_json(_key_file(key, nfd), nfc).encode() == key.encode()
    assert UnitSecretKey.from_encrypted_json(_key_file(key, nfc), nfd).encode() == key.encode()


def test_secretkey_file_empty_passphrase_refused() -> None:
    with pytest.raises(KeyFormatError):
        _key_file(UnitSecretKey.generate(), "")


def test_secretkey_repr_hides_secret_bytes() -> None:
    key = UnitSecretKey.generate()
    text = repr(key)
    assert key.encode().hex() not in text.lower()
    assert base64.b64encode(key.encode()).decode() not in text
    assert key.public_key.fingerprint() in text


def test_secretkey_from_seed_matches_nacl_seed_keypair() -> None:
    seed = bytes(range(32, 64))
    pk, _sk = sodium.crypto_box_seed_keypair(seed)
    assert UnitSecretKey.from_seed(seed).public_key.encode() == pk
    with pytest.raises(KeyFormatError):
        UnitSecretKey.from_seed(bytes(31))


# --------------------------------------------------------------------------- envelopes

ENVELOPE_TEXT = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(list("áéíóúñÑü¿¡€") + ["🐦", "👩🏽\u200d⚕️", "\U0001F600", "e\u0301"]),
    ),
    max_size=1500,
).map("".join)
CATEGORY = st.sampled_from(["poor_service", "medication", "irregularities", "corruption", "other"])


def _attachment(name: str = "informe.pdf", size: int = 1234, key: bytes | None = None) -> AttachmentRef:
    return AttachmentRef(name=name, type="application/pdf", size=size, key=key or new_stream_key())


def _padded(pairs: list[tuple[str, object]]) -> bytes:
    """Serialise ``pairs`` compactly and pad the ``pad`` field to a multiple of 1024 bytes."""
    doc = dict(pairs)
    if "pad" in doc:
        doc["pad"] = ""
        raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        doc["pad"] = " " * (-len(raw) % 1024)
    raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    return raw


def _report_pairs(**override: object) -> list[tuple[str, object]]:
    pairs: list[tuple[str, object]] = [
        ("v", 1), ("kind", "report"), ("category", "corruption"), ("body", "hola"),
        ("attachments", [{"name": "a.pdf", "type": "application/pdf", "size": 5,
                          "key": base64.b64encode(bytes(32)).decode()}]),
        ("pad", ""),
    ]
    return [(k, override.get(k, v)) for k, v in pairs]


@settings(max_examples=50, deadline=None)
@given(body=ENVELOPE_TEXT, kind=st.sampled_from(["report", "message", "reply"]), category=CATEGORY,
       names=st.lists(ENVELOPE_TEXT, max_size=3))
def test_envelope_to_bytes_is_a_multiple_of_1024(
    body: str, kind: str, category: str, names: list[str]
) -> None:
    if kind == "reply":
        env = Envelope(kind="reply", body=body)
    else:
        env = Envelope(kind=kind, body=body, category=category if kind == "report" else "",
                       attachments=tuple(_attachment(n, size=i) for i, n in enumerate(names)))
    raw = env.to_bytes()
    assert len(raw) % 1024 == 0 and len(raw) > 0
    doc = json.loads(raw.decode("utf-8"))
    # Padding is minimal: without the pad the envelope would not reach the next block.
    assert len(doc["pad"]) < 1024 and set(doc["pad"]) <= {" "}
    unpadded = len(raw) - len(doc["pad"])
    assert len(doc["pad"]) == (1024 - unpadded % 1024) % 1024
    parsed = Envelope.from_bytes(raw)
    assert parsed.body == unicodedata.normalize("NFC", body)
    assert parsed.attachments == env.attachments


@pytest.mark.parametrize("kind,keys", [
    ("report", ["v", "kind", "category", "body", "attachments", "pad"]),
    ("message", ["v", "kind", "category", "body", "attachments", "pad"]),
    ("reply", ["v", "kind", "body", "pad"]),
])
def test_envelope_serialisation_is_compact_in_protocol_order(kind: str, keys: list[str]) -> None:
    atts = () if kind == "reply" else (_attachment("Año 2025 — informe.pdf"),)
    env = Envelope(kind=kind, body="El señor dijo: «no hay medicinas», {ok}: sí",
                   category="corruption" if kind == "report" else "", attachments=atts)
    raw = env.to_bytes()
    pairs = json.loads(raw, object_pairs_hook=lambda p: p)
    assert [k for k, _ in pairs] == keys
    if atts:
        att_pairs = dict(pairs)["attachments"][0]
        assert [k for k, _ in att_pairs] == ["name", "type", "size", "key"]
    # Compact: re-serialising the parsed document compactly gives the very same bytes.
    plain = json.loads(raw)
    assert json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode() == raw
    # Non-ASCII written as itself, not as \u escapes.
    assert "señor".encode() in raw and b"\\u" not in raw


def test_envelope_known_answer_bytes() -> None:
    key = bytes(range(32))
    env = Envelope(kind="report", category="medication", body="No me dieron la insulina. Ñandú 🐦",
                   attachments=(AttachmentRef(name="receta.jpg", type="image/jpeg", size=2048, key=key),))
    raw = env.to_bytes()
    prefix = (
        b'{"v":1,"kind":"report","category":"medication",'
        b'"body":"No me dieron la insulina. \xc3\x91and\xc3\xba \xf0\x9f\x90\xa6",'
        b'"attachments":[{"name":"receta.jpg","type":"image/jpeg","size":2048,'
        b'"key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}],"pad":"'
    )
    assert len(raw) == 1024
    assert raw == prefix + b" " * (1024 - len(prefix) - 2) + b'"}'


def test_envelope_known_answer_reply_bytes() -> None:
    raw = Envelope(kind="reply", body="Gracias").to_bytes()
    prefix = b'{"v":1,"kind":"reply","body":"Gracias","pad":"'
    assert raw == prefix + b" " * (1024 - len(prefix) - 2) + b'"}'


def test_envelope_body_is_nfc_normalised() -> None:
    nfd = unicodedata.normalize("NFD", "Pérez")
    raw = Envelope(kind="reply", body=nfd).to_bytes()
    assert "Pérez".encode() in raw and nfd.encode() not in raw


def test_envelope_body_too_long_refused() -> None:
    with pytest.raises(EnvelopeFormatError):
        Envelope(kind="reply", body="a" * 100_001).to_bytes()
    assert len(Envelope(kind="reply", body="a" * 100_000).to_bytes()) % 1024 == 0


def test_envelope_reply_with_attachments_or_category_refused_on_write() -> None:
    with pytest.raises(EnvelopeFormatError):
        Envelope(kind="reply", body="x", attachments=(_attachment(),)).to_bytes()
    with pytest.raises(EnvelopeFormatError):
        Envelope(kind="reply", body="x", category="corruption").to_bytes()
    with pytest.raises(EnvelopeFormatError):
        Envelope(kind="note", body="x").to_bytes()


def test_envelope_seal_open_round_trip_with_attachments(unit: UnitSecretKey) -> None:
    atts = (_attachment("foto 1.jpg", 10), _attachment("Año/..\\raro.pdf", 0),
            AttachmentRef(name="", type="", size=2**40, key=new_stream_key()))
    env = Envelope(kind="report", category="irregularities", body="Texto con ñ y 🐦", attachments=atts)
    sealed = seal_envelope(env, unit.public_key)
    assert len(sealed) == len(env.to_bytes()) + 48
    opened = open_envelope(sealed, unit)
    assert opened == env
    assert [a.key for a in opened.attachments] == [a.key for a in atts]


def test_envelope_opens_with_plain_nacl_sealedbox(unit: UnitSecretKey) -> None:
    # Interoperability: a plain crypto_box_seal of the bytes is what open_envelope expects.
    env = Envelope(kind="message", body="seguimiento")
    sealed = SealedBox(unit.public_key.nacl_key).encrypt(env.to_bytes())
    assert open_envelope(sealed, unit) == env
    assert SealedBox(unit.nacl_key).decrypt(seal_envelope(env, unit.public_key)) == env.to_bytes()


def test_envelope_open_with_wrong_key_raises(unit: UnitSecretKey) -> None:
    sealed = seal_envelope(Envelope(kind="reply", body="secreto"), unit.public_key)
    with pytest.raises(DecryptionError):
        open_envelope(sealed, UnitSecretKey.generate())


def test_envelope_flipping_any_byte_of_sealed_blob_raises(unit: UnitSecretKey) -> None:
    sealed = seal_envelope(Envelope(kind="reply", body="secreto"), unit.public_key)
    assert open_envelope(sealed, unit).body == "secreto"
    for i in range(len(sealed)):
        damaged = bytearray(sealed)
        damaged[i] ^= 0x80
        with pytest.raises(DecryptionError):
            open_envelope(bytes(damaged), unit)


@pytest.mark.parametrize("cut", [1, 16, 48, 1024])
def test_envelope_truncated_blob_raises(unit: UnitSecretKey, cut: int) -> None:
    sealed = seal_envelope(Envelope(kind="reply", body="secreto"), unit.public_key)
    with pytest.raises(DecryptionError):
        open_envelope(sealed[:-cut], unit)
    with pytest.raises(DecryptionError):
        open_envelope(b"", unit)


def test_envelope_open_rejects_malformed_plaintext_inside_valid_seal(unit: UnitSecretKey) -> None:
    sealed = SealedBox(unit.public_key.nacl_key).encrypt(b'{"v":1}' + b" " * 1017)
    with pytest.raises(EnvelopeFormatError):
        open_envelope(sealed, unit)


def test_envelope_from_bytes_accepts_reference_document() -> None:
    env = Envelope.from_bytes(_padded(_report_pairs()))
    assert env.kind == "report" and env.category == "corruption" and env.body == "hola"
    assert env.attachments[0].size == 5 and env.attachments[0].key == bytes(32)


@pytest.mark.parametrize("v", [2, 0, "1", None, [1]])
def test_envelope_from_bytes_rejects_wrong_version(v: object) -> None:
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(_padded(_report_pairs(v=v)))


@pytest.mark.parametrize("v", [True, 1.0])
def test_envelope_from_bytes_rejects_non_integer_version(v: object) -> None:
    # Protocol: "v is the integer 1" and mistyped fields must be rejected. In Python True == 1
    # and 1.0 == 1, so a plain != comparison lets them through.
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(_padded(_report_pairs(v=v)))


@pytest.mark.parametrize("kind", ["note", "", None, "REPORT", 1])
def test_envelope_from_bytes_rejects_unknown_kind(kind: object) -> None:
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(_padded(_report_pairs(kind=kind)))


def test_envelope_from_bytes_rejects_extra_field() -> None:
    pairs = _report_pairs()
    pairs.insert(4, ("extra", "x"))
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(_padded(pairs))


@pytest.mark.parametrize("missing", ["category", "body", "attachments", "pad", "kind"])
def test_envelope_from_bytes_rejects_missing_field(missing: str) -> None:
    pairs = [(k, v) for k, v in _report_pairs() if k != missing]
    raw = _padded(pairs)
    if missing == "pad":
        raw = raw + b" " * (-len(raw) % 1024)  # whitespace after JSON keeps the length valid
    assert len(raw) % 1024 == 0
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(raw)


@pytest.mark.parametrize("field,value", [
    ("body", 5), ("body", None), ("category", 3), ("category", None), ("attachments", {}),
    ("attachments", "a.pdf"),
])
def test_envelope_from_bytes_rejects_mistyped_field(field: str, value: object) -> None:
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(_padded(_report_pairs(**{field: value})))


@pytest.mark.parametrize("bad", ["x", "\t", "\u00a0", "\n"])
def test_envelope_from_bytes_rejects_non_space_pad(bad: str) -> None:
    # An exact-length envelope whose pad holds one character that is not U+0020.
    base = _padded(_report_pairs())
    head = base[: base.index(b'"pad":"') + len(b'"pad":"')]
    escaped = json.dumps(bad, ensure_ascii=False)[1:-1].encode()
    used = len(head) + len(escaped) + 2
    raw = head + escaped + b" " * (-used % 1024) + b'"}'
    assert len(raw) % 1024 == 0
    assert json.loads(raw)["pad"].startswith(bad)
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(raw)


@pytest.mark.parametrize("delta", [-1, 1, -1023, 1024 - 1])
def test_envelope_from_bytes_rejects_length_not_multiple_of_1024(delta: int) -> None:
    raw = _padded(_report_pairs())
    if delta < 0:
        # Remove pad spaces, keeping valid JSON.
        raw = raw.replace(b" " * -delta, b"", 1) if raw.count(b" ") >= -delta else raw[:delta]
    else:
        raw = raw + b" " * delta
    assert len(raw) % 1024 != 0
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(raw)
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(b"")


@pytest.mark.parametrize("key", [
    base64.b64encode(bytes(31)).decode(),
    base64.b64encode(bytes(33)).decode(),
    base64.b64encode(bytes(16)).decode(),
    "not base64!",
    "",
    5,
])
def test_envelope_from_bytes_rejects_bad_attachment_key(key: object) -> None:
    att = {"name": "a.pdf", "type": "application/pdf", "size": 5, "key": key}
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(_padded(_report_pairs(attachments=[att])))


@pytest.mark.parametrize("size", [True, False, -1, 1.5, "5", None])
def test_envelope_from_bytes_rejects_bad_attachment_size(size: object) -> None:
    att = {"name": "a.pdf", "type": "application/pdf", "size": size,
           "key": base64.b64encode(bytes(32)).decode()}
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(_padded(_report_pairs(attachments=[att])))


@pytest.mark.parametrize("att", [
    {"name": "a.pdf", "type": "application/pdf", "size": 5},
    {"name": "a.pdf", "type": "application/pdf", "size": 5, "key": "", "extra": 1},
    {"name": 1, "type": "application/pdf", "size": 5, "key": base64.b64encode(bytes(32)).decode()},
    {"name": "a", "type": None, "size": 5, "key": base64.b64encode(bytes(32)).decode()},
    "a.pdf",
    None,
])
def test_envelope_from_bytes_rejects_malformed_attachment_entry(att: object) -> None:
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(_padded(_report_pairs(attachments=[att])))


def test_envelope_from_bytes_rejects_reply_with_attachments() -> None:
    pairs: list[tuple[str, object]] = [("v", 1), ("kind", "reply"), ("body", "hola"),
                                       ("attachments", []), ("pad", "")]
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(_padded(pairs))
    pairs = [("v", 1), ("kind", "reply"), ("category", ""), ("body", "hola"), ("pad", "")]
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(_padded(pairs))


@pytest.mark.parametrize("raw", [
    b"\xff" * 1024,
    b"[" + b" " * 1022 + b"]",
    b'"' + b" " * 1022 + b'"',
    b"not json" + b" " * 1016,
])
def test_envelope_from_bytes_rejects_non_json_object(raw: bytes) -> None:
    assert len(raw) == 1024
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(raw)


_FIELDS = st.sampled_from(["v", "kind", "category", "body", "attachments", "pad", "name", "type",
                           "size", "key", "case_tag", "seq", "source_public_key", "report_id"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**40) | st.floats(allow_nan=False)
    | st.sampled_from(["report", "message", "reply", "", " ", base64.b64encode(bytes(32)).decode(),
                       base64.b64encode(bytes(16)).decode(), "00ff00ff00ff00ff"])
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(_FIELDS | st.text(max_size=3), children, max_size=7),
    max_leaves=25,
)


def _pad_to_block(value: object) -> bytes:
    raw = json.dumps(value, ensure_ascii=False).encode()
    return raw + b" " * (-len(raw) % 1024)


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.binary(max_size=2100), _JSON.map(_pad_to_block)))
def test_envelope_from_bytes_raises_only_envelopeformaterror(raw: bytes) -> None:
    # Whatever a hostile sealer puts inside, the reader either returns a valid envelope or raises
    # its one documented error, never KeyError/TypeError/... that a caller would not catch.
    try:
        env = Envelope.from_bytes(raw)
    except EnvelopeFormatError:
        return
    assert env.kind in ("report", "message", "reply")
    assert all(len(a.key) == 32 and a.size >= 0 for a in env.attachments)


# --------------------------------------------------------------------------- streams


def _protocol_length(n: int) -> int:
    # docs/protocol.md section 3, written out independently of the module.
    return 24 + (n // 65536) * 65553 + (n % 65536) + 17


def _encrypt(data: bytes, key: bytes) -> bytes:
    out = io.BytesIO()
    assert encrypt_stream(io.BytesIO(data), out, key) == len(data)
    return out.getvalue()


def _decrypt(ct: bytes, key: bytes, expected_size: int | None = None) -> bytes:
    out = io.BytesIO()
    n = decrypt_stream(io.BytesIO(ct), out, key, expected_size=expected_size)
    assert n == len(out.getvalue())
    return out.getvalue()


def _chunks(ct: bytes) -> tuple[bytes, list[bytes]]:
    """Split a stream into its header and ciphertext chunks."""
    body = ct[STREAM_HEADER_BYTES:]
    return ct[:STREAM_HEADER_BYTES], [body[i : i + CIPHER_CHUNK_SIZE]
                                      for i in range(0, len(body), CIPHER_CHUNK_SIZE)]


def _raw_stream(key: bytes, chunks: list[tuple[bytes, int]]) -> bytes:
    """Build a stream by hand with the raw libsodium bindings (another encoder's choices)."""
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    out = [header]
    for plain, tag in chunks:
        out.append(sodium.crypto_secretstream_xchacha20poly1305_push(state, plain, None, tag))
    return b"".join(out)


TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536, 3 * 65536 + 100])
def test_stream_round_trip_and_length(size: int) -> None:
    data = os.urandom(size)
    key = new_stream_key()
    ct = _encrypt(data, key)
    assert len(ct) == stream_ciphertext_length(size) == _protocol_length(size)
    assert is_plausible_stream_length(len(ct))
    assert _decrypt(ct, key, expected_size=size) == data
    assert _decrypt(ct, key) == data
    if size >= 64:
        assert data[:64] not in ct  # the plaintext does not show through


def test_stream_uses_message_chunks_then_final() -> None:
    key = new_stream_key()
    data = os.urandom(2 * 65536 + 10)
    header, chunks = _chunks(_encrypt(data, key))
    assert [len(c) for c in chunks] == [65553, 65553, 27]
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
    tags = [sodium.crypto_secretstream_xchacha20poly1305_pull(state, c, None)[1] for c in chunks]
    assert tags == [TAG_MESSAGE, TAG_MESSAGE, TAG_FINAL]


@settings(max_examples=30, deadline=None)
@given(size=st.integers(min_value=0, max_value=200_000), seed=st.binary(min_size=8, max_size=8))
def test_stream_round_trip_random_sizes(size: int, seed: bytes) -> None:
    data = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]
    key = new_stream_key()
    ct = _encrypt(data, key)
    assert len(ct) == _protocol_length(size)
    assert is_plausible_stream_length(len(ct))
    assert _decrypt(ct, key, expected_size=size) == data


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=70_000), max_size=8))
def test_streamencryptor_odd_pieces_give_same_decryptable_result(sizes: list[int]) -> None:
    data = os.urandom(sum(sizes))
    key = new_stream_key()
    enc = StreamEncryptor(key)
    parts = [enc.header]
    pos = 0
    for n in sizes:
        parts.append(enc.update(data[pos : pos + n]))
        pos += n
    parts.append(enc.finish())
    ct = b"".join(parts)
    assert enc.plaintext_size == len(data)
    assert len(ct) == len(_encrypt(data, key)) == _protocol_length(len(data))
    assert _decrypt(ct, key, expected_size=len(data)) == data
    # Fed back in odd pieces too.
    pieces = [ct[i : i + 7777] for i in range(0, len(ct), 7777)]
    assert b"".join(iter_decrypt(pieces, key)) == data


def test_streamencryptor_refuses_use_after_finish() -> None:
    enc = StreamEncryptor(new_stream_key())
    enc.finish()
    with pytest.raises(CryptoError):
        enc.update(b"x")
    with pytest.raises(CryptoError):
        enc.finish()


def test_stream_byte_by_byte_decryption() -> None:
    key = new_stream_key()
    data = os.urandom(300)
    ct = _encrypt(data, key)
    assert b"".join(iter_decrypt((bytes([b]) for b in ct), key)) == data


@pytest.mark.parametrize("where", ["header", "first", "middle", "last", "last_tag_byte"])
def test_stream_tampered_byte_raises(where: str) -> None:
    key = new_stream_key()
    data = os.urandom(3 * 65536 + 500)
    ct = bytearray(_encrypt(data, key))
    index = {
        "header": 5,
        "first": STREAM_HEADER_BYTES + 3,
        "middle": STREAM_HEADER_BYTES + CIPHER_CHUNK_SIZE + 40_000,
        "last": len(ct) - 100,
        "last_tag_byte": STREAM_HEADER_BYTES + 3 * CIPHER_CHUNK_SIZE,
    }[where]
    ct[index] ^= 0x01
    with pytest.raises(StreamFormatError):
        _decrypt(bytes(ct), key)


@pytest.mark.parametrize("size", [3 * 65536 + 500, 3 * 65536, 65536, 0])
def test_stream_dropping_final_chunk_raises(size: int) -> None:
    key = new_stream_key()
    header, chunks = _chunks(_encrypt(os.urandom(size), key))
    truncated = header + b"".join(chunks[:-1])
    # Without the FINAL chunk the stream ends exactly at a chunk boundary (or right after the
    # header): a reader that stops there would hand over a silently shorter file.
    assert (len(truncated) - STREAM_HEADER_BYTES) % CIPHER_CHUNK_SIZE == 0
    with pytest.raises(StreamFormatError):
        _decrypt(truncated, key)
    with pytest.raises(StreamFormatError):
        b"".join(iter_decrypt([truncated], key))


@pytest.mark.parametrize("cut", [1, 17, 100, CIPHER_CHUNK_SIZE])
def test_stream_truncated_raises(cut: int) -> None:
    key = new_stream_key()
    ct = _encrypt(os.urandom(2 * 65536 + 200), key)
    with pytest.raises(StreamFormatError):
        _decrypt(ct[:-cut], key)


@pytest.mark.parametrize("ct", [b"", b"\x00" * 10, b"\x00" * 24, b"\x00" * 40])
def test_stream_too_short_raises(ct: bytes) -> None:
    with pytest.raises(StreamFormatError):
        _decrypt(ct, new_stream_key())


def test_stream_reordered_chunks_raise() -> None:
    key = new_stream_key()
    header, chunks = _chunks(_encrypt(os.urandom(3 * 65536 + 10), key))
    chunks[0], chunks[1] = chunks[1], chunks[0]
    with pytest.raises(StreamFormatError):
        _decrypt(header + b"".join(chunks), key)


def test_stream_duplicated_chunk_raises() -> None:
    key = new_stream_key()
    header, chunks = _chunks(_encrypt(os.urandom(2 * 65536 + 10), key))
    with pytest.raises(StreamFormatError):
        _decrypt(header + chunks[0] + b"".join(chunks), key)


@pytest.mark.parametrize("garbage", [b"\x00", b"x" * 17, os.urandom(CIPHER_CHUNK_SIZE),
                                     os.urandom(CIPHER_CHUNK_SIZE + 5)])
@pytest.mark.parametrize("size", [10, 65536, 65536 + 10])
def test_stream_garbage_after_final_raises(garbage: bytes, size: int) -> None:
    key = new_stream_key()
    ct = _encrypt(os.urandom(size), key)
    with pytest.raises(StreamFormatError):
        _decrypt(ct + garbage, key)


def test_stream_valid_chunk_after_final_raises() -> None:
    key = new_stream_key()
    ct = _raw_stream(key, [(b"a" * 65536, TAG_FINAL), (b"b" * 100, TAG_FINAL)])
    with pytest.raises(StreamFormatError):
        _decrypt(ct, key)
    ct = _raw_stream(key, [(b"a" * 100, TAG_FINAL), (b"", TAG_FINAL)])
    with pytest.raises(StreamFormatError):
        _decrypt(ct, key)


def test_stream_full_size_final_chunk_from_another_encoder_is_accepted() -> None:
    key = new_stream_key()
    data = os.urandom(2 * 65536)
    ct = _raw_stream(key, [(data[:65536], TAG_MESSAGE), (data[65536:], TAG_FINAL)])
    assert is_plausible_stream_length(len(ct))
    assert _decrypt(ct, key, expected_size=len(data)) == data


def test_stream_without_final_tag_raises() -> None:
    key = new_stream_key()
    ct = _raw_stream(key, [(b"a" * 65536, TAG_MESSAGE), (b"b" * 10, TAG_MESSAGE)])
    with pytest.raises(StreamFormatError):
        _decrypt(ct, key)


def test_stream_wrong_key_raises() -> None:
    ct = _encrypt(os.urandom(1000), new_stream_key())
    with pytest.raises(StreamFormatError):
        _decrypt(ct, new_stream_key())


@pytest.mark.parametrize("expected", [0, 999, 1001, 65536, 10**9])
def test_stream_expected_size_mismatch_raises(expected: int) -> None:
    key = new_stream_key()
    ct = _encrypt(os.urandom(1000), key)
    with pytest.raises(StreamFormatError):
        _decrypt(ct, key, expected_size=expected)


def test_stream_progress_counts_every_ciphertext_byte() -> None:
    key = new_stream_key()
    ct = _encrypt(os.urandom(5 * 65536 + 3), key)
    seen: list[int] = []
    decrypt_stream(io.BytesIO(ct), io.BytesIO(), key, progress=seen.append)
    assert sum(seen) == len(ct) and len(seen) > 1


def test_stream_bad_key_length_refused() -> None:
    with pytest.raises(KeyFormatError):
        StreamEncryptor(bytes(16))
    with pytest.raises(KeyFormatError):
        _decrypt(_encrypt(b"x", new_stream_key()), bytes(16))


def test_stream_plausible_length_rule() -> None:
    assert not is_plausible_stream_length(0)
    assert not is_plausible_stream_length(40)
    assert is_plausible_stream_length(41)
    assert is_plausible_stream_length(24 + 65553)  # one full-size FINAL chunk
    assert is_plausible_stream_length(24 + 65553 + 17)
    for rest in range(1, 17):
        assert not is_plausible_stream_length(24 + 65553 + rest)
    assert not is_plausible_stream_length(24 + 2 * 65553 + 16)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2**40))
def test_stream_ciphertext_length_matches_protocol_formula(n: int) -> None:
    assert stream_ciphertext_length(n) == _protocol_length(n)
    assert is_plausible_stream_length(stream_ciphertext_length(n))


# --------------------------------------------------------------------------- streaming memory


class _PatternReader(io.RawIOBase):
    """``size`` bytes of a fixed pseudo-random pattern, generated as they are read."""

    def __init__(self, size: int, block: bytes) -> None:
        self._left = size
        self._pos = 0
        self._block = block

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buf).cast("B")
        n = min(len(view), self._left)
        written = 0
        while written < n:
            off = self._pos % len(self._block)
            take = min(n - written, len(self._block) - off)
            view[written : written + take] = self._block[off : off + take]
            written += take
            self._pos += take
        self._left -= n
        return n


class _EncryptingReader(io.RawIOBase):
    """Ciphertext of a _PatternReader, produced on the fly by StreamEncryptor."""

    def __init__(self, plain: io.RawIOBase, key: bytes) -> None:
        self._plain = plain
        self._enc = StreamEncryptor(key)
        self._pending = bytearray(self._enc.header)
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buf).cast("B")
        while len(self._pending) < len(view) and not self._done:
            piece = self._plain.read(CHUNK_SIZE)
            if piece:
                self._pending += self._enc.update(piece)
            else:
                self._pending += self._enc.finish()
                self._done = True
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        del self._pending[:n]
        return n


class _HashingSink(io.RawIOBase):
    """Consumes what is written, keeping only its length and SHA-256."""

    def __init__(self) -> None:
        self.size = 0
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hash.update(data)
        self.size += len(data)
        return len(data)


def test_stream_large_file_never_sits_whole_in_memory() -> None:
    size = 64 * 1024 * 1024 + 12345  # ~64 MB with a partial last chunk
    block = os.urandom(4093)  # period not aligned with the chunk size: reordering would show
    key = new_stream_key()
    expected = hashlib.sha256()
    gen = _PatternReader(size, block)
    while piece := gen.read(1 << 20):
        expected.update(piece)
    limit = 8 * 1024 * 1024

    tracemalloc.start()
    try:
        # Control: the tracer does see a whole-file-sized allocation.
        tracemalloc.reset_peak()
        blob = bytes(16 * 1024 * 1024)
        assert tracemalloc.get_traced_memory()[1] > limit
        del blob

        tracemalloc.reset_peak()
        ct_sink = _HashingSink()
        assert encrypt_stream(_PatternReader(size, block), ct_sink, key) == size
        assert tracemalloc.get_traced_memory()[1] < limit
        assert ct_sink.size == stream_ciphertext_length(size)

        tracemalloc.reset_peak()
        plain_sink = _HashingSink()
        n = decrypt_stream(_EncryptingReader(_PatternReader(size, block), key), plain_sink, key,
                           expected_size=size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == size == plain_sink.size
    assert plain_sink.hash.digest() == expected.digest()
    assert peak < limit, f"peak {peak} bytes while streaming {size} bytes"


# --------------------------------------------------------------------------- signing key, replies


def test_keyfile_v2_round_trip_holds_both_keys() -> None:
    from whistle.core.crypto import UnitKeyFile, UnitSigningKey

    keys = UnitKeyFile(UnitSecretKey.generate(), UnitSigningKey.generate())
    text = keys.to_encrypted_json(KEY_PASSPHRASE, opslimit=FAST_OPS, memlimit=FAST_MEM)
    doc = json.loads(text)
    assert list(doc) == ["format", "v", "public_key", "signing_public_key", "kdf", "opslimit",
                         "memlimit", "salt", "nonce", "ciphertext"]
    assert doc["v"] == 2 and len(base64.b64decode(doc["ciphertext"])) == 64 + 16
    signing = keys.require_signing_key()
    assert doc["signing_public_key"] == signing.verify_key.to_base64()
    assert base64.b64encode(signing.encode()).decode() not in text
    opened = UnitKeyFile.from_encrypted_json(text, KEY_PASSPHRASE)
    assert opened.secret_key.encode() == keys.secret_key.encode()
    assert opened.require_signing_key().encode() == signing.encode()
    # The X25519-only reader still opens a version-2 file (decrypt needs only that key).
    assert UnitSecretKey.from_encrypted_json(text, KEY_PASSPHRASE).encode() == keys.secret_key.encode()


def test_keyfile_v1_loads_without_signing_key() -> None:
    from whistle.core.crypto import MissingSigningKeyError, UnitKeyFile

    key = UnitSecretKey.generate()
    opened = UnitKeyFile.from_encrypted_json(_key_file(key), KEY_PASSPHRASE)
    assert opened.secret_key.encode() == key.encode() and opened.signing_key is None
    with pytest.raises(MissingSigningKeyError):
        opened.require_signing_key()


def test_keyfile_v2_swapped_signing_public_key_raises_keyformaterror() -> None:
    from whistle.core.crypto import UnitKeyFile, UnitSigningKey

    keys = UnitKeyFile(UnitSecretKey.generate(), UnitSigningKey.generate())
    doc = json.loads(keys.to_encrypted_json(KEY_PASSPHRASE, opslimit=FAST_OPS, memlimit=FAST_MEM))
    doc["signing_public_key"] = UnitSigningKey.generate().verify_key.to_base64()
    with pytest.raises(KeyFormatError, match="signing public key does not match"):
        UnitKeyFile.from_encrypted_json(json.dumps(doc), KEY_PASSPHRASE)
    del doc["signing_public_key"]
    with pytest.raises(KeyFormatError):
        UnitKeyFile.from_encrypted_json(json.dumps(doc), KEY_PASSPHRASE)


def test_verifykey_file_and_fingerprint_match_unit_pub_format(tmp_path: Path) -> None:
    from whistle.core.crypto import UnitSigningKey, UnitVerifyKey

    verify = UnitSigningKey.generate().verify_key
    path = tmp_path / "unit-sign.pub"
    path.write_text(verify.to_file_text())
    assert UnitVerifyKey.load(path) == verify
    fp = verify.fingerprint()
    assert fp.replace(" ", "") == hashlib.blake2b(verify.encode(), digest_size=16).hexdigest().upper()
    assert fp in path.read_text().splitlines()[0]


def test_reply_signed_bytes_layout_is_exact() -> None:
    from whistle.core.replies import reply_signed_bytes

    recipient, sealed = bytes(range(32)), b"\xaa" * (1024 + 48)
    assert reply_signed_bytes("0123abcd", recipient, sealed) == (
        b"whistle-reply-v2\x00" + b"0123abcd" + b"\x00" + recipient + sealed)


def test_reply_sealed_and_signed_opens_and_verifies() -> None:
    from nacl.signing import VerifyKey

    from whistle.core.crypto import UnitSigningKey
    from whistle.core.replies import ReplyEnvelope, open_reply, reply_signed_bytes, seal_reply

    source, unit = UnitSecretKey.generate(), UnitSigningKey.generate()
    reply = seal_reply("Gracias ñ", "00ff00ff00ff00ff", source.public_key, unit)
    # Any Ed25519 implementation verifies it over the documented bytes (libsodium's verify here).
    VerifyKey(unit.verify_key.encode()).verify(
        reply_signed_bytes(reply.report_id, reply.recipient, reply.sealed), reply.signature)
    assert open_reply(reply, source, unit.verify_key) == "Gracias ñ"
    raw = SealedBox(source.nacl_key).decrypt(reply.sealed)
    assert len(raw) % 1024 == 0
    assert raw.startswith(b'{"v":2,"kind":"reply","report_id":"00ff00ff00ff00ff","source_public_key":"')
    assert ReplyEnvelope.from_bytes(raw).recipient == source.public_key.encode()


def test_reply_open_refuses_forged_moved_or_mismatched() -> None:
    from whistle.core.crypto import UnitSigningKey
    from whistle.core.replies import (
        ReplyAuthError,
        ReplyEnvelope,
        SealedReply,
        open_reply,
        reply_signed_bytes,
        seal_reply,
    )

    source, unit = UnitSecretKey.generate(), UnitSigningKey.generate()
    good = seal_reply("texto", "00ff00ff00ff00ff", source.public_key, unit)
    forged = seal_reply("falso", "00ff00ff00ff00ff", source.public_key, UnitSigningKey.generate())
    moved = SealedReply("11ff00ff00ff00ff", good.recipient, good.sealed, good.signature)
    tampered = SealedReply(good.report_id, good.recipient, good.sealed[:-1] + b"\x00", good.signature)
    for bad in (forged, moved, tampered,
                SealedReply(good.report_id, good.recipient, good.sealed, b"")):
        with pytest.raises(ReplyAuthError):
            open_reply(bad, source, unit.verify_key)
    # Signed by the unit for this report, but the envelope inside names another: refused too.
    inner = ReplyEnvelope("22ff00ff00ff00ff", source.public_key.encode(), "otro caso").to_bytes()
    sealed = SealedBox(source.public_key.nacl_key).encrypt(inner)
    signature = unit.sign(reply_signed_bytes(good.report_id, good.recipient, sealed))
    with pytest.raises(ReplyAuthError, match="names another"):
        open_reply(SealedReply(good.report_id, good.recipient, sealed, signature), source,
                   unit.verify_key)


def test_replies_file_v1_refused_v2_round_trips() -> None:
    from whistle.core.crypto import UnitSigningKey
    from whistle.core.replies import RepliesError, dump_replies, parse_replies, seal_reply

    source, unit = UnitSecretKey.generate(), UnitSigningKey.generate()
    reply = seal_reply("texto", "00ff00ff00ff00ff", source.public_key, unit)
    data = dump_replies([reply])
    assert json.loads(data)["v"] == 2 and parse_replies(data) == [reply]
    doc = json.loads(data)
    doc["v"] = 1
    del doc["replies"][0]["signature"]
    with pytest.raises(RepliesError, match="version-1 replies file holds unsigned replies"):
        parse_replies(json.dumps(doc).encode())


# =========================================================================== protocol v2 binding

TAG = bytes(range(100, 116))
SRC = bytes(range(32, 64))


def _v2_pairs(kind: str = "report", **override: object) -> list[tuple[str, object]]:
    pairs: list[tuple[str, object]] = [
        ("v", 2), ("kind", kind), ("case_tag", base64.b64encode(TAG).decode()),
        ("seq", 1 if kind == "report" else 2), ("source_public_key", base64.b64encode(SRC).decode()),
        ("category", "corruption" if kind == "report" else ""), ("body", "hola"),
        ("attachments", []), ("pad", ""),
    ]
    return [(k, override.get(k, v)) for k, v in pairs]


def _v3_reply_pairs(**override: object) -> list[tuple[str, object]]:
    pairs: list[tuple[str, object]] = [
        ("v", 3), ("kind", "reply"), ("report_id", "00ff00ff00ff00ff"),
        ("case_tag", base64.b64encode(TAG).decode()), ("seq", 1),
        ("source_public_key", base64.b64encode(SRC).decode()), ("body", "hola"), ("pad", ""),
    ]
    return [(k, override.get(k, v)) for k, v in pairs]


def test_envelope_v2_known_answer_bytes_and_round_trip() -> None:
    from whistle.core.crypto import Binding

    env = Envelope(kind="report", category="medication", body="Ñandú",
                   binding=Binding(case_tag=TAG, seq=1, source_public_key=SRC))
    raw = env.to_bytes()
    prefix = (b'{"v":2,"kind":"report","case_tag":"ZGVmZ2hpamtsbW5vcHFycw==","seq":1,'
              b'"source_public_key":"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",'
              b'"category":"medication","body":"\xc3\x91and\xc3\xba","attachments":[],"pad":"')
    assert raw == prefix + b" " * (1024 - len(prefix) - 2) + b'"}'
    parsed = Envelope.from_bytes(raw)
    assert parsed == env and parsed.version == 2 and parsed.source_public_key == SRC
    message = Envelope(kind="message", body="más", attachments=(_attachment("a.pdf"),),
                       binding=Binding(TAG, 7, SRC))
    assert Envelope.from_bytes(message.to_bytes()) == message
    assert [k for k, _ in json.loads(message.to_bytes(), object_pairs_hook=lambda p: p)] == [
        "v", "kind", "case_tag", "seq", "source_public_key", "category", "body", "attachments", "pad"]
    # Without a binding: version 1, exactly as before.
    assert Envelope(kind="report", body="x").version == 1


def test_envelope_v3_reply_round_trip_and_versions() -> None:
    from whistle.core.crypto import Binding

    reply = Envelope(kind="reply", body="Gracias", report_id="00ff00ff00ff00ff",
                     binding=Binding(TAG, 4, SRC))
    raw = reply.to_bytes()
    assert raw.startswith(b'{"v":3,"kind":"reply","report_id":"00ff00ff00ff00ff","case_tag":"')
    parsed = Envelope.from_bytes(raw)
    assert parsed == reply and parsed.version == 3 and parsed.binding is not None
    assert parsed.binding.seq == 4
    v2 = Envelope(kind="reply", body="x", report_id="00ff00ff00ff00ff", recipient=SRC)
    assert v2.version == 2 and Envelope.from_bytes(v2.to_bytes()) == v2
    assert Envelope(kind="reply", body="x").version == 1
    # Shapes no version has.
    for bad in (Envelope(kind="reply", body="x", binding=Binding(TAG, 1, SRC)),  # no report id
                Envelope(kind="reply", body="x", report_id="00ff00ff00ff00ff"),  # no recipient
                Envelope(kind="report", body="x", binding=Binding(TAG, 2, SRC)),  # report seq 2
                Envelope(kind="message", body="x", binding=Binding(TAG, 1, SRC)),  # message seq 1
                Envelope(kind="report", body="x", report_id="00ff00ff00ff00ff")):
        with pytest.raises(EnvelopeFormatError):
            bad.to_bytes()


@pytest.mark.parametrize("case_tag,seq,key", [
    (bytes(15), 1, SRC), (bytes(17), 1, SRC), (TAG, 0, SRC), (TAG, True, SRC), (TAG, 1, bytes(31)),
])
def test_binding_refuses_bad_fields(case_tag: bytes, seq: int, key: bytes) -> None:
    from whistle.core.crypto import Binding

    with pytest.raises(EnvelopeFormatError):
        Binding(case_tag, seq, key)


@pytest.mark.parametrize("pairs", [
    _v2_pairs(seq=2),  # a report is item 1
    _v2_pairs("message", seq=1),  # a message is item 2 or later
    _v2_pairs("message", category="corruption"),
    _v2_pairs(seq=True), _v2_pairs(seq=1.0), _v2_pairs(seq="1"), _v2_pairs(seq=0), _v2_pairs(seq=-1),
    _v2_pairs(seq=2**31),
    _v2_pairs(case_tag=base64.b64encode(bytes(15)).decode()),
    _v2_pairs(case_tag=base64.b64encode(TAG).decode().rstrip("=")),  # not canonical
    _v2_pairs(case_tag=" " + base64.b64encode(TAG).decode()),
    _v2_pairs(case_tag=None),
    _v2_pairs(source_public_key=base64.b64encode(bytes(33)).decode()),
    _v2_pairs(source_public_key=base64.urlsafe_b64encode(b"\xff" * 32).decode()),
    _v2_pairs(v=3), _v2_pairs("reply"),
    [p for p in _v2_pairs() if p[0] != "case_tag"],
    [p for p in _v2_pairs() if p[0] != "seq"],
    [*_v2_pairs()[:2], _v2_pairs()[3], _v2_pairs()[2], *_v2_pairs()[4:]],  # order
    [*_v2_pairs()[:-1], ("extra", 1), _v2_pairs()[-1]],
    _v3_reply_pairs(report_id="00FF00FF00FF00FF"), _v3_reply_pairs(report_id=5),
    _v3_reply_pairs(seq=0), _v3_reply_pairs(v=2), _v3_reply_pairs(kind="message"),
    [p for p in _v3_reply_pairs() if p[0] != "report_id"],
    [*_v3_reply_pairs()[:-1], ("attachments", []), _v3_reply_pairs()[-1]],
])
def test_envelope_v2_v3_reader_refuses_malformed(pairs: list[tuple[str, object]]) -> None:
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(_padded(pairs))


def test_envelope_reader_refuses_duplicate_keys() -> None:
    raw = _padded(_v2_pairs())
    doubled = raw.replace(b'"seq":1,', b'"seq":1,"seq":1,', 1).replace(b" " * 8 + b'"}', b'"}')
    assert len(doubled) == len(raw)
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(doubled)


def test_reply_v3_sealed_with_tag_and_seq_opens_with_checks() -> None:
    from whistle.core.crypto import UnitSigningKey
    from whistle.core.replies import RepliesError, ReplyAuthError, open_reply, seal_reply

    source, unit = UnitSecretKey.generate(), UnitSigningKey.generate()
    reply = seal_reply("Gracias", "00ff00ff00ff00ff", source.public_key, unit, case_tag=TAG, seq=3)
    raw = SealedBox(source.nacl_key).decrypt(reply.sealed)
    assert raw.startswith(b'{"v":3,"kind":"reply","report_id":"00ff00ff00ff00ff","case_tag":"')
    opened = open_reply(reply, source, unit.verify_key, case_tag=TAG)
    assert (opened.body, opened.seq, opened.version) == ("Gracias", 3, 3)
    assert type(opened.body) is str and "Gracias" not in repr(opened)
    assert open_reply(reply, source, unit.verify_key).seq == 3  # no tag to check against
    with pytest.raises(ReplyAuthError, match="another case"):
        open_reply(reply, source, unit.verify_key, case_tag=bytes(16))
    # A version-2 reply (signed, unbound) still opens: no number, the caller decides.
    old = seal_reply("Antigua", "00ff00ff00ff00ff", source.public_key, unit)
    opened = open_reply(old, source, unit.verify_key, case_tag=TAG)
    assert (opened.body, opened.seq, opened.version) == ("Antigua", None, 2)
    with pytest.raises(RepliesError):
        seal_reply("x", "00ff00ff00ff00ff", source.public_key, unit, case_tag=TAG)
    with pytest.raises(RepliesError):
        seal_reply("x", "00ff00ff00ff00ff", source.public_key, unit, case_tag=bytes(15), seq=1)


def _answered_report(fields: tuple[tuple[str, str], ...]) -> Envelope:
    return Envelope(kind="report", category="medication", body="Falta insulina.",
                    binding=Binding(case_tag=bytes(range(16)), seq=1,
                                    source_public_key=bytes(range(32))), fields=fields)


def test_envelope_v2_fields_round_trip_after_category_and_left_out_when_empty() -> None:
    answered = _answered_report((("province", "Pichincha"), ("month", "2026-11")))
    raw = answered.to_bytes()
    doc = json.loads(raw)
    assert list(doc) == ["v", "kind", "case_tag", "seq", "source_public_key", "category", "fields",
                         "body", "attachments", "pad"]
    assert Envelope.from_bytes(raw).answers == {"province": "Pichincha", "month": "2026-11"}
    # Without answers the key is absent: the v2 layout every other writer (the browser) produces.
    assert "fields" not in json.loads(_answered_report(()).to_bytes())


@pytest.mark.parametrize("fields", [
    (("Province", "x"),),                     # not a code: upper case
    (("province", "x" * 201),),               # longer than 200 characters
    tuple((f"q{i}", "x") for i in range(33)),  # more than 32 answers
])
def test_envelope_v2_fields_refused_when_malformed(fields: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(EnvelopeFormatError):
        _answered_report(fields).to_bytes()


def test_envelope_v2_fields_reader_refuses_bad_shapes() -> None:
    raw = json.loads(_answered_report((("province", "Loja"),)).to_bytes())
    for bad in ({}, {"province": 3}, ["province"], {"a-b": "x"}):
        doc = dict(raw, fields=bad, pad="")
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        text = text[:-2] + " " * (-len(text.encode()) % 1024) + text[-2:]
        with pytest.raises(EnvelopeFormatError):
            Envelope.from_bytes(text.encode())
    # Only reports carry answers; a message with "fields" is refused by its exact field list.
    with pytest.raises(EnvelopeFormatError):
        Envelope(kind="message", body="x", binding=Binding(case_tag=bytes(16), seq=2,
                 source_public_key=bytes(32)), fields=(("province", "Loja"),)).to_bytes()
