# SPDX-License-Identifier: AGPL-3.0-or-later
"""Server side of the export: every encrypted item not yet exported (or all) into a bundle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from whistle.core.bundle import (
    BundleItem,
    BundleReport,
    BundleWriter,
    attachment_member,
    envelope_member,
)
from whistle.core.crypto import b64encode
from whistle.core.enums import ItemKind, Outcome, Status
from whistle.server.blobstore import blob_store
from whistle.server.intake import today
from whistle.server.models import Item, Report


@dataclass(frozen=True)
class ExportSummary:
    """What went into a bundle."""

    path: Path
    reports: int
    items: int


def export_bundle(
    sessions: sessionmaker[Session],
    out: Path,
    *,
    unit_fingerprint: str,
    include_all: bool = False,
    report_ids: list[str] | None = None,
) -> ExportSummary:
    """Write a bundle to ``out`` atomically; mark its items exported only once it is complete."""
    with sessions() as session:
        query = (
            select(Report)
            .options(selectinload(Report.items).selectinload(Item.attachments))
            .order_by(Report.received_on, Report.id)
        )
        if report_ids is not None:
            query = query.where(Report.id.in_(report_ids))
        reports = session.scalars(query).all()
        blobs = blob_store(session)
        writer = BundleWriter(out, created_on=today().isoformat(), unit_fingerprint=unit_fingerprint)
        exported: list[str] = []
        messages: dict[str, list[str]] = {}
        try:
            for report in reports:
                # Replies are sealed by the unit to the source; the unit has no use for them.
                items = [i for i in report.items
                         if i.kind != ItemKind.REPLY and (include_all or not i.exported)]
                if not items:
                    continue
                entry = BundleReport(
                    id=report.id, received_on=report.received_on.isoformat(), status=report.status,
                    channel=report.channel,
                    source_public_key=b64encode(report.source_public_key),
                    # All the replies the server holds for the case, exported or not: the
                    # workstation numbers the next one after them (docs/protocol.md section 6).
                    replies=sum(1 for i in report.items if i.kind == ItemKind.REPLY),
                    # Why a closed case was closed (the casebook's transparency file counts them).
                    outcome=report.outcome if report.status == Status.CLOSED
                    and report.outcome in tuple(Outcome) else None,
                )
                for item in items:
                    writer.add_member(envelope_member(item.id), blobs.read(session, item.envelope_blob_id))
                    names = []
                    for index, att in enumerate(item.attachments):
                        name = attachment_member(item.id, index)
                        writer.add_member(name, blobs.read(session, att.blob_id))
                        names.append(name)
                    entry.items.append(BundleItem(
                        id=item.id, seq=item.seq, kind=item.kind,
                        created_on=item.created_on.isoformat(), channel=item.channel,
                        envelope=envelope_member(item.id), attachments=names,
                    ))
                    exported.append(item.id)
                    if item.kind == ItemKind.MESSAGE:
                        messages.setdefault(report.id, []).append(item.id)
                writer.add_report(entry)
            writer.close()
        except BaseException as exc:
            writer.abort(exc)
            raise
    if exported:
        with sessions.begin() as session:
            # Follow-up messages marked now leave the case list's count of new messages
            # (models.Report.new_messages). The count comes from the UPDATE itself (``NOT
            # exported``), so items exported before (include_all) or by an export running at the
            # same time are not counted out twice.
            for report_id, ids in messages.items():
                result = session.execute(
                    update(Item).where(Item.id.in_(ids), Item.exported.is_(False))
                    .values(exported=True).execution_options(synchronize_session=False))
                marked = cast("CursorResult[Any]", result).rowcount
                if marked:
                    session.execute(update(Report).where(Report.id == report_id)
                                    .values(new_messages=Report.new_messages - marked)
                                    .execution_options(synchronize_session=False))
            session.execute(update(Item).where(Item.id.in_(exported), Item.exported.is_(False))
                            .values(exported=True).execution_options(synchronize_session=False))
    return ExportSummary(path=out, reports=len({r.id for r in reports if any(
        i.id in exported for i in r.items)}), items=len(exported))
