# SPDX-License-Identifier: AGPL-3.0-or-later
"""The audit log: what investigators and admins did, append-only and hash-chained. No Flask here.

Each entry's ``hash`` is SHA-256 over a canonical JSON of its fields and the previous entry's
hash, so editing, deleting or reordering an entry breaks the chain at that entry. Removing entries
from the *end* leaves a shorter, valid chain: only a head hash recorded outside the server
(``whistle audit verify`` prints it) reveals that, through ``verify(..., expect_head=...)``.

The log records investigators' actions, which is accountability; it never records anything about
a source (no address, no passphrase, no time a source acted). Its times are to the minute.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from whistle.core.errors import WhistleError
from whistle.server.models import AuditEntry

GENESIS = "0" * 64

# Account actions (this module's callers: whistle.server.web.investigator.auth/admin and the CLI).
LOGIN = "login"
LOGIN_FAILED = "login_failed"  # known accounts only: an unknown name is never written down
LOGOUT = "logout"
ACCOUNT_CREATE = "account_create"
ACCOUNT_DISABLE = "account_disable"
ACCOUNT_ENABLE = "account_enable"
TOTP_RESET = "totp_reset"
PASSWORD_RESET = "password_reset"  # noqa: S105 - an action name, not a password
# Case actions.
STATUS_CHANGE = "status_change"
CASE_DELETE = "case_delete"
BUNDLE_DOWNLOAD = "bundle_download"
REPLIES_UPLOAD = "replies_upload"
# Administration of the public site.
TRANSPARENCY_UPLOAD = "transparency_upload"

ACTIONS = frozenset({
    LOGIN, LOGIN_FAILED, LOGOUT, ACCOUNT_CREATE, ACCOUNT_DISABLE, ACCOUNT_ENABLE, TOTP_RESET,
    PASSWORD_RESET, STATUS_CHANGE, CASE_DELETE, BUNDLE_DOWNLOAD, REPLIES_UPLOAD,
    TRANSPARENCY_UPLOAD,
})
# The actor of commands run on the server's console; parentheses cannot occur in account names.
CLI_ACTOR = "(command line)"


class AuditError(WhistleError):
    """An entry cannot be written (unknown action, field too long)."""


@dataclass(frozen=True)
class AuditReport:
    """What :func:`verify` found. ``first_bad_seq`` and ``reason`` are set when ``ok`` is false."""

    ok: bool
    count: int
    head: str
    first_bad_seq: int | None = None
    reason: str = ""


def utc_minute(now: dt.datetime | None = None) -> dt.datetime:
    """Now (or ``now``) in UTC, without seconds, as the naive datetime the column stores."""
    when = now or dt.datetime.now(dt.UTC)
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when.replace(second=0, microsecond=0)


def entry_hash(seq: int, at: dt.datetime, actor: str, action: str, report_id: str | None,
               detail: str, prev_hash: str) -> str:
    """SHA-256 (hex) of the canonical JSON of one entry; docs/investigators.md specifies it."""
    canonical = json.dumps(
        {"seq": seq, "at": at.isoformat(), "actor": actor, "action": action,
         "report_id": report_id, "detail": detail, "prev_hash": prev_hash},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _hash_of(entry: AuditEntry) -> str:
    return entry_hash(entry.seq, entry.at, entry.actor, entry.action, entry.report_id,
                      entry.detail, entry.prev_hash)


def record(session: Session, actor: str, action: str, report_id: str | None = None,
           detail: str = "", *, now: dt.datetime | None = None) -> AuditEntry:
    """Append one entry inside the caller's transaction (the caller commits).

    Two writers racing for the same ``seq`` do not fork the chain: ``seq`` is the primary key and
    ``hash`` is unique, so the second commit fails and its whole transaction (the audited action
    included) rolls back.
    """
    if action not in ACTIONS:
        raise AuditError(f"unknown audit action {action!r}")
    if len(actor) > 64 or (report_id is not None and len(report_id) > 32):
        raise AuditError("audit actor or report id too long")
    last = session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()
    seq = last.seq + 1 if last else 1
    prev_hash = last.hash if last else GENESIS
    at = utc_minute(now)
    entry = AuditEntry(seq=seq, at=at, actor=actor, action=action, report_id=report_id,
                       detail=detail, prev_hash=prev_hash,
                       hash=entry_hash(seq, at, actor, action, report_id, detail, prev_hash))
    session.add(entry)
    session.flush()
    return entry


def verify(session: Session, *, expect_head: str | None = None) -> AuditReport:
    """Walk the whole chain in ``seq`` order and report the first entry that breaks it.

    Detects an edited entry (its hash no longer matches its fields), a deleted entry (a gap in
    ``seq``), reordered or re-linked entries (``prev_hash`` is not the previous entry's hash).
    ``expect_head`` is a head hash recorded earlier, outside the server: if it is not in the chain,
    entries were removed from the end (or the log was rebuilt). Without it, truncation of the
    tail cannot be seen, and neither can a chain someone recomputed from start to end.
    """
    expected_seq, prev, count = 1, GENESIS, 0
    if expect_head is not None:
        expect_head = expect_head.strip().lower()
    seen_expected = expect_head in (None, GENESIS)
    query = select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=500)
    for entry in session.scalars(query):
        if entry.seq != expected_seq:
            return AuditReport(False, count, prev, expected_seq,
                               f"entry {expected_seq} is missing (next entry is {entry.seq})")
        if _hash_of(entry) != entry.hash:
            return AuditReport(False, count, prev, entry.seq,
                               "the entry was changed after it was written (hash mismatch)")
        if entry.prev_hash != prev:
            return AuditReport(False, count, prev, entry.seq,
                               "the entry does not follow the one before it (prev_hash mismatch)")
        prev, count, expected_seq = entry.hash, count + 1, expected_seq + 1
        if entry.hash == expect_head:
            seen_expected = True
    if not seen_expected:
        return AuditReport(False, count, prev, count + 1,
                           "the expected head is not in the log: entries were removed from its end "
                           "or the log was rewritten")
    return AuditReport(True, count, prev)
