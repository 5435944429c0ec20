# SPDX-License-Identifier: AGPL-3.0-or-later
"""Replies from the unit to a source: sealed on the workstation, carried back in a replies file.

The workstation seals each reply to the source's public key (from the bundle's manifest) and
appends it to a replies file; the server imports that file. The reading side of this module needs
no Flask; the import needs the database but no Flask either (``whistle import-replies``).

Replies file (UTF-8 JSON)::

    {"format": "whistle-replies", "v": 1,
     "replies": [{"report_id": HEX, "recipient": B64(32), "sealed": B64}]}

The server cannot open a sealed box, so it checks what it can: the report exists, ``recipient`` is
that report's source key, and ``sealed`` has the length of a padded reply envelope. A file with
any bad entry is refused as a whole.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from whistle.core.crypto import (
    ENVELOPE_BLOCK,
    SEAL_OVERHEAD,
    Envelope,
    KeyFormatError,
    UnitPublicKey,
    b64decode,
    b64encode,
    is_version,
    seal_envelope,
)
from whistle.core.errors import WhistleError
from whistle.core.files import atomic_write

REPLIES_FORMAT = "whistle-replies"
MAX_REPLIES_FILE_BYTES = 16 * 1024 * 1024
MAX_SEALED_REPLY_BYTES = 1024 * 1024 + SEAL_OVERHEAD
_HEX = re.compile(r"^[0-9a-f]{8,64}\Z")


class RepliesError(WhistleError):
    """A replies file is malformed, or refers to an unknown report or the wrong source key."""


@dataclass(frozen=True)
class SealedReply:
    """One reply in a replies file: which report, sealed to which key, and the ciphertext."""

    report_id: str
    recipient: bytes
    sealed: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.sealed).hexdigest()


def seal_reply(text: str, recipient: UnitPublicKey) -> bytes:
    """Seal a reply envelope (docs/protocol.md section 2) to the source's public key."""
    if not text.strip():
        raise RepliesError("a reply cannot be empty")
    return seal_envelope(Envelope(kind="reply", body=text), recipient)


def parse_replies(data: bytes) -> list[SealedReply]:
    """Parse and validate a replies file completely; raise :class:`RepliesError`."""
    if len(data) > MAX_REPLIES_FILE_BYTES:
        raise RepliesError("replies file is too large")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # deep nesting: RecursionError
        raise RepliesError("replies file is not UTF-8 JSON") from exc
    if not isinstance(doc, dict) or doc.get("format") != REPLIES_FORMAT or not is_version(doc.get("v"), 1):
        raise RepliesError("not a version-1 whistle replies file")
    entries = doc.get("replies")
    if not isinstance(entries, list) or not entries:
        raise RepliesError("replies file holds no replies")
    result = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or sorted(entry) != ["recipient", "report_id", "sealed"]:
            raise RepliesError(f"reply {number}: needs exactly report_id, recipient, sealed")
        report_id, recipient, sealed = entry["report_id"], entry["recipient"], entry["sealed"]
        if not isinstance(report_id, str) or not _HEX.match(report_id):
            raise RepliesError(f"reply {number}: bad report id")
        if not isinstance(recipient, str) or not isinstance(sealed, str):
            raise RepliesError(f"reply {number}: recipient and sealed must be base64 text")
        try:
            key = b64decode(recipient, size=32)
            blob = b64decode(sealed)
        except KeyFormatError as exc:
            raise RepliesError(f"reply {number}: {exc}") from exc
        body = len(blob) - SEAL_OVERHEAD
        if len(blob) > MAX_SEALED_REPLY_BYTES or body <= 0 or body % ENVELOPE_BLOCK:
            raise RepliesError(f"reply {number}: not a sealed reply envelope")
        result.append(SealedReply(report_id=report_id, recipient=key, sealed=blob))
    digests = [r.digest for r in result]
    if len(set(digests)) != len(digests):
        raise RepliesError("replies file holds the same reply twice")
    return result


def dump_replies(replies: list[SealedReply]) -> bytes:
    """Serialise replies into the replies file format."""
    doc = {"format": REPLIES_FORMAT, "v": 1, "replies": [
        {"report_id": r.report_id, "recipient": b64encode(r.recipient), "sealed": b64encode(r.sealed)}
        for r in replies]}
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def append_reply(path: Path, reply: SealedReply) -> int:
    """Add a reply to the replies file at ``path`` (created if absent); return how many it holds."""
    existing = parse_replies(path.read_bytes()) if path.exists() else []
    replies = [*existing, reply]
    atomic_write(path, dump_replies(replies), mode=0o600)
    return len(replies)
