# SPDX-License-Identifier: AGPL-3.0-or-later
"""Case workflow: the investigators' list with deadlines, status changes, deletion, replies and
follow-up messages. Database only, no Flask: the web UI and the CLI share it."""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from whistle.core.crypto import UnitVerifyKey
from whistle.core.enums import Channel, ItemKind, Outcome, Status
from whistle.core.errors import WhistleError
from whistle.core.replies import RepliesError, ReplyAuthError, SealedReply, verify_reply
from whistle.server import audit
from whistle.server.blobstore import blob_store, read_bytes
from whistle.server.intake import ChunkSource, add_item, today
from whistle.server.models import Item, Report

SORTS = ("received", "updated", "status")
FILTERS = ("all", "open", "overdue", *(s.value for s in Status))


class CaseError(WhistleError):
    """A case operation was refused: unknown case, invalid status or outcome."""


class ReplyRefusedError(RepliesError):
    """One reply of a replies file was refused, so the whole file was.

    ``str()`` is the English line the command prints; ``code`` and ``number`` (1-based, as the
    file lists them) let the web pages say it in the investigator's language without this module
    knowing about translations (no Flask here): ``not_signed``, ``no_report``, ``wrong_source``,
    ``already_imported``; ``report_id`` names the case where there is one.
    """

    CODES = ("not_signed", "no_report", "wrong_source", "already_imported")

    def __init__(self, code: str, number: int, report_id: str, message: str) -> None:
        super().__init__(f"reply {number}: {message}")
        self.code, self.number, self.report_id = code, number, report_id


@dataclass(frozen=True)
class Deadlines:
    """Acknowledgement and feedback deadlines (EU Directive 2019/1937, art. 9)."""

    ack_days: int = 7
    feedback_months: int = 3

    def ack_due(self, received: dt.date) -> dt.date:
        return received + dt.timedelta(days=self.ack_days)

    def feedback_due(self, received: dt.date) -> dt.date:
        return add_months(received, self.feedback_months)


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` later, clamped to the month's end (31 Jan + 1 → 28/29 Feb)."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class CaseRow:
    """One line of the case list."""

    id: str
    received_on: dt.date
    updated_on: dt.date
    status: Status
    outcome: Outcome | None
    # A code this version may not know (a channel added later): kept as text, shown as it is.
    channel: Channel | str
    new_messages: int
    replies: int
    ack_due: dt.date
    feedback_due: dt.date
    ack_overdue: bool
    feedback_overdue: bool

    @property
    def short_id(self) -> str:
        return self.id[:8]


@dataclass(frozen=True)
class CasePage:
    rows: list[CaseRow]
    total: int
    page: int
    pages: int


OPEN_STATUSES = tuple(s.value for s in Status if s is not Status.CLOSED)


def _filter(query, status: str, deadlines: Deadlines, day: dt.date, *,  # type: ignore[no-untyped-def]
            ranges: bool = True):
    if status == "open":
        # The same rows either way (a status is always a Status). As ranges of the
        # (status, …) indexes, PostgreSQL counts them, and pages them in status order, from the
        # index alone; ``!= 'closed'`` lets a date sort walk its (date, id, status) index in order
        # instead of sorting (bench/case_list.py).
        return query.where(Report.status.in_(OPEN_STATUSES) if ranges
                           else Report.status != Status.CLOSED.value)
    if status == "overdue":
        ack_cut = day - dt.timedelta(days=deadlines.ack_days)
        feedback_cut = add_months(day, -deadlines.feedback_months)
        # Open cases older than the earlier deadline: one range of the (status, received_on, id,
        # replies) index per open status, answered from the index alone.
        return query.where(
            Report.status.in_(OPEN_STATUSES),
            Report.received_on < max(ack_cut, feedback_cut),
            or_(and_(Report.status == Status.RECEIVED.value, Report.received_on < ack_cut),
                and_(Report.received_on < feedback_cut, Report.replies == 0)),
        )
    if status in tuple(Status):
        return query.where(Report.status == Status(status).value)
    if status != "all":
        raise CaseError(f"unknown filter {status!r}")
    return query


def list_cases(session: Session, *, status: str = "open", sort: str = "received",
               descending: bool = False, page: int = 1, per_page: int = 50,
               deadlines: Deadlines = Deadlines(), day: dt.date | None = None) -> CasePage:
    """One page of cases, with counts and deadlines computed for that page only."""
    day = day or today()
    if sort not in SORTS:
        raise CaseError(f"unknown sort {sort!r}")
    # Within a status, oldest first: the (status, received_on, id) index gives that order.
    by_sort: dict[str, list[InstrumentedAttribute[Any]]] = {
        "received": [Report.received_on], "updated": [Report.updated_on],
        "status": [Report.status, Report.received_on]}
    order = [c.desc() if descending else c.asc() for c in [*by_sort[sort], Report.id]]
    # Count and page over the ids only, which indexes can answer without reading the table; then
    # read the page's 50 rows. Selecting whole rows made a deep page read every row before it.
    counted = _filter(select(Report.id), status, deadlines, day)
    total = session.scalar(select(func.count()).select_from(counted.subquery())) or 0
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    matching = _filter(select(Report.id), status, deadlines, day, ranges=sort == "status")
    window = matching.order_by(*order).limit(per_page).offset((page - 1) * per_page).subquery()
    reports = session.scalars(
        select(Report).join(window, Report.id == window.c.id).order_by(*order)).all()
    rows = []
    for r in reports:
        ack_due, feedback_due = deadlines.ack_due(r.received_on), deadlines.feedback_due(r.received_on)
        status = Status(r.status)
        rows.append(CaseRow(
            id=r.id, received_on=r.received_on, updated_on=r.updated_on, status=status,
            outcome=Outcome(r.outcome) if r.outcome else None, channel=_channel(r.channel),
            new_messages=r.new_messages, replies=r.replies, ack_due=ack_due,
            feedback_due=feedback_due, ack_overdue=status is Status.RECEIVED and day > ack_due,
            feedback_overdue=status is not Status.CLOSED and r.replies == 0 and day > feedback_due,
        ))
    return CasePage(rows=rows, total=total, page=page, pages=pages)


def _channel(code: str) -> Channel | str:
    try:
        return Channel(code)
    except ValueError:
        return code


def get_case(session: Session, report_id: str) -> Report:
    # Report ids are hex (crypto.random_id); anything else, a NUL included (which PostgreSQL
    # refuses in text: a 500), is no case.
    if not re.fullmatch(r"[0-9a-f]{8,32}", report_id):
        raise CaseError("no such case")
    report = session.get(Report, report_id)
    if report is None:
        raise CaseError("no such case")
    return report


def set_status(session: Session, report_id: str, status: str, outcome: str | None, actor: str) -> None:
    """Change a case's status (closing needs an outcome); recorded in the audit log."""
    if status not in tuple(Status):
        raise CaseError(f"unknown status {status!r}")
    if status == Status.CLOSED and outcome not in tuple(Outcome):
        raise CaseError("closing a case needs an outcome from the list")
    report = get_case(session, report_id)
    old = report.status
    report.status = Status(status).value
    report.outcome = Outcome(outcome).value if status == Status.CLOSED and outcome else None
    if status != Status.RECEIVED and report.acknowledged_on is None:
        report.acknowledged_on = today()
    report.updated_on = today()
    audit.record(session, actor, audit.STATUS_CHANGE, report_id,
                 f"{old} -> {status}" + (f" ({outcome})" if status == Status.CLOSED else ""))


def delete_case(session: Session, report_id: str, actor: str) -> None:
    """Delete a case and every blob of it; SQLite's secure_delete zeroes the freed pages."""
    report = get_case(session, report_id)
    blob_ids = [i.envelope_blob_id for i in report.items]
    blob_ids += [a.blob_id for i in report.items for a in i.attachments]
    session.delete(report)
    session.flush()
    blob_store(session).delete(session, blob_ids)
    audit.record(session, actor, audit.CASE_DELETE, report_id, "")


def next_seq(session: Session, report_id: str) -> int:
    """The next item's position in the case (report, messages and replies together: the
    database's order of items, ``items.seq``)."""
    return (session.scalar(select(func.max(Item.seq)).where(Item.report_id == report_id)) or 0) + 1


class StaleSeqError(CaseError):
    """A message declared a source sequence number other than the case's next one (a page that
    was open while another message was sent, or a replay); nothing was stored."""


SOURCE_KINDS = (ItemKind.REPORT.value, ItemKind.MESSAGE.value)


def next_source_seq(session: Session, report_id: str, *, lock: bool = True) -> int:
    """The number the source's next message carries in its envelope (docs/protocol.md section 2):
    the source's items of the case (the report and its messages; replies do not count) plus one.

    With ``lock`` (for a writer) it takes the case's row lock first (``SELECT … FOR UPDATE``
    where the database has it; SQLite has one writer at a time), so two messages sent at once
    cannot both be given one number; a page that only shows the number needs none."""
    if lock:
        session.scalar(select(Report.id).where(Report.id == report_id).with_for_update())
    count = session.scalar(select(func.count()).select_from(Item).where(
        Item.report_id == report_id, Item.kind.in_(SOURCE_KINDS)))
    return (count or 0) + 1


def add_message(session: Session, report_id: str, sealed: bytes, attachments: Iterable[ChunkSource],
                channel: Channel, *, seq: int | None = None) -> Item:
    """A source's follow-up message (sealed to the unit) on its own case, as it came in.

    ``seq`` is the source sequence number the sealed envelope declares; it must be the case's
    :func:`next_source_seq`, else :class:`StaleSeqError` and nothing is stored. None only where
    nothing was declared (tests, tools filing legacy items)."""
    report = get_case(session, report_id)
    if seq is not None and seq != next_source_seq(session, report_id):
        raise StaleSeqError("the message's number is not the case's next one")
    item = add_item(session, report, seq=next_seq(session, report_id), kind=ItemKind.MESSAGE,
                    sealed_envelope=sealed, attachments=attachments, channel=channel)
    report.updated_on = today()
    return item


def import_replies(session: Session, replies: list[SealedReply], actor: str,
                   verify_key: UnitVerifyKey) -> int:
    """Store replies in the caller's transaction; refuse the whole file on any bad entry.

    Every reply's signature must verify with the unit's signing key (``verify_key``, from
    ``keys/unit-sign.pub``) over its report id, recipient and ciphertext before anything is
    stored: an investigator account or anyone with the CLI cannot pass off a text as the unit's.
    """
    for number, reply in enumerate(replies, 1):
        rid = reply.report_id
        try:
            verify_reply(reply, verify_key)
        except ReplyAuthError as exc:
            raise ReplyRefusedError("not_signed", number, rid, str(exc)) from exc
        report = session.get(Report, rid)
        if report is None:
            raise ReplyRefusedError("no_report", number, rid, f"no report {rid} on this server")
        if report.source_public_key != reply.recipient:
            raise ReplyRefusedError("wrong_source", number, rid,
                                    f"not sealed to report {rid}'s source key")
        existing = {hashlib.sha256(read_bytes(session, i.envelope_blob_id)).hexdigest()
                    for i in report.items if i.kind == ItemKind.REPLY}
        if reply.digest in existing:
            raise ReplyRefusedError("already_imported", number, rid, "already imported")
    for reply in replies:
        report = get_case(session, reply.report_id)
        item = add_item(session, report, seq=next_seq(session, reply.report_id), kind=ItemKind.REPLY,
                        sealed_envelope=reply.sealed, attachments=(), channel=None)
        item.signature = reply.signature
        report.updated_on = today()
        if report.status == Status.RECEIVED:
            # A reply is the acknowledgement the source is waiting for.
            report.status, report.acknowledged_on = Status.ACKNOWLEDGED.value, today()
        session.flush()
    audit.record(session, actor, audit.REPLIES_UPLOAD, None,
                 f"{len(replies)} repl{'y' if len(replies) == 1 else 'ies'} for "
                 + ", ".join(sorted({r.report_id for r in replies})))
    return len(replies)


def reply_items(report: Report) -> list[Item]:
    """The case's replies, in the order they were stored."""
    return [i for i in report.items if i.kind == ItemKind.REPLY]


__all__ = ["CaseError", "CasePage", "CaseRow", "Deadlines", "FILTERS", "ReplyRefusedError", "SORTS",
           "StaleSeqError", "add_message", "delete_case", "get_case", "import_replies", "list_cases",
           "next_source_seq", "set_status"]
