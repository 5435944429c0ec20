# SPDX-License-Identifier: AGPL-3.0-or-later
"""Replies from the unit to a source: sealed and signed on the workstation, carried back in a
replies file (docs/protocol.md, "Replies").

The workstation seals each reply (a version-3 reply envelope naming its report, the case tag, the
reply's number and the recipient; version 2, without tag and number, only for a report filed
before protocol v2) to the source's public key, signs the sealed bytes with the unit's signing
key, and appends both to a replies file; the server imports that file. The reading side of this
module needs no Flask; the import needs the database but no Flask either
(``whistle import-replies``).

Replies file (UTF-8 JSON)::

    {"format": "whistle-replies", "v": 2,
     "replies": [{"report_id": HEX, "recipient": B64(32), "sealed": B64, "signature": B64(64)}]}

The server cannot open a sealed box, so it checks what it can: the report exists, ``recipient`` is
that report's source key, ``sealed`` has the length of a padded reply envelope, and ``signature``
verifies with ``unit-sign.pub`` over :func:`reply_signed_bytes`. A file with any bad entry, or of
version 1 (unsigned), is refused as a whole.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import nacl.exceptions
from nacl.public import SealedBox

from whistle.core.crypto import (
    BOUND_REPLY_VERSION,
    ENVELOPE_BLOCK,
    MAX_BODY_CHARS,
    SEAL_OVERHEAD,
    SIGNATURE_BYTES,
    Binding,
    DecryptionError,
    Envelope,
    EnvelopeFormatError,
    KeyFormatError,
    SignatureError,
    UnitPublicKey,
    UnitSecretKey,
    UnitSigningKey,
    UnitVerifyKey,
    b64decode,
    b64encode,
    is_version,
)
from whistle.core.errors import WhistleError
from whistle.core.files import atomic_write

REPLIES_FORMAT = "whistle-replies"
REPLIES_VERSION = 2
REPLY_ENVELOPE_VERSION = 2
# Domain separation: a signature over these bytes can never be mistaken for one over anything
# else the unit may sign later.
REPLY_SIGN_DOMAIN = b"whistle-reply-v2\x00"
MAX_REPLIES_FILE_BYTES = 16 * 1024 * 1024
MAX_SEALED_REPLY_BYTES = 1024 * 1024 + SEAL_OVERHEAD
_HEX = re.compile(r"^[0-9a-f]{8,64}\Z")
# Standard base64 with padding of the largest sealed reply.
_MAX_SEALED_B64 = 4 * ((MAX_SEALED_REPLY_BYTES + 2) // 3)


class RepliesError(WhistleError):
    """A replies file is malformed, or refers to an unknown report or the wrong source key."""


class ReplyAuthError(RepliesError):
    """A reply is not shown to be the unit's: its signature does not verify with the unit's
    signing key over its report id, recipient key and ciphertext, or the opened envelope names
    another report or recipient."""


@dataclass(frozen=True)
class SealedReply:
    """One reply: which report, sealed to which key, the ciphertext and the unit's signature."""

    report_id: str
    recipient: bytes
    sealed: bytes
    signature: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.sealed).hexdigest()


def reply_signed_bytes(report_id: str, recipient: bytes, sealed: bytes) -> bytes:
    """The exact bytes the unit signs for a reply (docs/protocol.md, "Replies"):

    ``b"whistle-reply-v2\\0" || report_id (ASCII hex) || b"\\0" || recipient (32) || sealed``.
    The report id is hex, so the zero byte after it cannot occur inside it; the recipient has a
    fixed length; the ciphertext runs to the end."""
    if not _HEX.match(report_id):
        raise RepliesError("bad report id")
    if len(recipient) != 32:
        raise RepliesError("a recipient key is exactly 32 bytes")
    return REPLY_SIGN_DOMAIN + report_id.encode("ascii") + b"\x00" + recipient + sealed


@dataclass(frozen=True)
class ReplyEnvelope:
    """A decrypted signed reply: the text, and the report and recipient it was written for.

    With ``case_tag`` and ``seq`` it is a version-3 reply (bound to its case, docs/protocol.md
    section 9.2); without them a version-2 one (signed, unbound: written only for a report filed
    before protocol v2, with ``whistle reply --trust-server-key``).
    """

    report_id: str
    recipient: bytes
    body: str
    case_tag: bytes | None = field(default=None, repr=False)
    seq: int | None = None

    @property
    def version(self) -> int:
        """The envelope's ``v``: 3 when bound, else 2."""
        return BOUND_REPLY_VERSION if self.case_tag is not None else REPLY_ENVELOPE_VERSION

    def envelope(self) -> Envelope:
        """The same reply as a :class:`Envelope`; raise :class:`RepliesError` when malformed."""
        if (self.case_tag is None) != (self.seq is None):
            raise RepliesError("a bound reply has both a case tag and a number")
        try:
            if self.case_tag is not None and self.seq is not None:
                return Envelope(kind="reply", body=self.body, report_id=self.report_id,
                                binding=Binding(self.case_tag, self.seq, self.recipient))
            return Envelope(kind="reply", body=self.body, report_id=self.report_id,
                            recipient=self.recipient)
        except EnvelopeFormatError as exc:
            raise RepliesError(str(exc)) from exc

    def to_bytes(self) -> bytes:
        """Compact JSON in protocol key order, padded with spaces to a multiple of 1024 bytes."""
        body = unicodedata.normalize("NFC", self.body)
        if len(body) > MAX_BODY_CHARS:
            raise RepliesError(f"a reply is longer than {MAX_BODY_CHARS} characters")
        try:
            return self.envelope().to_bytes()
        except EnvelopeFormatError as exc:
            raise RepliesError(str(exc)) from exc

    @classmethod
    def from_bytes(cls, raw: bytes) -> ReplyEnvelope:
        """Parse a decrypted version-2 or version-3 reply envelope; raise
        :class:`EnvelopeFormatError` for anything else (a version-1 reply names no report)."""
        envelope = Envelope.from_bytes(raw)
        if envelope.kind != "reply" or envelope.version == 1:
            raise EnvelopeFormatError("not a signed (version 2 or 3) reply envelope")
        return cls.from_envelope(envelope)

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> ReplyEnvelope:
        """The reply fields of a parsed version-2 or version-3 reply envelope."""
        key = envelope.source_public_key
        if envelope.kind != "reply" or envelope.report_id is None or key is None:
            raise EnvelopeFormatError("not a signed (version 2 or 3) reply envelope")
        binding = envelope.binding
        return cls(report_id=envelope.report_id, recipient=key, body=envelope.body,
                   case_tag=binding.case_tag if binding else None,
                   seq=binding.seq if binding else None)


class OpenedReply(str):
    """A verified, opened reply: its text (this object is the text itself, a ``str``, so callers
    written before protocol v2 keep working), :attr:`body`, :attr:`seq` (the reply's number in
    its case; None for a version-2 reply, which has none) and :attr:`version` (2 or 3)."""

    seq: int | None
    version: int

    def __new__(cls, body: str, seq: int | None, version: int) -> OpenedReply:
        """The reply text with its number and envelope version."""
        opened = super().__new__(cls, body)
        opened.seq = seq
        opened.version = version
        return opened

    @property
    def body(self) -> str:
        """The reply's text, as a plain ``str``."""
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"OpenedReply(seq={self.seq!r}, version={self.version!r}, {len(self)} characters)"


def seal_reply(text: str, report_id: str, recipient: UnitPublicKey, signing_key: UnitSigningKey,
               *, case_tag: bytes | None = None, seq: int | None = None) -> SealedReply:
    """Seal a reply envelope to the source's public key and sign it for that report.

    With ``case_tag`` and ``seq`` (the case's tag, from the decrypted report, and the reply's
    number in the case) it is a version-3 reply, bound to its case: what every new reply is.
    Without both it is a version-2 reply (signed, unbound): only for a report filed before
    protocol v2 (``whistle reply --trust-server-key``) and for callers not yet moved over.
    """
    if not text.strip():
        raise RepliesError("a reply cannot be empty")
    if not _HEX.match(report_id):
        raise RepliesError("bad report id")
    if (case_tag is None) != (seq is None):
        raise RepliesError("a bound reply needs both the case tag and its number")
    envelope = ReplyEnvelope(report_id=report_id, recipient=recipient.encode(), body=text,
                             case_tag=case_tag, seq=seq)
    sealed = SealedBox(recipient.nacl_key).encrypt(envelope.to_bytes())
    signature = signing_key.sign(reply_signed_bytes(report_id, recipient.encode(), sealed))
    return SealedReply(report_id, recipient.encode(), sealed, signature)


def verify_reply(reply: SealedReply, verify_key: UnitVerifyKey) -> None:
    """Check the unit's signature over the reply's report id, recipient and ciphertext; raise
    :class:`ReplyAuthError`. The server calls it on import and again before showing a reply,
    with the report id and source key *it has stored*, so a swapped key fails too."""
    try:
        verify_key.verify(reply_signed_bytes(reply.report_id, reply.recipient, reply.sealed),
                          reply.signature)
    except (SignatureError, RepliesError) as exc:
        raise ReplyAuthError(f"reply to report {reply.report_id}: not signed by the unit's signing "
                             f"key {verify_key.fingerprint()}") from exc


def open_reply(reply: SealedReply, secret_key: UnitSecretKey, verify_key: UnitVerifyKey, *,
               case_tag: bytes | None = None) -> OpenedReply:
    """Verify, open and check a reply; return its text, number and version.

    Raises :class:`ReplyAuthError` when the signature fails, the envelope names another report
    or recipient, or (a version-3 reply, and ``case_tag`` given) carries another case tag;
    :class:`DecryptionError` / :class:`EnvelopeFormatError` when a signed reply does not open or
    parse. A version-2 reply (signed, unbound) opens with ``seq`` None: the caller decides
    whether to show it. Never returns an unverified text."""
    verify_reply(reply, verify_key)
    try:
        raw = SealedBox(secret_key.nacl_key).decrypt(reply.sealed)
    except (nacl.exceptions.CryptoError, TypeError, ValueError) as exc:
        raise DecryptionError("reply does not open with this key (wrong key or altered)") from exc
    envelope = ReplyEnvelope.from_bytes(raw)
    if envelope.report_id != reply.report_id or envelope.recipient != reply.recipient:
        raise ReplyAuthError(f"reply to report {reply.report_id}: its envelope names another "
                             "report or recipient")
    if (case_tag is not None and envelope.case_tag is not None
            and not hmac.compare_digest(envelope.case_tag, case_tag)):
        raise ReplyAuthError(f"reply to report {reply.report_id}: its envelope carries another "
                             "case's tag")
    return OpenedReply(envelope.body, envelope.seq, envelope.version)


def parse_replies(data: bytes) -> list[SealedReply]:
    """Parse and validate a replies file completely; raise :class:`RepliesError`."""
    if len(data) > MAX_REPLIES_FILE_BYTES:
        raise RepliesError("replies file is too large")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # deep nesting: RecursionError
        raise RepliesError("replies file is not UTF-8 JSON") from exc
    if not isinstance(doc, dict) or doc.get("format") != REPLIES_FORMAT:
        raise RepliesError("not a whistle replies file")
    if is_version(doc.get("v"), 1):
        # Fail closed: a version-1 reply carries no signature, so nothing shows it is the unit's.
        raise RepliesError("a version-1 replies file holds unsigned replies and is refused: seal the "
                           "replies again with this version's 'whistle reply'")
    if not is_version(doc.get("v"), REPLIES_VERSION):
        raise RepliesError("not a version-2 whistle replies file")
    entries = doc.get("replies")
    if not isinstance(entries, list) or not entries:
        raise RepliesError("replies file holds no replies")
    result = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or sorted(entry) != ["recipient", "report_id", "sealed",
                                                            "signature"]:
            raise RepliesError(f"reply {number}: needs exactly report_id, recipient, sealed, signature")
        report_id, recipient, sealed = entry["report_id"], entry["recipient"], entry["sealed"]
        signature = entry["signature"]
        if not isinstance(report_id, str) or not _HEX.match(report_id):
            raise RepliesError(f"reply {number}: bad report id")
        if not isinstance(recipient, str) or not isinstance(sealed, str) or not isinstance(signature, str):
            raise RepliesError(f"reply {number}: recipient, sealed and signature must be base64 text")
        if len(sealed) > _MAX_SEALED_B64:  # refused before decoding, not after
            raise RepliesError(f"reply {number}: not a sealed reply envelope")
        try:
            key = b64decode(recipient, size=32)
            sig = b64decode(signature, size=SIGNATURE_BYTES)
            blob = b64decode(sealed)
        except KeyFormatError as exc:
            raise RepliesError(f"reply {number}: {exc}") from exc
        body = len(blob) - SEAL_OVERHEAD
        if len(blob) > MAX_SEALED_REPLY_BYTES or body <= 0 or body % ENVELOPE_BLOCK:
            raise RepliesError(f"reply {number}: not a sealed reply envelope")
        result.append(SealedReply(report_id=report_id, recipient=key, sealed=blob, signature=sig))
    digests = [r.digest for r in result]
    if len(set(digests)) != len(digests):
        raise RepliesError("replies file holds the same reply twice")
    return result


def read_replies_file(path: Path) -> list[SealedReply]:
    """Read and parse a replies file, reading at most one byte more than the size limit.

    The file's size as the filesystem reports it is not trusted: ``/dev/zero``, a pipe or a
    sparse file report 0 bytes or any size, and reading them whole would never end or exhaust
    memory. Raises :class:`RepliesError` (too large, malformed) or :class:`OSError`.
    """
    with path.open("rb") as fh:
        data = fh.read(MAX_REPLIES_FILE_BYTES + 1)
    if len(data) > MAX_REPLIES_FILE_BYTES:
        raise RepliesError(f"replies file is larger than {MAX_REPLIES_FILE_BYTES} bytes; refused")
    return parse_replies(data)


def dump_replies(replies: list[SealedReply]) -> bytes:
    """Serialise replies into the replies file format."""
    doc = {"format": REPLIES_FORMAT, "v": REPLIES_VERSION, "replies": [
        {"report_id": r.report_id, "recipient": b64encode(r.recipient), "sealed": b64encode(r.sealed),
         "signature": b64encode(r.signature)}
        for r in replies]}
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def append_reply(path: Path, reply: SealedReply) -> int:
    """Add a reply to the replies file at ``path`` (created if absent); return how many it holds."""
    existing = read_replies_file(path) if path.exists() else []
    replies = [*existing, reply]
    atomic_write(path, dump_replies(replies), mode=0o600)
    return len(replies)
