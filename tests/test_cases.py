# SPDX-License-Identifier: AGPL-3.0-or-later
"""Case workflow: list, deadlines, filters, status changes, deletion and replies import."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session
from support import Workstation

from whistle.core.crypto import UnitPublicKey, UnitSecretKey, UnitSigningKey
from whistle.core.enums import Channel, ItemKind
from whistle.core.replies import RepliesError, SealedReply, seal_reply
from whistle.server.audit import verify
from whistle.server.casework import (
    CaseError,
    Deadlines,
    add_months,
    delete_case,
    import_replies,
    list_cases,
    set_status,
)
from whistle.server.intake import add_item
from whistle.server.models import AuditEntry, Blob, BlobChunk, Item, Report

TODAY = dt.date(2026, 11, 28)


def make_report(db: Session, received: dt.date, status: str = "received", *, replies: int = 0,
                new_messages: int = 0) -> Report:
    key = UnitSecretKey.generate()
    report = Report(id=os.urandom(8).hex(), received_on=received, updated_on=received,
                    status=status, channel=Channel.BROWSER.value, login_hash=os.urandom(32),
                    source_public_key=key.public_key.encode())
    db.add(report)
    db.flush()
    add_item(db, report, seq=1, kind=ItemKind.REPORT, sealed_envelope=b"\0" * 1072, attachments=(),
             channel=Channel.BROWSER)
    for n in range(new_messages):
        add_item(db, report, seq=2 + n, kind=ItemKind.MESSAGE, sealed_envelope=b"\1" * 1072,
                 attachments=(), channel=Channel.SERVER_FORM)
    for n in range(replies):
        add_item(db, report, seq=100 + n, kind=ItemKind.REPLY, sealed_envelope=b"\2" * 1072,
                 attachments=(), channel=None)
    return report


@pytest.fixture
def db(app: Flask):  # type: ignore[no-untyped-def]
    with app.extensions["whistle"].sessions.begin() as session:
        yield session


def test_cases_add_months_clamps_to_month_end() -> None:
    assert add_months(dt.date(2026, 1, 31), 1) == dt.date(2026, 2, 28)
    assert add_months(dt.date(2026, 11, 30), 3) == dt.date(2027, 2, 28)
    assert add_months(dt.date(2026, 5, 15), -6) == dt.date(2025, 11, 15)


def test_cases_deadlines_and_overdue_flags(db: Session) -> None:
    fresh = make_report(db, TODAY - dt.timedelta(days=3))
    late_ack = make_report(db, TODAY - dt.timedelta(days=8))
    late_feedback = make_report(db, TODAY - dt.timedelta(days=100), "investigating")
    answered = make_report(db, TODAY - dt.timedelta(days=100), "investigating", replies=1)
    rows = {r.id: r for r in list_cases(db, status="all", day=TODAY).rows}
    assert rows[fresh.id].ack_due == TODAY + dt.timedelta(days=4)
    assert not rows[fresh.id].ack_overdue and not rows[fresh.id].feedback_overdue
    assert rows[late_ack.id].ack_overdue
    assert rows[late_feedback.id].feedback_overdue and not rows[late_feedback.id].ack_overdue
    assert not rows[answered.id].feedback_overdue
    overdue = {r.id for r in list_cases(db, status="overdue", day=TODAY).rows}
    assert overdue == {late_ack.id, late_feedback.id}


def test_cases_deadlines_configurable(db: Session) -> None:
    report = make_report(db, TODAY - dt.timedelta(days=3))
    (row,) = list_cases(db, status="all", day=TODAY, deadlines=Deadlines(ack_days=2)).rows
    assert row.id == report.id and row.ack_overdue


def test_cases_filter_sort_and_paginate(db: Session) -> None:
    made = [make_report(db, TODAY - dt.timedelta(days=i), "closed" if i % 3 == 0 else "received")
            for i in range(1, 13)]
    page = list_cases(db, status="open", sort="received", per_page=5, page=2, day=TODAY)
    open_ids = [r.id for r in sorted((m for m in made if m.status != "closed"),
                                     key=lambda r: (r.received_on, r.id))]
    assert page.total == 8 and page.pages == 2 and [r.id for r in page.rows] == open_ids[5:]
    newest = list_cases(db, status="all", sort="received", descending=True, per_page=1, day=TODAY)
    assert newest.rows[0].id == made[0].id
    assert list_cases(db, status="closed", day=TODAY).total == 4
    assert list_cases(db, status="open", page=99, per_page=5, day=TODAY).page == 2
    with pytest.raises(CaseError):
        list_cases(db, status="bogus")


def test_cases_status_change_sets_dates_and_audits(db: Session) -> None:
    report = make_report(db, TODAY - dt.timedelta(days=2))
    set_status(db, report.id, "acknowledged", None, "ana")
    assert report.acknowledged_on is not None and report.updated_on >= report.received_on
    with pytest.raises(CaseError):
        set_status(db, report.id, "closed", None, "ana")  # closing needs an outcome
    with pytest.raises(CaseError):
        set_status(db, report.id, "bogus", None, "ana")
    set_status(db, report.id, "closed", "substantiated", "ana")
    assert report.status == "closed" and report.outcome == "substantiated"
    entries = db.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
    assert [(e.actor, e.action, e.report_id) for e in entries] == [
        ("ana", "status_change", report.id), ("ana", "status_change", report.id)]
    assert verify(db).ok


def test_cases_delete_removes_every_blob(db: Session) -> None:
    keep = make_report(db, TODAY)
    gone = make_report(db, TODAY, new_messages=2, replies=1)
    blobs_before = db.scalar(select(func.count()).select_from(Blob))
    delete_case(db, gone.id, "ana")
    db.flush()
    assert db.get(Report, gone.id) is None and db.get(Report, keep.id) is not None
    assert db.scalar(select(func.count()).select_from(Blob)) == blobs_before - 4
    assert db.scalar(select(func.count()).select_from(BlobChunk)) == blobs_before - 4
    assert db.scalar(select(func.count()).select_from(Item).where(Item.report_id == gone.id)) == 0
    if db.bind.dialect.name == "sqlite":  # type: ignore[union-attr]
        assert db.execute(text("PRAGMA secure_delete")).scalar() == 1
    with pytest.raises(CaseError):
        delete_case(db, gone.id, "ana")


def _reply_for(report: Report, ws: Workstation, body: str = "Respuesta") -> SealedReply:
    """Sealed and signed as ``whistle reply`` does with the unit's key file."""
    return seal_reply(body, report.id, UnitPublicKey(report.source_public_key), ws.signing_key)


def test_cases_import_replies_acknowledges_and_audits(db: Session, workstation: Workstation) -> None:
    report = make_report(db, TODAY)
    verify_key = workstation.signing_key.verify_key
    assert import_replies(db, [_reply_for(report, workstation)], "ana", verify_key) == 1
    # The unit's signature is stored with the reply: the source's page checks it again.
    assert len(report.items[-1].signature or b"") == 64
    assert report.status == "acknowledged" and report.acknowledged_on is not None
    assert [i.kind for i in report.items] == ["report", "reply"]
    assert db.scalars(select(AuditEntry)).one().action == "replies_upload"


@pytest.mark.parametrize("problem", ["unknown-report", "wrong-key", "already-imported", "unsigned",
                                     "forged-signature", "other-signing-key", "moved"])
def test_cases_import_replies_refuses_whole_file(db: Session, workstation: Workstation,
                                                 problem: str) -> None:
    verify_key = workstation.signing_key.verify_key
    good_report = make_report(db, TODAY)
    other = make_report(db, TODAY)
    good = _reply_for(good_report, workstation, "primera")
    genuine = _reply_for(other, workstation, "texto")
    # A forger: seals a text to the stored source key, with no signature or a made-up one.
    forged = SealedReply(other.id, other.source_public_key, genuine.sealed, bytes(64))
    if problem == "unknown-report":
        bad = seal_reply("x", "ffffffffffffffff", UnitPublicKey(other.source_public_key),
                         workstation.signing_key)
    elif problem == "wrong-key":
        bad = seal_reply("x", other.id, UnitPublicKey(good_report.source_public_key),
                         workstation.signing_key)
    elif problem == "unsigned":
        bad = SealedReply(other.id, other.source_public_key, genuine.sealed, b"")
    elif problem == "forged-signature":
        bad = forged
    elif problem == "other-signing-key":
        bad = seal_reply("x", other.id, UnitPublicKey(other.source_public_key),
                         UnitSigningKey.generate())
    elif problem == "moved":  # the unit's reply to one case, presented as another's
        bad = SealedReply(other.id, good_report.source_public_key, good.sealed, good.signature)
    else:
        bad = _reply_for(other, workstation, "dup")
        import_replies(db, [bad], "ana", verify_key)  # the same file uploaded twice
    replies_before = db.scalar(select(func.count()).select_from(Item).where(Item.kind == "reply"))
    with pytest.raises(RepliesError, match="reply 2"):
        import_replies(db, [good, bad], "ana", verify_key)
    assert db.scalar(select(func.count()).select_from(Item).where(Item.kind == "reply")) == replies_before



def test_cases_counters_follow_add_item_export_and_replies(app: Flask, tmp_path,  # type: ignore[no-untyped-def]
                                                         workstation: Workstation) -> None:
    """reports.replies / new_messages (the case list's counters) follow every way items come and
    go: add_item, add_message, an export (only messages not exported before count out; a second
    export of everything changes nothing), import_replies."""
    from whistle.server.casework import add_message
    from whistle.server.export import export_bundle

    state = app.extensions["whistle"]

    def counters(report_id: str) -> tuple[int, int]:
        with state.sessions() as s:
            row = s.execute(select(Report.replies, Report.new_messages)
                            .where(Report.id == report_id)).one()
            listed = {r.id: r for r in list_cases(s, status="all", day=TODAY).rows}[report_id]
            assert (listed.replies, listed.new_messages) == tuple(row)
            return row[0], row[1]

    with state.sessions.begin() as s:
        report = make_report(s, TODAY, new_messages=2)
        other = make_report(s, TODAY, new_messages=1, replies=1)
        rid, oid = report.id, other.id
    assert counters(rid) == (0, 2) and counters(oid) == (1, 1)
    export_bundle(state.sessions, tmp_path / "one.zip", unit_fingerprint="test", report_ids=[rid])
    assert counters(rid) == (0, 0) and counters(oid) == (1, 1)
    with state.sessions.begin() as s:
        add_message(s, rid, b"\3" * 1072, (), Channel.BROWSER)
    assert counters(rid) == (0, 1)
    export_bundle(state.sessions, tmp_path / "all.zip", unit_fingerprint="test", include_all=True)
    assert counters(rid) == (0, 0) and counters(oid) == (1, 0)
    export_bundle(state.sessions, tmp_path / "again.zip", unit_fingerprint="test", include_all=True)
    assert counters(rid) == (0, 0) and counters(oid) == (1, 0)
    with state.sessions.begin() as s:
        r = s.get(Report, rid)
        assert r is not None
        import_replies(s, [_reply_for(r, workstation, "una"), _reply_for(r, workstation, "otra")], "ana",
                       workstation.signing_key.verify_key)
    assert counters(rid) == (2, 0)
