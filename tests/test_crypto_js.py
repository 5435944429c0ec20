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
    sums = (Path(__file__).parent.parent / "whistle/static/vendor/libsodium/SHA256SUMS").read_text()
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
