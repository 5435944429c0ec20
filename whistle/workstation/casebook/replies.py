# SPDX-License-Identifier: AGPL-3.0-or-later
"""Replies written in the casebook: sealed and signed the moment they are written, collected into
a replies file for the USB stick (``whistle casebook replies --out FILE``), the format
``whistle import-replies`` takes (docs/protocol.md section 9.4).

A reply is sealed to the source key found **inside** the decrypted report (protocol v2), with the
case's tag and the reply's number in the case, never to the key the server's manifest names: a
server that swapped that key would otherwise read the reply. A report filed before protocol v2
carries no key of its own; a reply to it is sealed to the manifest's key only when the investigator
says so (``trust_server_key``), as ``whistle reply --trust-server-key`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from whistle.core.crypto import UnitPublicKey, UnitSigningKey
from whistle.core.files import atomic_write
from whistle.core.replies import (
    RepliesError,
    SealedReply,
    dump_replies,
    read_replies_file,
    seal_reply,
)
from whistle.workstation.casebook import deadlines
from whistle.workstation.casebook.store import Casebook, CasebookError


class UnboundCaseError(CasebookError):
    """The case's report was filed before protocol v2 (or is not in the casebook yet): there is
    no source key sealed inside it to reply to."""


@dataclass(frozen=True)
class WrittenReply:
    """A reply sealed, signed and recorded in the case."""

    id: int
    seq: int | None
    bound: bool


def write_reply(book: Casebook, case_id: str, text: str, signing_key: UnitSigningKey, *,
                purpose: str = "", trust_server_key: bool = False) -> WrittenReply:
    """Seal ``text`` to the case's source and sign it; record it as sent, pending import."""
    case = book.case(case_id)
    if case is None:
        raise CasebookError(f"case {case_id[:70]} is not in this casebook")
    text = text.replace("\r\n", "\n")
    if not text.strip():
        raise CasebookError("a reply cannot be empty")
    has_reply = bool(book.replies(case_id)) or int(case["server_replies"]) > 0
    if purpose not in deadlines.PURPOSES:
        purpose = "feedback" if has_reply else "acknowledgement"
    seq = book.next_reply_seq(case_id)
    try:
        if case["source_key"] is not None and case["case_tag"] is not None:
            recipient = UnitPublicKey(bytes(case["source_key"]))
            sealed = seal_reply(text, case_id, recipient, signing_key,
                                case_tag=bytes(case["case_tag"]), seq=seq)
            bound = True
        elif trust_server_key and case["report_version"] == 1:
            recipient = UnitPublicKey.from_base64(case["manifest_key"])
            sealed = seal_reply(text, case_id, recipient, signing_key)
            bound, seq = False, 0
        elif case["report_version"] == 1:
            raise UnboundCaseError(
                f"case {case_id} was filed before protocol v2: its report holds no key of the "
                "source's own; reply sealed to the server's copy of the key only if you accept it "
                "(trust the server's key)")
        else:
            raise UnboundCaseError(f"the report of case {case_id} is not in this casebook (it was "
                                   "quarantined or not exported): import a bundle made with "
                                   "'whistle export --all'")
    except RepliesError as exc:
        raise CasebookError(str(exc)) from exc
    rid = book.record_reply(case_id, seq=seq if bound else None, purpose=purpose, body=text,
                            recipient=sealed.recipient, sealed=sealed.sealed,
                            signature=sealed.signature)
    return WrittenReply(rid, seq if bound else None, bound)


def collect_replies(book: Casebook, out: Path, *, again: bool = False) -> int:
    """Write the replies not yet collected (``again``: every reply not yet on the server) into
    the replies file ``out``, adding to the replies it already holds; return how many were added.
    The file is written atomically (0600); the replies are then marked collected."""
    rows = (book.db.execute("SELECT * FROM replies WHERE on_server = 0 ORDER BY id").fetchall()
            if again else book.pending_replies())
    if not rows:
        return 0
    try:
        existing = read_replies_file(out) if out.exists() else []
    except (OSError, RepliesError) as exc:
        raise CasebookError(f"cannot add to {out}: {exc}") from exc
    have = {r.digest for r in existing}
    new = [SealedReply(r["case_id"], bytes(r["recipient"]), bytes(r["sealed"]),
                       bytes(r["signature"])) for r in rows]
    added = [(row, reply) for row, reply in zip(rows, new, strict=True) if reply.digest not in have]
    if added:
        atomic_write(out, dump_replies([*existing, *(reply for _, reply in added)]), mode=0o600)
    book.mark_collected([int(row["id"]) for row in rows], out.name)
    return len(added)
