# SPDX-License-Identifier: AGPL-3.0-or-later
"""Browser crypto (whistle/static/js/whistle-crypto.js on vendored libsodium.js) against PyNaCl.

Checked with PyNaCl alone, not with whistle's own crypto module, so that a shared mistake cannot
hide: what the browser produces must open and parse exactly as docs/protocol.md says.
The vectors come from tests/data/make_js_vectors.js (committed, so these need no node); the
node-driven tests at the end run the JavaScript itself when node is installed.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import nacl.bindings as b
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import pytest

DATA = Path(__file__).parent / "data"
VECTORS = DATA / "libsodium_js_vectors.json"
ENVELOPE_CHECK = DATA / "js_envelope_check.js"

REPORT_KEYS = ["v", "kind", "category", "body", "attachments", "pad"]
REPLY_KEYS = ["v", "kind", "body", "pad"]
ATTACHMENT_KEYS = ["name", "type", "size", "key"]

CHUNK = 65536
ABYTES = b.crypto_secretstream_xchacha20poly1305_ABYTES
HEADERBYTES = b.crypto_secretstream_xchacha20poly1305_HEADERBYTES
TAG_FINAL = b.crypto_secretstream_xchacha20poly1305_TAG_FINAL
TAG_MESSAGE = b.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE


def b64d(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def pattern(length: int) -> bytes:
    return bytes((i * 7 + 3) % 256 for i in range(length))


def python_fingerprint(public_key: bytes) -> str:
    digest = nacl.hash.blake2b(public_key, digest_size=16, encoder=nacl.encoding.RawEncoder)
    hexed = digest.hex().upper()
    return " ".join(hexed[i : i + 4] for i in range(0, 32, 4))


def ordered(raw: bytes) -> Any:
    """Parse JSON keeping every object's key order (nested objects become lists of pairs)."""
    return json.loads(raw.decode("utf-8"), object_pairs_hook=list)


def compact(obj: object) -> bytes:
    """The protocol's serialisation, as the Python side writes it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def python_envelope(fields: dict[str, Any]) -> bytes:
    """Section 2's padding rule, computed independently of the JavaScript."""
    unpadded = compact({**fields, "pad": ""})
    return compact({**fields, "pad": " " * ((1024 - len(unpadded) % 1024) % 1024)})


def decrypt_stream(ciphertext: bytes, key: bytes) -> tuple[bytes, list[int]]:
    """A section-3 reader: 65,553-byte chunks, the last may be shorter, FINAL only at the end."""
    state = b.crypto_secretstream_xchacha20poly1305_state()
    b.crypto_secretstream_xchacha20poly1305_init_pull(state, ciphertext[:HEADERBYTES], key)
    plaintext = bytearray()
    tags = []
    offset = HEADERBYTES
    while offset < len(ciphertext):
        chunk = ciphertext[offset : offset + CHUNK + ABYTES]
        offset += len(chunk)
        assert TAG_FINAL not in tags, "data after the FINAL chunk"
        message, tag = b.crypto_secretstream_xchacha20poly1305_pull(state, chunk)
        plaintext += message
        tags.append(tag)
    return bytes(plaintext), tags


def expected_stream_length(size: int) -> int:
    # whistle-crypto.js always ends on a short chunk, so a multiple of 65,536 gets an empty FINAL.
    return HEADERBYTES + size + ABYTES * (size // CHUNK + 1)


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return result


@pytest.fixture(scope="module")
def envelope(vectors: dict[str, Any]) -> bytes:
    return b64d(vectors["envelope_plaintext"])


def unit_box(vectors: dict[str, Any]) -> nacl.public.SealedBox[nacl.public.PrivateKey]:
    secret = nacl.public.PrivateKey(b64d(vectors["unit_secret_key"]))
    assert bytes(secret.public_key) == b64d(vectors["unit_public_key"])
    return nacl.public.SealedBox(secret)


# --- vectors made by the JavaScript ------------------------------------------------------------


def test_vectors_record_vendored_version(vectors: dict[str, Any]) -> None:
    assert vectors["libsodium_wrappers_version"] == "0.8.4"
    sums = (Path(__file__).parent.parent / "whistle/static/vendor/libsodium-sumo/SHA256SUMS").read_text()
    assert f"{vectors['libsodium_wrappers_sha256']}  libsodium-wrappers.js" in sums


def test_sealed_envelope_opens_to_envelope_plaintext(
    vectors: dict[str, Any], envelope: bytes
) -> None:
    sealed = b64d(vectors["sealed_envelope"])
    assert unit_box(vectors).decrypt(sealed) == envelope
    assert len(sealed) == len(envelope) + 48


def test_sealed_envelope_rejects_other_key(vectors: dict[str, Any]) -> None:
    other = nacl.public.SealedBox(nacl.public.PrivateKey.generate())
    with pytest.raises(nacl.exceptions.CryptoError):
        other.decrypt(b64d(vectors["sealed_envelope"]))


def test_envelope_length_is_multiple_of_1024(envelope: bytes) -> None:
    assert len(envelope) > 0
    assert len(envelope) % 1024 == 0


def test_envelope_keys_follow_protocol_order(envelope: bytes) -> None:
    pairs = ordered(envelope)
    assert [k for k, _ in pairs] == REPORT_KEYS
    attachments = dict(pairs)["attachments"]
    assert len(attachments) == 3
    for attachment in attachments:
        assert [k for k, _ in attachment] == ATTACHMENT_KEYS


def test_envelope_is_compact_utf8_json(envelope: bytes) -> None:
    obj = json.loads(envelope.decode("utf-8"))
    assert compact(obj) == envelope
    assert b"\\u" not in envelope
    assert set(obj["pad"]) <= {" "}


def test_envelope_fields_match_inputs(vectors: dict[str, Any], envelope: bytes) -> None:
    obj = json.loads(envelope.decode("utf-8"))
    assert obj["v"] == 1
    assert obj["kind"] == "report"
    assert obj["category"] == "corruption"
    assert obj["body"] == unicodedata.normalize("NFC", vectors["body"])
    assert obj["body"] == "Canario de prueba: el director cobra comisiones — ñandú 🦜"
    expected = [
        {"name": a["name"], "type": a["type"], "size": a["size"], "key": a["attachment_key"]}
        for a in vectors["attachments"]
    ]
    assert obj["attachments"] == expected
    assert [a["name"] for a in expected] == ["informe médico.pdf", "tabla.csv", "vacío.txt"]
    for attachment in obj["attachments"]:
        assert len(b64d(attachment["key"])) == 32


def test_envelope_equals_python_serialisation(envelope: bytes) -> None:
    obj = json.loads(envelope.decode("utf-8"))
    del obj["pad"]
    assert python_envelope(obj) == envelope


def test_fingerprint_matches_python(vectors: dict[str, Any]) -> None:
    assert vectors["fingerprint"] == python_fingerprint(b64d(vectors["unit_public_key"]))


@pytest.mark.parametrize("index,size", [(0, 70000), (1, 65536), (2, 0)])
def test_attachment_stream_decrypts_to_pattern(
    vectors: dict[str, Any], index: int, size: int
) -> None:
    attachment = vectors["attachments"][index]
    assert attachment["size"] == size
    ciphertext = b64d(attachment["attachment_ciphertext"])
    assert len(ciphertext) == expected_stream_length(size)
    plaintext, tags = decrypt_stream(ciphertext, b64d(attachment["attachment_key"]))
    assert plaintext == pattern(size)
    assert tags == [TAG_MESSAGE] * (len(tags) - 1) + [TAG_FINAL]
    assert len(tags) == size // CHUNK + 1


def test_attachment_stream_rejects_tampering(vectors: dict[str, Any]) -> None:
    attachment = vectors["attachments"][0]
    ciphertext = bytearray(b64d(attachment["attachment_ciphertext"]))
    ciphertext[HEADERBYTES + CHUNK + ABYTES + 5] ^= 1
    with pytest.raises(nacl.exceptions.RuntimeError):
        decrypt_stream(bytes(ciphertext), b64d(attachment["attachment_key"]))


# --- the JavaScript itself, when node is there -------------------------------------------------
# Each of these starts node (twice: with and without WebAssembly), so they are marked slow; the
# stored vectors above keep checking the same bytes in the quick inner loop.


@pytest.fixture(scope="module", params=["wasm", "no-wasm"])
def js_check(request: pytest.FixtureRequest) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the JavaScript is covered only by the stored vectors")
    args = [node, str(ENVELOPE_CHECK)] + (["--no-wasm"] if request.param == "no-wasm" else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["ok"] is True
    assert result["wasm"] is (request.param == "wasm")
    return result


@pytest.mark.slow
def test_js_envelopes_are_padded_and_ordered(js_check: dict[str, Any]) -> None:
    for name, encoded in js_check["envelopes"].items():
        raw = b64d(encoded)
        assert len(raw) % 1024 == 0, name
        keys = [k for k, _ in ordered(raw)]
        assert keys == (REPLY_KEYS if name.startswith("reply") else REPORT_KEYS), name
        obj = json.loads(raw.decode("utf-8"))
        assert compact(obj) == raw, name
        del obj["pad"]
        assert python_envelope(obj) == raw, name


@pytest.mark.slow
def test_js_envelope_body_is_nfc_and_well_formed(js_check: dict[str, Any]) -> None:
    obj = json.loads(b64d(js_check["envelopes"]["report"]).decode("utf-8"))
    assert obj["body"] == unicodedata.normalize("NFC", obj["body"])
    assert "mañana, café 🦜 \ufffd fin" in obj["body"]
    assert [
        k for k, _ in ordered(b64d(js_check["envelopes"]["report"]))[4][1][0]
    ] == ATTACHMENT_KEYS


@pytest.mark.slow
def test_js_envelope_pads_only_when_needed(js_check: dict[str, Any]) -> None:
    exact = b64d(js_check["envelopes"]["reply_exact"])
    assert len(exact) == 1024
    assert json.loads(exact.decode("utf-8"))["pad"] == ""
    assert len(b64d(js_check["envelopes"]["reply_over"])) == 2048


@pytest.mark.slow
def test_js_message_envelope_has_empty_category(js_check: dict[str, Any]) -> None:
    obj = json.loads(b64d(js_check["envelopes"]["message"]).decode("utf-8"))
    assert obj["kind"] == "message"
    assert obj["category"] == ""
    assert obj["attachments"] == []


@pytest.mark.slow
def test_js_fingerprint_matches_python(js_check: dict[str, Any]) -> None:
    fp = js_check["fingerprint"]
    assert fp["fingerprint"] == python_fingerprint(b64d(fp["public_key"]))


@pytest.mark.slow
def test_js_sealed_envelope_opens_with_pynacl(js_check: dict[str, Any]) -> None:
    sealed = js_check["sealed"]
    box = nacl.public.SealedBox(nacl.public.PrivateKey(b64d(sealed["secret_key"])))
    assert box.decrypt(b64d(sealed["sealed"])) == b64d(js_check["envelopes"]["report"])


@pytest.mark.slow
def test_js_stream_lengths_follow_protocol(js_check: dict[str, Any]) -> None:
    sizes = {int(size): s["ciphertext_length"] for size, s in js_check["streams"].items()}
    assert set(sizes) == {0, 1, 65535, 65536, 65537, 131072, 140000}
    for size, length in sizes.items():
        assert length == expected_stream_length(size), size


@pytest.mark.slow
def test_js_stream_decrypts_with_pynacl(js_check: dict[str, Any]) -> None:
    small = js_check["small_stream"]
    plaintext, tags = decrypt_stream(b64d(small["ciphertext"]), b64d(small["key"]))
    assert plaintext == pattern(small["plaintext_length"])
    assert tags == [TAG_MESSAGE, TAG_FINAL]


# --- protocol v2: the browser derives, binds and checks replies (tests/data/js_v2_check.js) -----

V2_CHECK = DATA / "js_v2_check.js"
CRYPTO_JS = Path(__file__).parent.parent / "whistle" / "static" / "js" / "whistle-crypto.js"
TRICKY = ["  Ábaco, PERRO\tgato ", "ÑANDÚ;straße.STRASSE", "ﬁesta ﬂor ǅemal", "Ｆｕｌｌ ｗｉｄｔｈ",
          "ΣΊΣΥΦΟΣ ὀδυσσεύς", "ſtern µ ǰ İstanbul", "a\u00a0b\u2003c\u3000d\u0085e\u001cf",
          "x\ufeffy", "n\u0303o\u0308\u0301 e\u0301", "\u1e9e\u00df", "\u0130\u0131", "Ꭰꭰ", "ꭰᏸ",
          "tres,,, ;; .. palabras", "", "   ", "t-shirt CAFÉ-bar", "ㄱㅏ 가 각", "👍🏽 emoji",
          "\u0345\u0334 marks", "\u1f80\u1fb3 ypogegrammeni", "ﬀ ﬃ ﬅ", "Åström Ørsted Łódź"]


def _run_v2(request: dict[str, Any], *, wasm: bool = True) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as fh:
        json.dump(request, fh, ensure_ascii=False)
        fh.flush()
        args = [node, str(V2_CHECK), fh.name] + ([] if wasm else ["--no-wasm"])
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["wasm"] is wasm
    return result


def _params(salt: bytes) -> dict[str, Any]:
    return {"alg": "argon2id13", "salt": base64.b64encode(salt).decode(), "opslimit": 1,
            "memlimit": 8 * 1024, "bytes": 64}


def test_js_casefold_table_matches_python() -> None:
    """whistle-crypto.js's table of where casefold() differs from lower() is Python's."""
    import re

    source = CRYPTO_JS.read_text(encoding="utf-8")
    start = source.index("var CASEFOLD_TABLE = (")
    block = source[start : source.index("  );", start)]
    text = "".join(re.findall(r"'([^']*)'", block))
    decoded = re.sub(r"\\u\{([0-9a-f]+)\}|\\u([0-9a-f]{4})",
                     lambda m: chr(int(m.group(1) or m.group(2), 16)), text)
    table = dict(pair.split(":", 1) for pair in decoded.split(","))
    expected = {chr(cp): chr(cp).casefold() for cp in range(0x110000)
                if not 0xD800 <= cp < 0xE000 and chr(cp).casefold() != chr(cp).lower()}
    assert table == expected


@pytest.mark.slow
def test_js_normalise_matches_python_on_tricky_texts_and_every_code_point() -> None:
    """normalise() in the browser is whistle.core.passphrase.normalise: on tricky texts, and on
    every code point Python's Unicode database (14.0) assigns, alone and between two letters."""
    from whistle.core.passphrase import normalise

    points = [chr(cp) for cp in range(0x110000)
              if not 0xD800 <= cp < 0xE000 and unicodedata.category(chr(cp)) not in ("Cn", "Co")]
    inputs = TRICKY + points + ["A" + c + "b" for c in points]
    result = _run_v2({"normalise": inputs})
    mismatches = [(i, repr(text), result["normalise"][i], normalise(text))
                  for i, text in enumerate(inputs) if result["normalise"][i] != normalise(text)]
    assert mismatches[:20] == [], f"{len(mismatches)} mismatches"


@pytest.mark.slow
@pytest.mark.parametrize("wasm", [True, False], ids=["wasm", "no-wasm"])
def test_js_derives_the_same_keys_as_python(wasm: bool) -> None:
    """The same passphrase (as issued, or typed sloppily) gives in node what
    whistle.core.passphrase.derive gives: login hash, public key and case tag."""
    import os

    from whistle.core.passphrase import Argon2Params, derive

    salt = os.urandom(16)
    typed = ["ventana perro casa sol luna mar rio", "  VENTANA, Perro;casa.sol  luna mar río ",
             "cañón pingüino ÉXITO", "t-shirt CAFÉ-bar straße"]
    result = _run_v2({"derive": {"argon2": _params(salt), "passphrases": typed}}, wasm=wasm)
    params = Argon2Params(salt=salt, time_cost=1, memory_cost_kib=8)
    for text, got in zip(typed, result["derive"], strict=True):
        keys = derive(text, params)
        assert b64d(got["login_hash"]) == keys.login_hash, text
        assert b64d(got["public_key"]) == keys.public_key_bytes, text
        assert b64d(got["case_tag"]) == keys.case_tag, text
        assert nacl.hash.sha256(b64d(got["login_key"]), encoder=nacl.encoding.RawEncoder) == keys.login_hash
    assert result["derive"][0] == result["derive"][1]


@pytest.mark.slow
def test_js_v2_envelopes_open_and_parse_in_python() -> None:
    """A report and a message node seals open with the unit key and parse as v2 with
    whistle.core's reader, bound to the keys Python derives from the same passphrase, in the
    spec's field order; a report with seq 2, a message with seq 1 or a short tag are refused."""
    import os

    from whistle.core.crypto.envelope import Envelope
    from whistle.core.passphrase import Argon2Params, derive

    salt = os.urandom(16)
    unit = nacl.public.PrivateKey.generate()
    phrase = "ventana perro casa sol luna mar rio"
    result = _run_v2({"derive": {"argon2": _params(salt), "passphrases": []},
                      "seal": {"passphrase": phrase, "unit_public_key": base64.b64encode(
                          bytes(unit.public_key)).decode(), "category": "corruption",
                          "body": "Denuncia — ñandú 🦜", "message_body": "Seguimiento", "message_seq": 2}})
    keys = derive(phrase, Argon2Params(salt=salt, time_cost=1, memory_cost_kib=8))
    box = nacl.public.SealedBox(unit)
    report_raw = box.decrypt(b64d(result["seal"]["report"]))
    message_raw = box.decrypt(b64d(result["seal"]["message"]))
    assert [k for k, _ in ordered(report_raw)] == [
        "v", "kind", "case_tag", "seq", "source_public_key", "category", "body", "attachments", "pad"]
    assert [k for k, _ in ordered(message_raw)] == [k for k, _ in ordered(report_raw)]
    for raw, kind, seq in ((report_raw, "report", 1), (message_raw, "message", 2)):
        assert len(raw) % 1024 == 0
        env = Envelope.from_bytes(raw)
        assert env.version == 2 and env.kind == kind
        assert env.binding is not None
        assert env.binding.case_tag == keys.case_tag and env.binding.seq == seq
        assert env.binding.source_public_key == keys.public_key_bytes
    report = Envelope.from_bytes(report_raw)
    assert report.category == "corruption" and report.body == "Denuncia — ñandú 🦜"
    (attachment,) = report.attachments
    assert attachment.name == "informe ñ.pdf" and attachment.size == 70000
    plaintext, _ = decrypt_stream(b64d(result["seal"]["attachment"]), b64d(result["seal"]["attachment_key"]))
    assert plaintext == b"\x07" * 70000
    assert result["seal"]["refused"] == [True, True, True]


@pytest.mark.slow
def test_js_checks_replies_like_the_server() -> None:
    """Replies sealed and signed in Python: node opens the unit's v3 and v2 replies, and withholds
    a forged tag, a replayed number, another report's reply, a bad or missing signature; one the
    unit signed that does not open is 'undecryptable'."""
    import os

    from whistle.core.crypto import UnitPublicKey, UnitSigningKey
    from whistle.core.passphrase import Argon2Params, derive
    from whistle.core.replies import SealedReply, reply_signed_bytes, seal_reply

    salt = os.urandom(16)
    phrase = "ventana perro casa sol luna mar rio"
    keys = derive(phrase, Argon2Params(salt=salt, time_cost=1, memory_cost_kib=8))
    signing, other = UnitSigningKey.generate(), UnitSigningKey.generate()
    me = UnitPublicKey(keys.public_key_bytes)
    rid = "ab12cd34ef56ab78"

    def item(reply: SealedReply) -> dict[str, str]:
        return {"sealed": base64.b64encode(reply.sealed).decode(),
                "signature": base64.b64encode(reply.signature).decode()}

    good = seal_reply("Gracias 🦜", rid, me, signing, case_tag=keys.case_tag, seq=1)
    legacy = seal_reply("Sin número", rid, me, signing)
    forged = seal_reply("Falsa", rid, me, signing, case_tag=os.urandom(16), seq=2)
    replay = seal_reply("Otra vez", rid, me, signing, case_tag=keys.case_tag, seq=1)
    elsewhere = seal_reply("Para otro", "ffff0000ffff0000", me, signing, case_tag=keys.case_tag, seq=3)
    # Signed for this report, sealed for another one (moved by the server).
    elsewhere = SealedReply(rid, elsewhere.recipient, elsewhere.sealed,
                            signing.sign(reply_signed_bytes(rid, me.encode(), elsewhere.sealed)))
    unsigned = {"sealed": item(good)["sealed"], "signature": ""}
    wrong_signer = seal_reply("Impostor", rid, me, other, case_tag=keys.case_tag, seq=4)
    junk = os.urandom(1024 + 48)
    garbled = {"sealed": base64.b64encode(junk).decode(), "signature": base64.b64encode(
        signing.sign(reply_signed_bytes(rid, me.encode(), junk))).decode()}
    items = [item(good), item(legacy), item(forged), item(replay), item(elsewhere), unsigned,
             item(wrong_signer), garbled]
    result = _run_v2({"derive": {"argon2": _params(salt), "passphrases": []},
                      "replies": {"passphrase": phrase, "report_id": rid,
                                  "verify_key": base64.b64encode(bytes(signing.verify_key.encode())).decode(),
                                  "items": items}})["replies"]
    assert result[0] == {"ok": True, "body": "Gracias 🦜", "seq": 1, "version": 3}
    assert result[1] == {"ok": True, "body": "Sin número", "seq": None, "version": 2}
    assert [r["ok"] for r in result[2:]] == [False] * 6
    assert [r["reason"] for r in result[2:]] == ["withheld"] * 5 + ["undecryptable"]
    assert "case tag" in result[2]["detail"] and "replayed" in result[3]["detail"]


@pytest.mark.slow
def test_js_draws_passphrases_from_the_served_list() -> None:
    """The served word list (one word a line, LF) is checked against its SHA-256 and size, and
    the passphrase is drawn from it with the requested number of words."""
    import hashlib

    from whistle.core.passphrase import word_count, wordlist

    words = wordlist("en")
    text = "".join(w + "\n" for w in words)
    result = _run_v2({"wordlist": {"text": text, "sha256": hashlib.sha256(text.encode()).hexdigest(),
                                   "size": len(words), "words": word_count("en")}})["wordlist"]
    assert result["refused_bad_checksum"] is True
    chosen = set(words)
    for phrase in result["drawn"]:
        assert len(phrase.split(" ")) == word_count("en") and set(phrase.split(" ")) <= chosen
    assert len(set(result["drawn"])) == len(result["drawn"])


@pytest.mark.slow
def test_js_report_fields_are_the_pythons() -> None:
    """A report with structured answers built by whistle-crypto.js is byte for byte the one
    whistle.core builds (``fields`` after ``category``, NFC, empty answers left out, no key at all
    when none is left), and node refuses what the protocol refuses (section 2)."""
    import os

    from whistle.core.crypto.envelope import Binding, Envelope
    from whistle.core.passphrase import Argon2Params, derive

    salt = os.urandom(16)
    phrase = "ventana perro casa sol luna mar rio"
    answers = [["province", "pichincha"], ["facility", "Hospital Carlos Andrade Mari\u0301n"],
               ["month", "2026-01"], ["medication", ""], ["money_demanded", "yes"]]
    bad = [[["Province", "x"]], [["1abc", "x"]], [["province", "x" * 201]],
           [["province", "a"], ["province", "b"]], [["province", 5]],
           [[f"q{i}", "x"] for i in range(33)]]
    result = _run_v2({"derive": {"argon2": _params(salt), "passphrases": []},
                      "fields": {"passphrase": phrase, "category": "corruption",
                                 "body": "Me pidieron dinero.", "fields": answers, "bad": bad}})
    keys = derive(phrase, Argon2Params(salt=salt, time_cost=1, memory_cost_kib=8))
    binding = Binding(case_tag=keys.case_tag, seq=1, source_public_key=keys.public_key_bytes)
    expected = Envelope(kind="report", category="corruption", body="Me pidieron dinero.",
                        binding=binding, fields=(("province", "pichincha"),
                                                 ("facility", "Hospital Carlos Andrade Marín"),
                                                 ("month", "2026-01"), ("money_demanded", "yes")))
    assert b64d(result["fields"]["report"]) == expected.to_bytes()
    parsed = Envelope.from_bytes(b64d(result["fields"]["report"]))
    assert parsed.answers["facility"] == "Hospital Carlos Andrade Marín"
    assert [k for k, _ in ordered(b64d(result["fields"]["report"]))][5:7] == ["category", "fields"]
    no_answers = Envelope(kind="report", category="corruption", body="Me pidieron dinero.",
                          binding=binding)
    assert b64d(result["fields"]["empty"]) == no_answers.to_bytes()
    assert result["fields"]["refused"] == [True] * (len(bad) + 1)
