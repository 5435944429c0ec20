# SPDX-License-Identifier: AGPL-3.0-or-later
"""Envelopes: reports, follow-up messages and replies as padded JSON in sealed boxes
(docs/protocol.md section 2).

Versions (``v``):

- report and message: ``1`` (legacy, unbound) and ``2`` (bound to its case: ``case_tag``,
  ``seq``, ``source_public_key``);
- reply: ``1`` (legacy, unsigned), ``2`` (signed, names its report and recipient, unbound) and
  ``3`` (signed and bound: report id, case tag, reply number, recipient).

Writers produce v2 / v3 whenever a :class:`Binding` is given, v1 otherwise (legacy and tests
only). Readers accept every version above and nothing else; v2 and v3 fields must come in
exactly the documented order, with the documented types.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field

import nacl.exceptions
from nacl import bindings as _sodium
from nacl.public import SealedBox

from whistle.core.crypto.errors import DecryptionError, EnvelopeFormatError, KeyFormatError
from whistle.core.crypto.keys import UnitPublicKey, UnitSecretKey, b64decode, b64encode, is_version

# The legacy version (what an envelope without a binding is written as).
ENVELOPE_VERSION = 1
# What a bound report or message is written as, and a bound reply.
BOUND_ENVELOPE_VERSION = 2
BOUND_REPLY_VERSION = 3
# A signed but unbound reply (docs/protocol.md section 9.2).
SIGNED_REPLY_VERSION = 2
ENVELOPE_BLOCK = 1024
SEAL_OVERHEAD = _sodium.crypto_box_SEALBYTES  # 48
MAX_BODY_CHARS = 100_000
KINDS = ("report", "message", "reply")
STREAM_KEY_BYTES = _sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES  # 32
CASE_TAG_BYTES = 16
SOURCE_KEY_BYTES = 32
# A report id as the server writes it (16 lower-case hex digits; readers accept 8 to 64).
REPORT_ID = re.compile(r"^[0-9a-f]{8,64}\Z")

# Field order of each envelope version, per kind (docs/protocol.md section 2 and 9).
_V1_FIELDS = ["v", "kind", "category", "body", "attachments", "pad"]
_V1_REPLY_FIELDS = ["v", "kind", "body", "pad"]
_V2_FIELDS = ["v", "kind", "case_tag", "seq", "source_public_key", "category", "body",
              "attachments", "pad"]
# A v2 report with answers to the deployment's questions carries "fields" after "category".
_V2_FIELDS_WITH_ANSWERS = [*_V2_FIELDS[:6], "fields", *_V2_FIELDS[6:]]
# Structured answers (docs/protocol.md section 2): question ids in the syntax of a category code,
# short text values. Bounded so that answers can never crowd out the report itself.
FIELD_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
MAX_FIELDS = 32
MAX_FIELD_CHARS = 200
_V2_REPLY_FIELDS = ["v", "kind", "report_id", "source_public_key", "body", "pad"]
_V3_REPLY_FIELDS = ["v", "kind", "report_id", "case_tag", "seq", "source_public_key", "body", "pad"]
# An envelope's seq is small; a bound on it keeps a hostile one from meaning anything odd.
MAX_SEQ = 2**31 - 1


@dataclass(frozen=True)
class Binding:
    """What ties a v2 report or message, or a v3 reply, to its case (docs/protocol.md section 2).

    ``case_tag`` is the 16-byte tag derived from the source's seed (fixed when the report is
    filed), ``seq`` the item's number (for a report 1, for a message 2, 3 … among the source's
    items; for a reply its number among the case's replies) and ``source_public_key`` the
    source's 32-byte X25519 public key.
    """

    case_tag: bytes = field(repr=False)
    seq: int
    source_public_key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.case_tag, bytes) or len(self.case_tag) != CASE_TAG_BYTES:
            raise EnvelopeFormatError(f"a case tag is exactly {CASE_TAG_BYTES} bytes")
        if not isinstance(self.source_public_key, bytes) or len(self.source_public_key) != SOURCE_KEY_BYTES:
            raise EnvelopeFormatError(f"a source public key is exactly {SOURCE_KEY_BYTES} bytes")
        if type(self.seq) is not int or not 1 <= self.seq <= MAX_SEQ:
            raise EnvelopeFormatError("seq must be a positive integer")


@dataclass(frozen=True)
class AttachmentRef:
    """What the envelope says about one attachment: its name, type, size and stream key."""

    name: str
    type: str
    size: int
    key: bytes = field(repr=False)

    def to_json(self) -> dict[str, object]:
        """The attachment's entry in an envelope, keys in protocol order."""
        return {"name": self.name, "type": self.type, "size": self.size, "key": b64encode(self.key)}


@dataclass(frozen=True)
class Envelope:
    """A decrypted report, follow-up message or reply (docs/protocol.md section 2).

    ``binding`` makes a report or message version 2 and a reply version 3; a reply with a
    binding needs ``report_id``. ``recipient`` is only for a version-2 reply (signed, unbound),
    which names its report and the key it is sealed to but carries no binding; a version-3 reply
    names the key in its binding.
    """

    kind: str
    body: str
    category: str = ""
    attachments: tuple[AttachmentRef, ...] = ()
    binding: Binding | None = None
    report_id: str | None = None
    recipient: bytes | None = None
    # Answers to the deployment's structured questions (question id -> text); v2 reports only.
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def answers(self) -> dict[str, str]:
        """The structured answers as a dict (empty when the source answered none)."""
        return dict(self.fields)

    @property
    def version(self) -> int:
        """The envelope's ``v``: 1 or 2 for a report or message, 1, 2 or 3 for a reply."""
        if self.kind == "reply":
            if self.binding is not None:
                return BOUND_REPLY_VERSION
            return SIGNED_REPLY_VERSION if self.report_id is not None else ENVELOPE_VERSION
        return BOUND_ENVELOPE_VERSION if self.binding is not None else ENVELOPE_VERSION

    @property
    def source_public_key(self) -> bytes | None:
        """The source key the envelope names (bound envelopes and v2 replies), else None."""
        if self.binding is not None:
            return self.binding.source_public_key
        return self.recipient

    def to_bytes(self) -> bytes:
        """Compact JSON in protocol key order, padded with spaces to a multiple of 1024 bytes."""
        if self.kind not in KINDS:
            raise EnvelopeFormatError(f"unknown envelope kind {self.kind!r}")
        body = unicodedata.normalize("NFC", self.body)
        if len(body) > MAX_BODY_CHARS:
            raise EnvelopeFormatError(f"text longer than {MAX_BODY_CHARS} characters")
        self._check_shape()
        doc: dict[str, object] = {"v": self.version, "kind": self.kind}
        binding = self.binding
        if self.kind == "reply":
            if self.report_id is not None:
                doc["report_id"] = self.report_id
            if binding is not None:
                doc["case_tag"] = b64encode(binding.case_tag)
                doc["seq"] = binding.seq
            key = self.source_public_key
            if key is not None:
                doc["source_public_key"] = b64encode(key)
            doc["body"] = body
        else:
            if binding is not None:
                doc["case_tag"] = b64encode(binding.case_tag)
                doc["seq"] = binding.seq
                doc["source_public_key"] = b64encode(binding.source_public_key)
            doc["category"] = self.category
            if self.fields:
                doc["fields"] = {k: unicodedata.normalize("NFC", v) for k, v in self.fields}
            doc["body"] = body
            doc["attachments"] = [a.to_json() for a in self.attachments]
        doc["pad"] = ""
        raw = _dumps(doc)
        doc["pad"] = " " * (-len(raw) % ENVELOPE_BLOCK)
        return _dumps(doc)

    def _check_shape(self) -> None:
        """Refuse combinations no version of the protocol has."""
        if self.kind == "reply":
            if self.attachments or self.category:
                raise EnvelopeFormatError("a reply carries neither category nor attachments")
            if self.report_id is not None and not REPORT_ID.match(self.report_id):
                raise EnvelopeFormatError("bad report id")
            if self.binding is not None and (self.report_id is None or self.recipient is not None):
                raise EnvelopeFormatError("a bound reply names its report and no separate recipient")
            if self.binding is None and (self.report_id is None) != (self.recipient is None):
                raise EnvelopeFormatError("a version-2 reply names both its report and recipient")
            if self.recipient is not None and len(self.recipient) != SOURCE_KEY_BYTES:
                raise EnvelopeFormatError(f"a recipient key is exactly {SOURCE_KEY_BYTES} bytes")
            return
        if self.report_id is not None or self.recipient is not None:
            raise EnvelopeFormatError("only a reply names a report id or recipient")
        if self.fields:
            if self.kind != "report" or self.binding is None:
                raise EnvelopeFormatError("only a version-2 report carries structured answers")
            _check_fields(dict(self.fields), len(self.fields))
        if self.binding is not None:
            if self.kind == "report" and self.binding.seq != 1:
                raise EnvelopeFormatError("a report is item 1 of its case")
            if self.kind == "message" and self.binding.seq < 2:
                raise EnvelopeFormatError("a message is item 2 or later of its case")
        if self.kind == "message" and self.binding is not None and self.category:
            raise EnvelopeFormatError("a version-2 message has an empty category")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        """Parse and validate a decrypted envelope of any version; raise
        :class:`EnvelopeFormatError`."""
        if len(raw) == 0 or len(raw) % ENVELOPE_BLOCK:
            raise EnvelopeFormatError("envelope length is not a multiple of 1024 bytes")
        try:
            doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # deep nesting: RecursionError
            raise EnvelopeFormatError("envelope is not UTF-8 JSON") from exc
        if not isinstance(doc, dict):
            raise EnvelopeFormatError("envelope is not a JSON object")
        kind, v = doc.get("kind"), doc.get("v")
        if kind not in KINDS:
            raise EnvelopeFormatError(f"unknown envelope kind {kind!r}")
        if is_version(v, ENVELOPE_VERSION):
            return cls._from_v1(doc, kind)
        if kind == "reply" and is_version(v, SIGNED_REPLY_VERSION):
            return cls._from_v2_reply(doc)
        if kind == "reply" and is_version(v, BOUND_REPLY_VERSION):
            return cls._from_v3_reply(doc)
        if kind != "reply" and is_version(v, BOUND_ENVELOPE_VERSION):
            return cls._from_v2(doc, kind)
        raise EnvelopeFormatError(f"not an envelope version this reader knows (kind {kind!r})")

    @classmethod
    def _from_v1(cls, doc: dict[str, object], kind: str) -> Envelope:
        expected = _V1_REPLY_FIELDS if kind == "reply" else _V1_FIELDS
        if sorted(doc) != sorted(expected):
            raise EnvelopeFormatError(f"envelope fields do not match kind {kind!r}")
        body = _text(doc)
        if kind == "reply":
            return cls(kind=kind, body=body)
        category, atts = _category_and_attachments(doc)
        return cls(kind=kind, body=body, category=category, attachments=atts)

    @classmethod
    def _from_v2(cls, doc: dict[str, object], kind: str) -> Envelope:
        answers: tuple[tuple[str, str], ...] = ()
        if kind == "report" and "fields" in doc:
            _exact_fields(doc, _V2_FIELDS_WITH_ANSWERS, kind)
            raw = doc["fields"]
            if not isinstance(raw, dict) or not raw:
                raise EnvelopeFormatError("fields must be a non-empty object (left out when empty)")
            answers = tuple(_check_fields(raw, len(raw)).items())
        else:
            _exact_fields(doc, _V2_FIELDS, kind)
        binding = _binding(doc)
        if kind == "report" and binding.seq != 1:
            raise EnvelopeFormatError("a report's seq is 1")
        if kind == "message" and binding.seq < 2:
            raise EnvelopeFormatError("a message's seq is 2 or more")
        body = _text(doc)
        category, atts = _category_and_attachments(doc)
        if kind == "message" and category:
            raise EnvelopeFormatError("a message's category is empty")
        return cls(kind=kind, body=body, category=category, attachments=atts, binding=binding,
                   fields=answers)

    @classmethod
    def _from_v2_reply(cls, doc: dict[str, object]) -> Envelope:
        _exact_fields(doc, _V2_REPLY_FIELDS, "reply")
        report_id = _report_id(doc)
        recipient = _b64_field(doc, "source_public_key", SOURCE_KEY_BYTES)
        return cls(kind="reply", body=_text(doc), report_id=report_id, recipient=recipient)

    @classmethod
    def _from_v3_reply(cls, doc: dict[str, object]) -> Envelope:
        _exact_fields(doc, _V3_REPLY_FIELDS, "reply")
        report_id = _report_id(doc)
        binding = _binding(doc)
        return cls(kind="reply", body=_text(doc), report_id=report_id, binding=binding)


def _check_fields(fields: dict[str, object], count: int) -> dict[str, str]:
    """Structured answers: at most MAX_FIELDS, ids like category codes, short text values."""
    if count > MAX_FIELDS:
        raise EnvelopeFormatError(f"more than {MAX_FIELDS} structured answers")
    out: dict[str, str] = {}
    for key, value in fields.items():
        if not isinstance(key, str) or not FIELD_ID.match(key):
            raise EnvelopeFormatError("a structured answer's id must look like a category code")
        if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
            raise EnvelopeFormatError(f"a structured answer is text of at most {MAX_FIELD_CHARS} "
                                      "characters")
        out[key] = value
    return out


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object hook that refuses a key given twice (the last would win silently)."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return doc


def _exact_fields(doc: dict[str, object], expected: list[str], kind: str) -> None:
    # Python keeps a JSON object's key order, and duplicates are refused when parsing: the list
    # of keys is exactly what the sealer wrote.
    if list(doc) != expected:
        raise EnvelopeFormatError(f"envelope fields do not match version {doc.get('v')} {kind!r} "
                                  "(names and order)")


def _text(doc: dict[str, object]) -> str:
    body, pad = doc["body"], doc["pad"]
    if not isinstance(body, str) or not isinstance(pad, str) or pad.strip(" "):
        raise EnvelopeFormatError("body and pad must be strings; pad only spaces")
    return body


def _category_and_attachments(doc: dict[str, object]) -> tuple[str, tuple[AttachmentRef, ...]]:
    category, atts = doc["category"], doc["attachments"]
    if not isinstance(category, str) or not isinstance(atts, list):
        raise EnvelopeFormatError("category must be a string and attachments a list")
    return category, tuple(_parse_attachment(a) for a in atts)


def _report_id(doc: dict[str, object]) -> str:
    report_id = doc["report_id"]
    if not isinstance(report_id, str) or not REPORT_ID.match(report_id):
        raise EnvelopeFormatError("report_id must be 8 to 64 lower-case hex digits")
    return report_id


def _b64_field(doc: dict[str, object], name: str, size: int) -> bytes:
    """A base64 field of exactly ``size`` bytes, in canonical form (standard, padded)."""
    value = doc[name]
    if not isinstance(value, str):
        raise EnvelopeFormatError(f"{name} must be base64 text")
    try:
        raw = b64decode(value, size=size)
    except KeyFormatError as exc:
        raise EnvelopeFormatError(f"{name}: {exc}") from exc
    if b64encode(raw) != value:
        raise EnvelopeFormatError(f"{name} is not canonical base64")
    return raw


def _binding(doc: dict[str, object]) -> Binding:
    seq = doc["seq"]
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise EnvelopeFormatError("seq must be a positive integer")
    return Binding(case_tag=_b64_field(doc, "case_tag", CASE_TAG_BYTES), seq=seq,
                   source_public_key=_b64_field(doc, "source_public_key", SOURCE_KEY_BYTES))


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
