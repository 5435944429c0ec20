# SPDX-License-Identifier: AGPL-3.0-or-later
"""Hostile input: every parser raises only its documented error, every route answers 4xx, never 5xx.

Three parts:

* property-based tests (hypothesis) for the parsers that tests/test_crypto.py and
  tests/test_bundle.py do not already fuzz: replies files, bundles built as zips by hand, passphrase
  normalisation and derivation, attachment streams in arbitrary pieces, near-valid envelopes,
  instance secrets, private key files, and the JavaScript-off form;
* a route fuzzer that walks ``app.url_map`` as an anonymous visitor, a logged-in source, an
  investigator and an admin, sends malformed bodies, paths and query strings, and checks that
  nothing answers 5xx and nothing is written to the database;
* upload limits against a real server process (Werkzeug's development server, as ``whistle run``
  starts it): an announced ``Content-Length`` over the limit is refused at once, and a chunked
  body that never ends is stopped at the limit without growing the server's memory.

Which layer enforces the upload limit (checked by the live-server tests below):

* ``Content-Length`` over ``MAX_CONTENT_LENGTH``: Werkzeug's request object
  (``werkzeug.wsgi.get_input_stream``) raises 413 the first time the body is touched, before
  reading any of it. Here that is Flask-WTF's CSRF check, which reads ``request.form``.
* ``Transfer-Encoding: chunked``: the development server de-chunks the body and sets
  ``wsgi.input_terminated``; Werkzeug then wraps the stream in ``LimitedStream(is_max=True)``, which
  raises 413 once the form parser has read ``MAX_CONTENT_LENGTH`` bytes. Until then file parts go
  to an encrypted spool file (whistle.server.uploads), never to memory. After answering, the development
  server *drains* whatever the client keeps sending (it reads and discards, 10 MB per read, up to
  10 GB or 1,000 reads) instead of closing at once: memory stays flat, but the connection and a
  thread stay busy while a client keeps sending. gunicorn (deploy/gunicorn.conf.py, checked here
  too) answers the same 413s from the same Werkzeug code, then closes the connection at once.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import select as io_select
import socket
import string
import tempfile
import time
import unicodedata
import urllib.parse
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nacl.pwhash
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from support import Account, LiveServer, csrf_token, form_tokens, investigator_login

from whistle.core.bundle import MANIFEST, BundleError, BundleReader, attachment_member, envelope_member
from whistle.core.crypto import (
    CIPHER_CHUNK_SIZE,
    MAX_BODY_CHARS,
    SEAL_OVERHEAD,
    Envelope,
    EnvelopeFormatError,
    KeyFormatError,
    StreamFormatError,
    UnitSecretKey,
    WrongPassphraseError,
    encrypt_stream,
    iter_decrypt,
)
from whistle.core.passphrase import Argon2Params, PassphraseError, derive, normalise, wordlist
from whistle.core.replies import RepliesError, SealedReply, dump_replies, parse_replies
from whistle.server.config import Config
from whistle.server.instance import InstanceError, InstanceSecrets
from whistle.server.models import Base

FAST = settings(max_examples=100, deadline=None)
# The web tests share one app (and its database) across examples: that is the point, a bad example
# must leave the database as it found it.
WEB = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
TINY = Argon2Params(salt=b"s" * 16, time_cost=1, memory_cost_kib=8)
# Python's json module raises RecursionError (not ValueError) on deep nesting.
DEEP_JSON = b"[" * 100_000
B64_32 = base64.b64encode(bytes(32)).decode()


def _pseudo_random(seed: bytes, n: int) -> bytes:
    """Deterministic bytes for a hypothesis seed (shrinks well, no global RNG)."""
    return hashlib.shake_256(seed).digest(n)


def _json_atoms(extra: list[object]) -> st.SearchStrategy[object]:
    atoms = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=12)
    )
    return atoms | st.sampled_from(extra) if extra else atoms


def _json_tree(keys: list[str], extra: list[object]) -> st.SearchStrategy[object]:
    return st.recursive(
        _json_atoms(extra),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.sampled_from(keys) | st.text(max_size=4), children, max_size=8)
        ),
        max_leaves=30,
    )


def _dumps(doc: object) -> bytes:
    # allow_nan: NaN and Infinity are what Python's own json.loads accepts, so a hostile file may
    # hold them.
    return json.dumps(doc, allow_nan=True).encode("utf-8")


# =========================================================================== replies files

_HEXES = st.text(alphabet="0123456789abcdef", min_size=8, max_size=64)
_REPLY_KEYS = ["format", "v", "replies", "report_id", "recipient", "sealed"]
_REPLY_EXTRA: list[object] = [
    "whistle-replies",
    "deadbeefdeadbeef",
    B64_32,
    1,
    1.0,
    base64.b64encode(bytes(1024 + SEAL_OVERHEAD)).decode(),
]


def _reply_entry() -> st.SearchStrategy[object]:
    """A reply entry that is nearly right: each field valid, mistyped or missing."""
    value = {
        "report_id": _HEXES | st.sampled_from(["", "DEADBEEF", "xyz", "0" * 65]) | _json_atoms([]),
        "recipient": st.sampled_from(
            [B64_32, B64_32[:-1], " " + B64_32 + "\n", "%%%%", base64.b64encode(bytes(31)).decode()]
        )
        | _json_atoms([]),
        "sealed": st.integers(-2, 3).map(
            lambda k: base64.b64encode(bytes(max(0, 1024 * k + SEAL_OVERHEAD))).decode()
        )
        | st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode())
        | _json_atoms([]),
    }
    return st.fixed_dictionaries({}, optional={**value, "extra": _json_atoms([])})


_REPLIES_DOC = st.fixed_dictionaries(
    {
        "format": st.sampled_from(["whistle-replies", "whistle-bundle", ""]) | _json_atoms([]),
        "v": st.sampled_from([1, 1.0, True, "1", 2, None]),
        "replies": st.lists(_reply_entry(), max_size=4) | _json_atoms([]),
    },
)


@FAST
@given(
    st.one_of(
        st.binary(max_size=300),
        _json_tree(_REPLY_KEYS, _REPLY_EXTRA).map(_dumps),
        _REPLIES_DOC.map(_dumps),
    )
)
@example(DEEP_JSON)
@example(b'{"format": "whistle-replies", "v": 1, "replies": ' + b"[" * 5000 + b"]" * 5000 + b"}")
@example(b"\xef\xbb\xbf{}")  # UTF-8 byte-order mark
@example(
    '{"format": "whistle-replies", "v": 1, "replies": [{"report_id": "\ud800"}]}'.encode(
        "utf-8", "surrogatepass"
    )
)
def test_parse_replies_raises_only_replieserror(data: bytes) -> None:
    try:
        replies = parse_replies(data)
    except RepliesError:
        return
    assert replies
    for reply in replies:
        assert re.fullmatch(r"[0-9a-f]{8,64}", reply.report_id)
        assert len(reply.recipient) == 32
        assert (len(reply.sealed) - SEAL_OVERHEAD) % 1024 == 0 and len(reply.sealed) > SEAL_OVERHEAD
    # What was accepted serialises back to an equivalent file.
    assert parse_replies(dump_replies(replies)) == replies


@FAST
@given(
    st.lists(
        st.tuples(
            _HEXES, st.binary(min_size=32, max_size=32), st.integers(1, 3), st.binary(min_size=4, max_size=8)
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda t: (t[2], t[3]),
    )
)
def test_parse_replies_round_trips_valid_files(entries: list[tuple[str, bytes, int, bytes]]) -> None:
    replies = [
        SealedReply(report_id=rid, recipient=key, sealed=_pseudo_random(seed, 1024 * blocks + SEAL_OVERHEAD),
                    signature=_pseudo_random(seed, 64))
        for rid, key, blocks, seed in entries
    ]
    data = dump_replies(replies)
    assert parse_replies(data) == replies
    assert dump_replies(parse_replies(data)) == data


# =========================================================================== bundles as hostile zips

_ITEM_IDS = ["aaaaaaaabbbbbbbb", "ccccccccdddddddd"]
_MEMBER_NAMES = st.sampled_from(
    [
        MANIFEST,
        envelope_member(_ITEM_IDS[0]),
        attachment_member(_ITEM_IDS[0], 0),
        attachment_member(_ITEM_IDS[0], 1),
        envelope_member(_ITEM_IDS[1]),
        "../evil",
        "/etc/passwd",
        "items/../../x.bin",
        f"items/{_ITEM_IDS[0]}/../../../x.bin",
        "..\\..\\evil.bin",
        "C:\\evil.bin",
        "items/ñandú/envelope.bin",
        "items/\u202eexe.bin/envelope.bin",
        f"items/{_ITEM_IDS[0]}/envelope.bin\x00.txt",
        f"items/{_ITEM_IDS[0].upper()}/envelope.bin",
        f"items/{_ITEM_IDS[0]}/",
        "manifest.json/",
        "./manifest.json",
        "",
    ]
) | st.text(max_size=30)


def _bundle_item(iid: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, object]]:
    def build(item_id: str, n: int) -> dict[str, object]:
        return {
            "id": item_id,
            "seq": n,
            "kind": "report",
            "created_on": "2025-03-01",
            "sealed_by": "browser",
            "envelope": envelope_member(item_id),
            "attachments": [attachment_member(item_id, i) for i in range(n)],
        }

    good = st.builds(build, iid, st.integers(0, 2))
    tree = _json_tree(
        ["id", "seq", "kind", "created_on", "sealed_by", "channel", "envelope", "attachments"],
        [envelope_member(_ITEM_IDS[0]), "report", "message", "2025-03-01", 0],
    )
    mutated = st.tuples(
        good,
        st.sampled_from(["id", "seq", "kind", "created_on", "sealed_by", "channel", "envelope",
                         "attachments"]),
        tree,
    ).map(lambda t: {**t[0], t[1]: t[2]})
    return good | mutated


_BUNDLE_MANIFEST = st.fixed_dictionaries(
    {
        "format": st.sampled_from(["whistle-bundle", "whistle-replies"]),
        "v": st.sampled_from([1, True, 1.0, "1"]),
        "created_on": st.sampled_from(["2025-03-02", "yesterday", 3]),
        "unit_fingerprint": st.sampled_from(["F39A 2CAD", None]),
        "reports": st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.sampled_from(["0123456789abcdef", "../..", "0123"]),
                    "received_on": st.sampled_from(["2025-03-01", "2025-3-1", None]),
                    "status": st.sampled_from(["received", 7]),
                    "sealed_by": st.just("browser"),
                    "source_public_key": st.just(B64_32),
                    "items": st.lists(_bundle_item(st.sampled_from(_ITEM_IDS) | _HEXES), max_size=3)
                    | _json_atoms([]),
                },
                # The channel that replaced sealed_by: well-formed, unknown, hostile or absent.
                optional={"channel": st.sampled_from(["browser", "server-form", "whatsapp",
                                                      "Browser\n", "", None, 7])},
            ),
            max_size=2,
        )
        | _json_atoms([]),
    }
)


@dataclass
class _ZipSpec:
    members: list[tuple[str, bytes, int]]
    manifest: bytes | None


_ZIPS = st.builds(
    _ZipSpec,
    members=st.lists(
        st.tuples(
            _MEMBER_NAMES,
            st.binary(max_size=64),
            st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
        ),
        max_size=6,
    ),
    manifest=st.none()
    | _BUNDLE_MANIFEST.map(_dumps)
    | _json_tree(["format", "v", "reports", "items"], ["whistle-bundle", 1]).map(_dumps)
    | st.sampled_from([b"[" * 5000, b"\xff\xfe", b"", b"null"]),
)


def _write_zip(path: Path, spec: _ZipSpec) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point
        with zipfile.ZipFile(path, "w") as zf:
            for name, data, method in spec.members:
                zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
            if spec.manifest is not None:
                zf.writestr(zipfile.ZipInfo(MANIFEST), spec.manifest)


def _open_bundle(path: Path) -> None:
    try:
        reader = BundleReader(path)
    except BundleError:
        return
    with reader:
        # Whatever was accepted is consistent: every listed member is safe and present.
        for _report, item in reader.iter_items():
            for name in [item.envelope, *item.attachments]:
                assert not name.startswith("/") and ".." not in name
                reader.size(name)


@FAST
@given(_ZIPS)
@example(_ZipSpec(members=[], manifest=b"[" * 5000))
def test_bundlereader_hostile_zip_raises_only_bundleerror(spec: _ZipSpec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.zip"
        _write_zip(path, spec)
        _open_bundle(path)


@FAST
@given(
    _ZIPS,
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 10_000),
)
def test_bundlereader_corrupted_zip_bytes_raise_only_bundleerror(
    spec: _ZipSpec, flips: list[tuple[int, int]], cut: int
) -> None:
    # The same zips with bytes overwritten (headers, sizes, flags, names) and possibly truncated.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.zip"
        _write_zip(path, spec)
        raw = bytearray(path.read_bytes())
        for pos, byte in flips:
            raw[pos % len(raw)] = byte
        if cut % 3 == 0:
            del raw[cut % len(raw) :]
        path.write_bytes(bytes(raw))
        _open_bundle(path)


def test_bundlereader_utf8_flagged_undecodable_name_is_bundleerror(tmp_path: Path) -> None:
    # A zip whose central directory says "names are UTF-8" (flag 0x800) and holds a name that is
    # not: zipfile raises UnicodeDecodeError while listing it.
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("é" * 4), b"x")
    raw = path.read_bytes().replace("é".encode() * 4, b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8")
    path.write_bytes(raw)
    with pytest.raises(BundleError):
        BundleReader(path)


# =========================================================================== passphrases

_SEPARATOR_CHARS = [" ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", ",", ".", ";", " , "]
_MARKS = ["\u0301", "\u0300", "\u0308", "\u0303", "\u0327", "\u030c", "\u0302"]
_TRICKY = st.sampled_from(
    list("ÁÉÍÓÚÑÜáéíóúñüßİıŉǰΐẞﬁﬀＡｚ¹½ǅᏸꭰᎠ🅰ⓐ")
    + _MARKS
    + [c for c in _SEPARATOR_CHARS if len(c) == 1]
    + ["\u200b", "\ufeff", "\x00", "\r", "\x1c", "\u2028", "\u0085"]
)


@FAST
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)) | _TRICKY, max_size=60))
@example("ꭰᏸ")  # Cherokee: case folding maps these to the *upper*-case letters
@example("ǅ ŉ ΐ ẞ")
def test_normalise_output_is_canonical_for_any_text(typed: str) -> None:
    once = normalise(typed)
    assert normalise(once) == once
    # "No upper case", in the sense that matters for matching: nothing left to fold. (Not
    # str.isupper(): Unicode folds Cherokee to its capital letters, and symbols such as U+1F170
    # are uppercase without any lower-case form.)
    assert once.casefold() == once
    assert not any(unicodedata.combining(c) for c in once)
    assert once == once.strip() and "  " not in once
    assert all(c == " " or not c.isspace() for c in once), "a whitespace other than U+0020 survived"
    assert not any(c in once for c in ",.;")


def _variant(word: str, choices: list[int]) -> str:
    """``word`` re-typed: letters upper-cased, accented (decomposed or composed), full-width."""
    out = []
    for c, how in zip(word, choices + [0] * len(word), strict=False):
        kind = how % 5
        if kind == 1:
            c = c.upper()
        elif kind == 2:
            c = c + _MARKS[how % len(_MARKS)]
        elif kind == 3:
            c = unicodedata.normalize("NFC", c + _MARKS[how % len(_MARKS)])
        elif kind == 4 and c in string.ascii_letters + string.digits:
            c = chr(ord(c) + 0xFEE0)  # full-width form
        out.append(c)
    return "".join(out)


@FAST
@given(lang=st.sampled_from(["es", "en"]), data=st.data())
def test_normalise_maps_accent_and_case_variants_of_list_words_to_the_words(
    lang: str, data: st.DataObject
) -> None:
    words = data.draw(st.lists(st.sampled_from(wordlist(lang)), min_size=1, max_size=7))
    seps = st.lists(st.sampled_from(_SEPARATOR_CHARS), min_size=1, max_size=3).map("".join)
    typed = data.draw(st.sampled_from(["", " ", "\t", "\u00a0"]))
    for word in words:
        typed += _variant(word, data.draw(st.lists(st.integers(0, 1000), max_size=len(word))))
        typed += data.draw(seps)
    assert normalise(typed) == " ".join(words)


@FAST
@given(st.text(alphabet=st.characters(exclude_categories=()) | _TRICKY, max_size=40))
@example("\ud800 perro")  # a lone surrogate (what surrogateescape makes of a bad byte)
@example(" ,.; \u3000")
def test_derive_any_text_gives_keys_or_passphraseerror(typed: str) -> None:
    try:
        keys = derive(typed, TINY)
    except PassphraseError:
        assert normalise(typed) == "" or any(0xD800 <= ord(c) < 0xE000 for c in typed)
        return
    assert normalise(typed) != ""
    assert len(keys.login_hash) == 32 and len(keys.public_key_bytes) == 32
    assert derive(normalise(typed), TINY).login_hash == keys.login_hash


# =========================================================================== attachment streams

_STREAM_KEY = bytes(range(32))


def _real_stream(size: int, seed: bytes) -> tuple[bytes, bytes]:
    plain = _pseudo_random(seed, size)
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(plain), out, _STREAM_KEY)
    return plain, out.getvalue()


def _pieces(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """``data`` cut at the given offsets, empty pieces included."""
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        yield data[last:cut]
        last = cut
    yield data[last:]


@FAST
@given(
    st.binary(max_size=400), st.lists(st.integers(0, 2**20), max_size=8), st.binary(min_size=30, max_size=34)
)
def test_iter_decrypt_arbitrary_bytes_raise_only_stream_errors(
    data: bytes, cuts: list[int], key: bytes
) -> None:
    with pytest.raises((StreamFormatError, KeyFormatError)):
        list(iter_decrypt(_pieces(data, cuts), key))


@FAST
@given(
    size=st.integers(0, 3 * 65536 + 10),
    seed=st.binary(min_size=4, max_size=4),
    cuts=st.lists(st.integers(0, 2**20), max_size=10),
    mutation=st.sampled_from(["none", "flip", "truncate", "append", "drop", "splice"]),
    where=st.integers(0, 2**20),
    byte=st.integers(1, 255),
)
def test_iter_decrypt_mutated_real_streams_any_chunking(
    size: int, seed: bytes, cuts: list[int], mutation: str, where: int, byte: int
) -> None:
    plain, ct = _real_stream(size, seed)
    pos = where % len(ct)
    if mutation == "flip":
        ct = ct[:pos] + bytes([ct[pos] ^ byte]) + ct[pos + 1 :]
    elif mutation == "truncate":
        ct = ct[:pos]
    elif mutation == "append":
        ct = ct + bytes([byte]) * (where % 70_000 + 1)
    elif mutation == "drop":
        ct = ct[:pos] + ct[pos + CIPHER_CHUNK_SIZE :]
    elif mutation == "splice":
        ct = ct[:pos] + ct[24 : 24 + where % 100] + ct[pos:]
    try:
        out = b"".join(iter_decrypt(_pieces(ct, cuts), _STREAM_KEY))
    except StreamFormatError:
        assert mutation != "none"
        return
    # Any accepted stream decrypts to exactly what was encrypted (only an empty splice or drop at
    # the very end, or the unmodified stream, can be accepted).
    assert out == plain


# =========================================================================== envelopes (near-valid)

_ENV_FIELDS = ["v", "kind", "category", "body", "attachments", "pad"]
_ATT_FIELDS = ["name", "type", "size", "key"]


def _near(valid: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return valid | _json_atoms([]) | st.lists(_json_atoms([]), max_size=2)


_NEAR_ATTACHMENT = st.fixed_dictionaries(
    {},
    optional={
        "name": _near(st.text(max_size=8)),
        "type": _near(st.just("text/plain")),
        "size": _near(st.integers(-3, 2**64)),
        "key": _near(st.sampled_from([B64_32, B64_32[:-2], "=" * 44])),
        "extra": st.just(1),
    },
)
_NEAR_ENVELOPE = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 1.0, True, "1", 0, 2]),
        "kind": st.sampled_from(["report", "message", "reply", "REPORT", "", None]),
        "category": _near(st.sampled_from(["corruption", ""])),
        "body": _near(st.text(max_size=20)),
        "attachments": st.lists(_NEAR_ATTACHMENT, max_size=3) | _json_atoms([]),
        "pad": st.sampled_from(["", " ", "  \t", "x", None]),
        "extra": st.just(0),
    },
)


def _to_block(doc: object, how: int) -> bytes:
    raw = json.dumps(doc, ensure_ascii=how % 2 == 0, allow_nan=True).encode()
    if how % 5 == 4:
        return raw  # not padded: length rarely a multiple of 1024
    return raw + b" " * (-len(raw) % 1024)


@FAST
@given(_NEAR_ENVELOPE, st.integers(0, 9))
@example({}, 0)
def test_envelope_from_bytes_near_valid_documents_raise_only_envelopeformaterror(
    doc: dict[str, object], how: int
) -> None:
    # tests/test_crypto.py fuzzes arbitrary JSON; these documents are shaped like envelopes with
    # one or more fields wrong, so they get past the first checks.
    try:
        env = Envelope.from_bytes(_to_block(doc, how))
    except EnvelopeFormatError:
        return
    assert env.kind in ("report", "message", "reply")
    assert isinstance(env.body, str) and isinstance(env.category, str)
    assert all(isinstance(a.size, int) and a.size >= 0 and len(a.key) == 32 for a in env.attachments)


def test_envelope_from_bytes_deep_nesting_is_envelopeformaterror() -> None:
    raw = b"[" * 2048 + b"]" * 2048
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(raw + b" " * (-len(raw) % 1024))


# =========================================================================== instance secrets

_SECRETS_KEYS = [
    "format",
    "v",
    "flask_secret_key",
    "passphrase_salt",
    "argon2_time_cost",
    "argon2_memory_cost_kib",
    "argon2_parallelism",
]
_NEAR_SECRETS = st.fixed_dictionaries(
    {},
    optional={
        "format": st.sampled_from(["whistle-instance-secrets", "whistle-bundle"]),
        "v": st.sampled_from([1, True, 1.0]),
        "flask_secret_key": _near(st.just("k" * 64)),
        "passphrase_salt": _near(st.sampled_from([base64.b64encode(bytes(16)).decode(), "AAAA", "!!"])),
        "argon2_time_cost": _near(st.integers(-1, 5)),
        "argon2_memory_cost_kib": _near(st.integers(0, 2**20)),
        "argon2_parallelism": _near(st.integers(0, 4)),
    },
)


@FAST
@given(
    st.one_of(
        st.text(max_size=200),
        _json_tree(_SECRETS_KEYS, [1]).map(_dumps).map(bytes.decode),
        _NEAR_SECRETS.map(_dumps).map(bytes.decode),
    )
)
@example(DEEP_JSON.decode())
@example(
    json.dumps(
        {
            "format": "whistle-instance-secrets",
            "v": 1,
            "flask_secret_key": "k" * 64,
            "passphrase_salt": base64.b64encode(bytes(16)).decode(),
            "argon2_time_cost": float("inf"),
            "argon2_memory_cost_kib": 8,
            "argon2_parallelism": 1,
        }
    )
)
@example(
    json.dumps(
        {
            "format": "whistle-instance-secrets",
            "v": 1,
            "flask_secret_key": "k" * 64,
            "passphrase_salt": "AAAA",
            "argon2_time_cost": 1,
            "argon2_memory_cost_kib": 8,
            "argon2_parallelism": 1,
        }
    )
)
def test_instance_secrets_from_json_raises_only_instanceerror(text: str) -> None:
    try:
        loaded = InstanceSecrets.from_json(text)
    except InstanceError:
        return
    assert len(loaded.argon2.salt) >= 16 and loaded.argon2.time_cost >= 1
    assert InstanceSecrets.from_json(loaded.to_json()) == loaded


# =========================================================================== private key files

_KEY = UnitSecretKey.from_seed(bytes(range(32)))
_KEY_PASSPHRASE = "correct horse battery staple"
_KEY_DOC = json.loads(
    _KEY.to_encrypted_json(
        _KEY_PASSPHRASE,
        opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
    )
)
_KEY_FIELDS = list(_KEY_DOC)
# The bounds from_encrypted_json promises to enforce before any derivation.
MAX_OPS, MIN_MEM, MAX_MEM = 64, 8192, 4 * 1024**3


@pytest.fixture
def kdf_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Records the costs each derivation asks for, and runs it at the minimum cost instead, so a
    file asking for 4 GiB passes through the real code path in milliseconds."""
    calls: list[tuple[int, int]] = []
    real = nacl.pwhash.argon2id.kdf

    def spy(size: int, password: bytes, salt: bytes, *, opslimit: int, memlimit: int) -> bytes:
        calls.append((opslimit, memlimit))
        return real(
            size,
            password,
            salt,
            opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
            memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        )

    monkeypatch.setattr(nacl.pwhash.argon2id, "kdf", spy)
    return calls


_NEAR_KEY_DOC = st.fixed_dictionaries(
    {}, optional={name: _near(st.just(value)) for name, value in _KEY_DOC.items()}
).map(lambda d: d if d else dict(_KEY_DOC))
_COSTS = st.fixed_dictionaries(
    {
        "opslimit": st.integers(-5, 10**6) | st.sampled_from([1, 64, 65, 2**64]) | _json_atoms([]),
        "memlimit": st.integers(-5, 2**45)
        | st.sampled_from([8191, 8192, MAX_MEM, MAX_MEM + 1])
        | _json_atoms([]),
    }
)


@WEB
@given(
    doc=st.one_of(
        _NEAR_KEY_DOC, _COSTS.map(lambda c: {**_KEY_DOC, **c}), _json_tree(_KEY_FIELDS, [1, "argon2id13"])
    ),
    passphrase=st.sampled_from([_KEY_PASSPHRASE]) | st.text(max_size=20),
)
@example(doc={**_KEY_DOC, "opslimit": float("inf")}, passphrase=_KEY_PASSPHRASE)
@example(doc={**_KEY_DOC, "memlimit": float("-inf")}, passphrase=_KEY_PASSPHRASE)
def test_secretkey_from_encrypted_json_raises_only_documented_errors(
    kdf_spy: list[tuple[int, int]], doc: object, passphrase: str
) -> None:
    kdf_spy.clear()
    try:
        key = UnitSecretKey.from_encrypted_json(json.dumps(doc, allow_nan=True), passphrase)
    except (KeyFormatError, WrongPassphraseError):
        pass
    else:
        assert key.encode() == _KEY.encode()
    # Absurd costs are refused before any work: every derivation that ran asked for sane costs.
    assert len(kdf_spy) <= 1
    for ops, mem in kdf_spy:
        assert 1 <= ops <= MAX_OPS and MIN_MEM <= mem <= MAX_MEM, (ops, mem)


def test_secretkey_from_encrypted_json_deep_nesting_is_keyformaterror() -> None:
    with pytest.raises(KeyFormatError):
        UnitSecretKey.from_encrypted_json(DEEP_JSON.decode(), "x")


# =========================================================================== web: shared helpers


_COUNT_TABLES = Base.metadata.sorted_tables
_COUNT_ALL = select(*[select(func.count()).select_from(t).scalar_subquery() for t in _COUNT_TABLES])


def row_counts(app: Flask) -> dict[str, int]:
    """Rows in every table of the schema, in one query."""
    with app.extensions["whistle"].engine.connect() as conn:
        row = conn.execute(_COUNT_ALL).one()
    return {t.name: int(n) for t, n in zip(_COUNT_TABLES, row, strict=True)}


@dataclass
class Part:
    """One multipart part, every piece as raw bytes: the server must cope with any of them."""

    name: bytes
    value: bytes
    filename: bytes | None = None
    content_type: bytes | None = None
    headers: bytes | None = None  # replaces the generated part headers entirely


def multipart_bytes(
    parts: list[Part], boundary: bytes = b"hostile-boundary-7f3a", newline: bytes = b"\r\n"
) -> bytes:
    out = bytearray()
    for part in parts:
        out += b"--" + boundary + newline
        if part.headers is not None:
            out += part.headers + newline
        else:
            out += b'Content-Disposition: form-data; name="' + part.name + b'"'
            if part.filename is not None:
                out += b'; filename="' + part.filename + b'"'
            out += newline
            if part.content_type is not None:
                out += b"Content-Type: " + part.content_type + newline
        out += newline + part.value + newline
    out += b"--" + boundary + b"--" + newline
    return bytes(out)


def multipart_type(boundary: bytes = b"hostile-boundary-7f3a") -> str:
    return "multipart/form-data; boundary=" + boundary.decode("latin-1")


def _receipt_passphrase(html: str) -> str:
    match = re.search(r'<code id="receipt-passphrase">([^<]+)</code>', html)
    assert match, "no passphrase on the receipt page"
    return match.group(1)


# =========================================================================== the JavaScript-off form

_BODY_UNITS = [
    b"a",
    "ñ".encode(),
    b"\x00",
    b"\r\n",
    "😀".encode(),
    b" ",
    "\ufb2c".encode(),  # NFC makes 3 characters of this one
    "\u0958".encode(),  # and 2 of this one
    "\ud800".encode("utf-8", "surrogatepass"),  # a lone surrogate, as bytes
    b"\xff",
    b"\xc3",
]  # not UTF-8 at all
_NEAR_LIMIT = st.sampled_from(
    [MAX_BODY_CHARS // 3, MAX_BODY_CHARS // 2, MAX_BODY_CHARS - 1, MAX_BODY_CHARS, MAX_BODY_CHARS + 1]
) | st.integers(0, MAX_BODY_CHARS + 2)
_FORM_BYTES = st.one_of(
    st.text(max_size=50).map(str.encode),
    st.binary(max_size=50),
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=5).map(
        lambda s: s.encode("utf-8", "surrogatepass")
    ),
    st.builds(lambda unit, n: unit * n, st.sampled_from(_BODY_UNITS), _NEAR_LIMIT),
)
_FILENAMES = st.none() | st.sampled_from(
    [
        b"",
        b"../../etc/passwd",
        "informe ñ.pdf".encode("latin-1"),
        b"a\x00b.txt",
        b"\xff\xfe.bin",
        b"x" * 5000,
        b"CON",
    ]
)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _expected_valid_body(raw: bytes) -> bool:
    """The form's rules, written independently: some text, at most 100,000 characters as sealed
    (code points after LF line ends and NFC; docs/protocol.md section 2). Werkzeug decodes fields
    as UTF-8, replacing what is not."""
    text = raw.decode("utf-8", "replace")
    sealed = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    return bool(text.strip()) and len(sealed) <= MAX_BODY_CHARS


@WEB
@given(data=st.data(), body=_FORM_BYTES, filename=_FILENAMES)
@example(data=None, body="\ufb2c".encode() * (MAX_BODY_CHARS // 2), filename=None)
@example(data=None, body=b"\x00", filename=b"a\x00b")
@example(data=None, body="\ud800".encode("utf-8", "surrogatepass") * 10, filename=b"\xff")
def test_form_hostile_fields_answer_200_or_400_and_400_stores_nothing(
    app: Flask, client: FlaskClient, data: st.DataObject | None, body: bytes, filename: bytes | None
) -> None:
    codes = list(app.extensions["whistle"].config.category_codes)
    category = (
        codes[0].encode()
        if data is None
        else data.draw(
            st.sampled_from([c.encode() for c in codes])
            | st.sampled_from([c.encode() for c in codes])
            | _FORM_BYTES,
            label="category",
        )
    )
    tokens = form_tokens(client, "/submit")
    parts = [
        Part(b"csrf_token", tokens["csrf_token"].encode()),
        Part(b"once", tokens["once"].encode()),
        Part(b"category", category),
        Part(b"body", body),
    ]
    if filename is not None:
        parts.append(Part(b"attachments", b"contenido", filename, b"text/plain"))
    before = row_counts(app)
    # A report that is filed is answered with a redirect to its receipt (shown once).
    resp = client.post("/submit", data=multipart_bytes(parts), content_type=multipart_type(),
                       follow_redirects=True)
    assert resp.status_code in (200, 400), resp.status_code
    event(f"answered {resp.status_code}")
    after = row_counts(app)
    valid = category.decode("utf-8", "replace") in codes and _expected_valid_body(body)
    if filename is not None and not _is_utf8(filename):
        # Werkzeug's multipart parser gives up on a part header that is not UTF-8, and the
        # request's form is then silently empty: refused as a CSRF failure (400), stored nothing.
        valid = False
    if resp.status_code == 400:
        assert after == before
        assert not valid, "a valid report was refused"
    else:
        assert valid, "an invalid report was accepted"
        assert after["reports"] == before["reports"] + 1
        assert len(_receipt_passphrase(resp.get_data(as_text=True)).split()) == 8  # Spanish


# =========================================================================== the route fuzzer

MAX_FORM_MEMORY = 2 * 1024 * 1024  # whistle.server.app: MAX_FORM_MEMORY_SIZE
MAX_FORM_PARTS = 200  # whistle.server.app: MAX_FORM_PARTS
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
# POSTs that are legitimate whatever the body once the CSRF token is right: sent without a valid
# token only (a logout ends the session the fuzzer is using).
BODY_IGNORED_WITH_TOKEN = frozenset({"source.logout", "investigator.logout"})
# A documented busy answer: argon2 slots all taken (DerivationGate), the caller answers 503.
ALLOWED_5XX = frozenset({503})

_LATIN1 = "ñandú informe é".encode("latin-1")
_BAD_UTF8 = b"\xff\xfe\xc3\x28\xa0\xa1" + "\ud800".encode("utf-8", "surrogatepass") + b"\xf8\x88\x80\x80\x80"


def _fields(text: Callable[[bytes], bytes], name: Callable[[bytes], bytes]) -> list[Part]:
    """Every field any whistle form or API reads, each with a value that is wrong for it
    (so that no request of the fuzzer is a valid action), passed through ``text``; file names
    passed through ``name``."""
    return [
        Part(b"category", text(b"no-such-category")),
        Part(b"body", b"   "),
        Part(b"lang", text(b"xx")),
        Part(b"passphrase", text(b"not the passphrase")),
        Part(b"name", text(b"<no such account>")),
        Part(b"password", text(b"x")),
        Part(b"code", text(b"abc")),
        Part(b"status", text(b"<script>")),
        Part(b"outcome", text(b"'")),
        Part(b"confirm", text(b"nope")),
        Part(b"report", text(b"../x")),
        Part(b"scope", text(b"<script>")),
        Part(b"is_admin", text(b"maybe")),
        Part(b"attachments", b"plaintext", name(b"../../evil.txt"), b"text/plain"),
        Part(b"attachment", b"short", name(b"a.bin"), b"application/octet-stream"),
        Part(b"message", b"short", name(b"m.bin"), b"application/octet-stream"),
        Part(b"replies", b"{}", name(b"replies.json"), b"application/json"),
    ]


_PLAIN = _fields(lambda v: v, lambda n: n)
_FIELD_DICT = {p.name.decode(): p.value.decode() for p in _PLAIN if p.filename is None}


@dataclass
class Body:
    label: str
    data: bytes | None
    content_type: str | None
    heavy: bool = False  # sent only with the methods the rule accepts
    headers: dict[str, str] = field(default_factory=dict)


def _bodies() -> list[Body]:
    mp, ct = multipart_bytes, multipart_type()
    urlenc = "application/x-www-form-urlencoded"
    plain = mp(_PLAIN)
    many = [Part(f"f{i}".encode(), b"v") for i in range(MAX_FORM_PARTS + 20)]
    return [
        Body("none", None, None),
        Body("multipart", plain, ct),
        Body("multipart latin-1", mp(_fields(lambda v: v + _LATIN1, lambda n: _LATIN1 + n)), ct),
        Body("multipart invalid utf-8", mp(_fields(lambda v: _BAD_UTF8 + v, lambda n: n + _BAD_UTF8)), ct),
        Body("multipart latin-1 values only", mp(_fields(lambda v: v + _LATIN1, lambda n: n)), ct),
        Body("multipart NUL", mp(_fields(lambda v: v + b"\x00" + v, lambda n: b"a\x00" + n)), ct),
        Body(
            "multipart rfc2231 name",
            mp(
                [
                    Part(
                        b"attachments",
                        b"x",
                        headers=(
                            b'Content-Disposition: form-data; name="attachments"; '
                            b"filename*=UTF-8''%ff%fe%00.txt"
                        ),
                    )
                ]
            ),
            ct,
        ),
        Body("multipart huge file name", mp([Part(b"attachments", b"x", b"n" * 20_000, b"text/plain")]), ct),
        Body("multipart bad boundary", plain, multipart_type(b"not-the-boundary")),
        Body("multipart truncated", plain[: len(plain) // 2], ct),
        Body("multipart LF only", mp(_PLAIN, newline=b"\n"), ct),
        Body("multipart no boundary", plain, "multipart/form-data"),
        Body("multipart empty boundary", plain, 'multipart/form-data; boundary=""'),
        Body("multipart boundary too long", mp(_PLAIN, boundary=b"b" * 5000), multipart_type(b"b" * 5000)),
        Body("multipart no disposition", mp([Part(b"body", b"x", headers=b"Content-Type: text/plain")]), ct),
        Body(
            "multipart disposition without name",
            mp([Part(b"x", b"y", headers=(b"Content-Disposition: form-data"))]),
            ct,
        ),
        Body(
            "multipart fields as file parts",
            mp([Part(p.name, p.value or b"x", b"f.txt", b"text/plain") for p in _PLAIN]),
            ct,
        ),
        Body("multipart only closing boundary", b"--hostile-boundary-7f3a--\r\n", ct),
        Body("multipart garbage", b"\x00\xff" * 500, ct),
        Body(
            "multipart deep replies file",
            mp([Part(b"replies", b"[" * 100_000, b"r.json", b"application/json")]),
            ct,
        ),
        Body(
            "multipart huge replies numbers",
            mp(
                [
                    Part(
                        b"replies",
                        b'{"format": "whistle-replies", "v": 1e999, "replies": [' + b"9" * 5000 + b"]}",
                        b"r.json",
                        b"application/json",
                    )
                ]
            ),
            ct,
        ),
        Body("urlencoded", urllib.parse.urlencode(_FIELD_DICT).encode(), urlenc),
        Body(
            "urlencoded raw latin-1",
            b"category=" + _LATIN1 + b"&name=" + _LATIN1 + b"&passphrase=" + _BAD_UTF8,
            urlenc,
        ),
        Body(
            "urlencoded bad escapes", b"category=%zz&name=%&passphrase=%ff%fe%ed%a0%80&%00=%00&==&&", urlenc
        ),
        # Passes the login form's own checks, so the name reaches the database (PostgreSQL refuses a
        # NUL in text).
        Body(
            "urlencoded NUL in a well-formed login",
            b"name=a%00b&password=x&code=123456&passphrase=a%00b",
            urlenc,
        ),
        Body("urlencoded many fields", b"&".join(b"a%d=1" % i for i in range(1000)), urlenc),
        Body("json object", json.dumps(_FIELD_DICT).encode(), "application/json"),
        Body(
            "json wrong types",
            json.dumps(
                {
                    k: v
                    for k, v in zip(
                        _FIELD_DICT,
                        [5, 1e308, None, [1, 2], {"a": 1}, True, -1, [], {}, [[1]], "x" * 10, 0.5, False],
                        strict=False,
                    )
                }
            ).encode(),
            "application/json",
        ),
        Body("json list", b"[1, 2, 3]", "application/json"),
        Body("json list of pairs", b'[["body", 5], ["category", {}]]', "application/json"),
        Body("json string", b'"body"', "application/json"),
        Body("json number", b"1e999", "application/json"),
        Body("json null", b"null", "application/json"),
        Body("json invalid", b"{", "application/json"),
        Body("json deep", b"[" * 100_000, "application/json"),
        Body("json latin-1", b'{"category": "' + _LATIN1 + b'"}', "application/json"),
        Body("text/plain", b"category=other&body=x", "text/plain"),
        Body("octet-stream", os.urandom(2000), "application/octet-stream"),
        Body("gzip claimed", b"\x1f\x8b\x08\x00garbage", urlenc, headers={"Content-Encoding": "gzip"}),
        Body(
            "form field over MAX_FORM_MEMORY_SIZE",
            mp([Part(b"body", b"x" * (MAX_FORM_MEMORY + 10))]),
            ct,
            heavy=True,
        ),
        Body(
            "urlencoded over MAX_FORM_MEMORY_SIZE",
            b"body=" + b"x" * (MAX_FORM_MEMORY + 10),
            urlenc,
            heavy=True,
        ),
        Body("parts over MAX_FORM_PARTS", mp(many), ct, heavy=True),
    ]


_QUERIES = [
    "page=-1",
    "page=" + "1" + "0" * 30,
    "page=abc",
    "page=1e3",
    "page=" + "9" * 5000,
    "page=%00",
    "sort='",
    "sort=%27%22%3B--",
    "status=<script>alert(1)</script>",
    "status=open&status=closed",
    "order=desc%00",
    "next=//evil.example/",
    "next=/investigator/%0d%0aSet-Cookie:%20x=1",
    "next=%5C%5Cevil",
    "lang=xx",
    "lang=%ff%fe",
    "lang=en",
    "ended=1",
    "%zz=%zz&=&&",
    "a=" + "x" * 20_000,
]
_PATH_VALUES = {
    "int": ["0", "999999", "9" * 30, "-1", "1.5", "%00", "..%2f..", "a" * 10_000],
    "default": [
        "deadbeefdeadbeef",
        "..",
        "..%2f..%2fsetup.cfg",
        "%2e%2e",
        "%00",
        "a%00b",
        "A" * 10_000,
        "%ff%fe",
        "%c0%ae%c0%ae",
        "%3Cscript%3E",
        "'",
        "%0d%0aSet-Cookie:x=1",
        "%20",
    ],
    "path": [
        "css/whistle.css",
        "../../setup.cfg",
        "..%2f..%2fsetup.cfg",
        "%2e%2e/%2e%2e/README.md",
        "vendor/libsodium/../../../../setup.cfg",
        "a%00b",
        "x" * 10_000,
        "/etc/passwd",
        "%ff",
    ],
}
_HEADER_SETS = [
    {"Accept-Language": "xx-;q=abc,*;q=2,%%%"},
    {"Cookie": "whistle=not.a.valid.session; whistle=again"},
    {"Cookie": "whistle=" + "A" * 8000},
    {"Host": "evil.example"},
    {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https", "Forwarded": "for=1.2.3.4"},
    {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": "0"},
    {"X-CSRFToken": "forged", "Referer": "http://evil.example/"},
    {"Range": "bytes=0-1,2-3,-1", "If-Modified-Since": "garbage", "If-None-Match": "*"},
]


def _converter_kind(rule: object) -> dict[str, str]:
    kinds = {}
    for arg, conv in rule._converters.items():  # type: ignore[attr-defined]
        name = type(conv).__name__
        kinds[arg] = "int" if name == "IntegerConverter" else "path" if name == "PathConverter" else "default"
    return kinds


def _url(rule: str, values: dict[str, str]) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: values[m.group(1)], rule)


@dataclass
class Identity:
    name: str
    client: FlaskClient
    token: str


@dataclass
class Fuzzer:
    """Sends requests and records every answer that breaks the rules."""

    app: Flask | None = None
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    last_exception: BaseException | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def watch(self, app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
        """Keep the exception each request raised, to say where a 500 came from (the app logs
        only its type)."""
        original = app.handle_user_exception

        def spy(exc: Exception) -> object:
            self.last_exception = exc
            return original(exc)

        monkeypatch.setattr(app, "handle_user_exception", spy)

    def describe_exception(self) -> str:
        import traceback

        exc = self.last_exception
        if exc is None:
            return ""
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "/whistle/" in f.filename] or frames
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
        return f"{type(exc).__name__} at {where}: {str(exc)[:120]}"

    def send(
        self,
        who: Identity,
        method: str,
        url: str,
        body: Body | None = None,
        headers: dict[str, str] | None = None,
        token: bool = False,
    ) -> int:
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.update(body.headers)
            if body.content_type is not None:
                hdrs["Content-Type"] = body.content_type
        if token:
            hdrs["X-CSRFToken"] = who.token
        label = f"{who.name} {method} {url[:120]} body={body.label if body else '-'} token={token}"
        self.sent += 1
        self.last_exception = None
        before = row_counts(self.app) if self.app is not None and token else None
        started = time.perf_counter()
        try:
            resp = who.client.open(url, method=method, data=body.data if body else None, headers=hdrs)
        except Exception as exc:  # noqa: BLE001 - the test reports any escaping exception as a failure
            self.failures.append(f"{label}: raised {type(exc).__name__}: {str(exc)[:200]}")
            return -1
        status = resp.status_code
        self.statuses[status] = self.statuses.get(status, 0) + 1
        key = body.label if body else "no body"
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started
        if status >= 500 and status not in ALLOWED_5XX:
            self.failures.append(f"{label}: {status} {self.describe_exception()}")
        if before is not None and self.app is not None and row_counts(self.app) != before:
            # Only requests that pass the CSRF check can reach a view that writes.
            self.failures.append(f"{label}: {status} changed the database")
        if "/static/" in url and ".." in urllib.parse.unquote(url) and status == 200:
            self.failures.append(f"{label}: path traversal served a file")
        resp.close()
        return status


def _identities(app: Flask, investigator: Account, admin: Account) -> list[Identity]:
    from support import post_form

    anon = app.test_client()
    csrf_token(anon)
    filer = app.test_client()
    resp = post_form(filer, "Informe para el fuzzer", [])
    phrase = _receipt_passphrase(resp.get_data(as_text=True))
    source = app.test_client()
    resp = source.post(
        "/followup", data={"csrf_token": csrf_token(source, "/followup"), "passphrase": phrase}
    )
    assert resp.status_code == 302, "source login failed"
    inv = app.test_client()
    assert investigator_login(inv, investigator).status_code == 303
    adm = app.test_client()
    assert investigator_login(adm, admin).status_code == 303
    # Tokens are read after the logins: a login starts a fresh session.
    return [
        Identity(name, client, csrf_token(client))
        for name, client in [("anonymous", anon), ("source", source), ("investigator", inv), ("admin", adm)]
    ]


@pytest.mark.slow
def test_route_fuzzer_never_5xx_and_stores_nothing(
    app: Flask, investigator: Account, admin: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    who_all = _identities(app, investigator, admin)
    with app.extensions["whistle"].sessions() as db:
        from whistle.server.models import Report

        report_id = db.scalars(select(Report.id)).one()
    rules = [r for r in app.url_map.iter_rules()]
    assert len(rules) >= 20, "the URL map looks incomplete"
    baseline = row_counts(app)
    spool = app.extensions["whistle"].config.spool_dir
    bodies = _bodies()
    fuzz = Fuzzer(app=app)
    fuzz.watch(app, monkeypatch)
    started = time.monotonic()

    for rule in rules:
        kinds = _converter_kind(rule)
        dummy = {
            arg: {"int": "999999", "default": report_id, "path": "css/whistle.css"}[kind]
            for arg, kind in kinds.items()
        }
        url = _url(rule.rule, dummy)
        allowed = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
        for who in who_all:
            for method in (*METHODS, "HEAD", "OPTIONS"):
                fuzz.send(who, method, url)
            # Malformed, mis-typed, mis-encoded and oversized bodies. Without a token the CSRF
            # check parses the body and refuses it, whoever sends it: the anonymous visitor does
            # that part. Methods the rule does not take are refused by the router before the body
            # is read (405), and GET views never read a body: a sample of those, from one identity.
            # With a valid CSRF token the view itself gets the bad body, from every identity.
            anonymous = who is who_all[0]
            for number, body in enumerate(bodies):
                for method in METHODS:
                    writes = method in allowed - {"GET"}
                    if anonymous and (writes or (not body.heavy and (number < 8 or method == "GET"))):
                        fuzz.send(who, method, url, body)
                    if writes and rule.endpoint not in BODY_IGNORED_WITH_TOKEN:
                        fuzz.send(who, method, url, body, token=True)
            # Hostile path parameters.
            for arg, kind in kinds.items():
                for value in _PATH_VALUES[kind]:
                    bad = _url(rule.rule, {**dummy, arg: value})
                    for method in allowed:
                        fuzz.send(who, method, bad)
                        if method != "GET" and rule.endpoint not in BODY_IGNORED_WITH_TOKEN:
                            fuzz.send(who, method, bad, bodies[1], token=True)
            # Hostile query strings and headers (the admin sees what the investigator sees).
            if "GET" in allowed and who.name != "admin":
                for query in _QUERIES:
                    fuzz.send(who, "GET", url + "?" + query)
                for headers in _HEADER_SETS:
                    fuzz.send(who, "GET", url, headers=headers)

    elapsed = time.monotonic() - started
    # The sessions lasted the whole run, so the logged-in identities were logged in throughout.
    source, inv, adm = who_all[1:]
    assert source.client.get("/case").status_code == 200, "the source's session ended during the run"
    assert inv.client.get("/investigator/").status_code == 200, "the investigator's session ended"
    assert adm.client.get("/investigator/admin/accounts").status_code == 200, "the admin's session ended"
    slowest = sorted(fuzz.seconds.items(), key=lambda kv: -kv[1])[:5]
    print(
        f"route fuzzer: {fuzz.sent} requests in {elapsed:.1f}s, statuses {sorted(fuzz.statuses.items())}, "
        f"slowest bodies {[(k, round(v, 1)) for k, v in slowest]}"
    )
    # One line per kind of failure (identities and tokens folded together).
    kinds: dict[str, int] = {}
    for line in fuzz.failures:
        key = re.sub(r"^\S+ ", "", re.sub(r" token=\w+", "", line))
        kinds[key] = kinds.get(key, 0) + 1
    report = "\n".join(f"{n}x {k}" for k, n in list(kinds.items())[:60])
    assert not fuzz.failures, f"{len(fuzz.failures)} bad answers of {fuzz.sent}:\n{report}"
    # The fuzzer cannot pass by doing nothing: thousands of requests, and mostly refusals.
    assert fuzz.sent >= 5_000, fuzz.sent
    assert sum(n for s, n in fuzz.statuses.items() if 400 <= s < 500) >= fuzz.sent // 2, fuzz.statuses
    assert row_counts(app) == baseline, "a bad request changed the database"
    assert not [p for p in spool.iterdir() if p.is_file()], "upload spool files left behind"


# =========================================================================== upload limits, real server

LIVE_LIMIT = 20 * 1024 * 1024  # WHISTLE_MAX_UPLOAD_MB in conftest's environ
BOUNDARY = b"live-boundary-1d9c"


def _server_pid(server: LiveServer) -> int:
    """The live server's process id: the fixture's if it exposes one, else found in /proc as our
    child running ``whistle.cli`` on the server's port."""
    pid = getattr(server, "pid", None)
    if isinstance(pid, int):
        return pid
    port = str(urllib.parse.urlsplit(server.url).port).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"whistle.cli" in argv and port in argv:
            return int(entry.name)
    pytest.fail("cannot find the live server's process in /proc")


def _rss_kib(pid: int) -> int:
    if not Path("/proc/self/status").exists():
        pytest.skip("reading a server's memory needs Linux's /proc")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def _connect(server: LiveServer, timeout: float = 15) -> socket.socket:
    parts = urllib.parse.urlsplit(server.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def _session(server: LiveServer) -> tuple[str, str]:
    """A session cookie and its CSRF token, so the oversized request is otherwise acceptable."""
    with _connect(server) as sock:
        sock.sendall(b"GET /submit HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, html = raw.partition(b"\r\n\r\n")
    cookie = re.search(rb"(?im)^set-cookie:\s*([^;\r\n]+)", head)
    token = re.search(rb'<meta name="csrf-token" content="([^"]+)"', html)
    assert cookie and token, "the submit page gave no session cookie or CSRF token"
    return cookie.group(1).decode(), token.group(1).decode()


def _request_head(path: str, cookie: str, token: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\nX-CSRFToken: {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY.decode()}\r\n{framing}\r\n\r\n"
    ).encode()


def _body_start(path: str, token: str) -> bytes:
    """The form's or the API's first parts, then the start of a file part that never ends."""
    name = b"attachments" if path == "/submit" else b"attachment"
    start = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n' + token.encode()
    )
    if path != "/submit":
        start += (
            b"\r\n--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="report"; '
            b'filename="r.bin"\r\n\r\n' + bytes(1072)
        )
    return start + (
        b"\r\n--"
        + BOUNDARY
        + b'\r\nContent-Disposition: form-data; name="'
        + name
        + b'"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )


def _read_status(sock: socket.socket, timeout: float) -> tuple[int | None, bytes]:
    """The status code of the answer on ``sock`` (None if the server closed without one)."""
    sock.settimeout(timeout)
    raw = b""
    try:
        while b"\r\n" not in raw:
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    match = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return (int(match.group(1)) if match else None), raw


def _still_serving(server: LiveServer) -> None:
    with _connect(server, timeout=10) as sock:
        sock.sendall(b"GET /api/v1/unit-key HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        status, _ = _read_status(sock, 10)
    assert status == 200, "the server stopped serving after the oversized upload"


def test_live_content_length_over_limit_refused_at_once(live_server: LiveServer) -> None:
    for path in ("/api/v1/reports", "/submit"):
        for announced in (LIVE_LIMIT + 1, 1024**3, 10**15):
            cookie, token = _session(live_server)
            with _connect(live_server) as sock:
                started = time.monotonic()
                sock.sendall(
                    _request_head(path, cookie, token, announced) + _body_start(path, token) + bytes(4096)
                )
                status, raw = _read_status(sock, timeout=10)
                elapsed = time.monotonic() - started
            # 413 before the body is read: the few KB sent are all the server waited for.
            assert status == 413, (path, announced, raw[:200])
            assert elapsed < 5, f"{path}: 413 took {elapsed:.1f}s"
            _still_serving(live_server)
    spool = live_server.app_config.spool_dir
    assert not [p for p in spool.iterdir() if p.is_file()], "spool files left behind"


def test_live_chunked_upload_over_limit_stopped_without_buffering(live_server: LiveServer) -> None:
    for path in ("/api/v1/reports", "/submit"):
        _stream_chunked_over_limit(live_server, path, _server_pid(live_server))


@pytest.fixture
def gunicorn_server(
    environ: dict[str, str], config: Config, tmp_path: Path
) -> Iterator[tuple[LiveServer, int]]:
    """The production server, as deploy/gunicorn.conf.py runs it (one gthread worker), and the
    worker's process id."""
    import signal

    from support import free_port, start_gunicorn, wait_until_serving

    port = free_port()
    tmp_dir = tmp_path / "gunicorn-tmp"
    tmp_dir.mkdir()
    logs = [tmp_path / "gunicorn.out", tmp_path / "gunicorn.err"]
    with logs[0].open("wb") as out, logs[1].open("wb") as err:
        proc = start_gunicorn(environ, bind=f"127.0.0.1:{port}", tmp_dir=tmp_dir, stdout=out, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, proc)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1, f"expected one gunicorn worker, found {children}"
        server = LiveServer(
            url=url, data_dir=config.data_dir, tmp_dir=tmp_dir, log_files=logs, app_config=config
        )
        yield server, int(children[0])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_gunicorn_upload_limits(gunicorn_server: tuple[LiveServer, int]) -> None:
    """The same two checks against gunicorn (production): 413 at once for an announced length, and
    for a chunked body 413 at the limit, after which gunicorn closes the connection."""
    server, worker = gunicorn_server
    test_live_content_length_over_limit_refused_at_once(server)
    for path in ("/api/v1/reports", "/submit"):
        _stream_chunked_over_limit(server, path, worker)


def _stream_chunked_over_limit(live_server: LiveServer, path: str, pid: int) -> None:
    """Transfer-Encoding: chunked, no Content-Length, 208 MB streamed: the server must answer 411
    (an upload must declare its length, so quotas can be checked before reading: quotas.py) or
    413 (or close) once the limit is passed, and its memory must stay flat all the way."""
    cookie, token = _session(live_server)
    baseline = peak = _rss_kib(pid)
    piece = bytes(1024 * 1024)
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
    total, answered_at, closed_at, answer = 0, None, None, b""
    with _connect(live_server, timeout=30) as sock:
        start = _body_start(path, token)
        sock.sendall(_request_head(path, cookie, token, None) + b"%x\r\n" % len(start) + start + b"\r\n")
        while total < 208 * 1024 * 1024:
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                closed_at = total
                break
            total += len(piece)
            if answered_at is None and sock in io_select.select([sock], [], [], 0)[0]:
                answered_at = total
                answer = sock.recv(65536)
            if total % (8 * 1024 * 1024) == 0:
                peak = max(peak, _rss_kib(pid))
        peak = max(peak, _rss_kib(pid))
        if answered_at is None and closed_at is None:
            status, answer = _read_status(sock, timeout=10)
            answered_at = total if status is not None else None
    status = int(answer[9:12]) if answer.startswith(b"HTTP/1.") else None
    growth_mib = (peak - baseline) / 1024
    print(
        f"chunked {path}: sent {total >> 20} MiB, answer {status} "
        f"after {answered_at and answered_at >> 20} MiB, "
        f"connection closed after {closed_at and closed_at >> 20} MiB, RSS +{growth_mib:.1f} MiB"
    )
    assert status in (411, 413) or closed_at is not None, \
        f"neither 411/413 nor a closed connection: {answer[:200]!r}"
    if status == 411:
        # Refused from the head, before the body was read (socket buffers take a few MB).
        assert answered_at is not None and answered_at <= 32 * 1024 * 1024, answered_at
    if status == 413:
        # Refused once the limit was passed, not after the whole stream (socket buffers add a few MB).
        assert answered_at is not None and answered_at <= LIVE_LIMIT + 32 * 1024 * 1024, answered_at
    assert growth_mib < 64, f"server memory grew by {growth_mib:.0f} MiB while {total >> 20} MiB streamed"
    _still_serving(live_server)
    spool = live_server.app_config.spool_dir
    assert not [p for p in spool.iterdir() if p.is_file()], "spool files left behind"
