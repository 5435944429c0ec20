# SPDX-License-Identifier: AGPL-3.0-or-later
"""``whistle casebook export-case ID --out DIR``: one case for the unit's legal file.

``DIR/case-<id>/`` receives the report and the messages (the same text files ``decrypt`` writes),
the replies written in the casebook, the unit's notes, tags, assignee and links (``case.txt``), the
attachments as they were received (``attachments/``, byte for byte), ``SHA256SUMS`` over every one
of those files (``sha256sum -c SHA256SUMS`` checks them), ``METADATA.txt`` listing the identifying
metadata found in each attachment, and cleaned copies made with mat2 (``cleaned/``, with their own
``SHA256SUMS``) beside — never instead of — the untouched originals. When mat2 is not installed the
export says so in ``METADATA.txt`` and on the terminal: it never skips the cleaning silently.

The folder is built in a hidden staging folder inside ``DIR`` and renamed into place at the end;
mat2 works inside it too, so nothing is written anywhere else.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from whistle.core.enums import Language, category_label, channel_text
from whistle.core.files import atomic_write
from whistle.workstation.casebook import deadlines, metadata
from whistle.workstation.casebook.store import Casebook, CasebookError, today
from whistle.workstation.names import NameSlots, safe_filename
from whistle.workstation.render import SavedAttachment, inert_line, inert_text, render_item, words


@dataclass
class ExportSummary:
    """What an export wrote."""

    folder: Path
    files: int = 0
    attachments: int = 0
    cleaned: int = 0
    # (attachment name, reason) for each attachment mat2 could not clean; all of them when mat2
    # is missing.
    not_cleaned: list[tuple[str, str]] = field(default_factory=list)
    mat2_missing: bool = False
    warnings: int = 0


def attachment_findings(book: Casebook, row: sqlite3.Row) -> list[metadata.Finding]:
    """The metadata findings of an attachment row, computed once and kept in the database."""
    import json

    data = row
    stored = data["metadata"]
    if stored is not None:
        return [metadata.Finding(f, v) for f, v in json.loads(stored)]
    if not data["sha256"]:
        return []
    found = metadata.find_metadata(book.blob_path(data["sha256"]), data["type"], data["name"])
    with book.transaction() as db:
        db.execute("UPDATE attachments SET metadata = ? WHERE id = ?",
                    (json.dumps([[f.field, f.value] for f in found]), data["id"]))
    return found


def export_case(book: Casebook, case_id: str, out_dir: Path, *, lang: Language = Language.ES,
                clean: bool = True) -> ExportSummary:
    """Export one case into ``out_dir/case-<id>/``; refuse when that folder exists."""
    case = book.find_case(case_id)
    cid = case["id"]
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = out_dir / f"case-{cid}"
    if final.exists():
        raise CasebookError(f"{final} exists already: choose another --out, or move it away")
    staging = Path(tempfile.mkdtemp(prefix=".whistle-export-", dir=out_dir))
    summary = ExportSummary(final)
    try:
        sums: list[tuple[str, str]] = []

        def write(rel: str, data: bytes) -> None:
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(path, data)
            sums.append((hashlib.sha256(data).hexdigest(), rel))
            summary.files += 1

        w = words(lang)
        names = NameSlots()
        saved_by_item: dict[str, list[SavedAttachment]] = {}
        att_rows = book.attachments(cid)
        meta_lines: list[str] = []
        clean_rows: list[tuple[Path, str]] = []
        for row in att_rows:
            if not row["sha256"]:
                continue
            name = names.claim(safe_filename(row["name"]))
            rel = f"attachments/{name}"
            src = book.blob_path(row["sha256"])
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.copyfile(src, target)
            os.chmod(target, 0o600)
            sums.append((row["sha256"], rel))
            summary.files += 1
            summary.attachments += 1
            saved_by_item.setdefault(row["item_id"], []).append(SavedAttachment(name, row["name"]))
            found = attachment_findings(book, row)
            if found:
                summary.warnings += 1
                meta_lines.append(f"{rel}:")
                meta_lines += [f"  {inert_line(f.field)}: {inert_line(f.value)}" for f in found]
            clean_rows.append((target, name))
        category = (category_label(case["category"], lang) if case["category_valid"]
                    else w["invalid_category"].format(code=inert_line(case["category"], 64)))
        for item in book.items(cid):
            state = item["binding"]
            key = f"binding_{state}"
            binding = w[key].format(seq=item["seq"]) if key in w else None
            text = render_item(report_id=cid, kind=item["kind"], seq=item["seq"],
                               day=item["created_on"], channel=channel_text(case["channel"], lang),
                               category=category, body=item["body"],
                               attachments=saved_by_item.get(item["id"], []),
                               quarantined=[p for p in item["problems"].split("\n") if p],
                               lang=lang, binding=binding)
            write("report.txt" if item["kind"] == "report" else f"message-{item['seq']:03d}.txt",
                  text.encode("utf-8"))
        write("case.txt", _case_text(book, case).encode("utf-8"))
        replies = book.replies(cid)
        if replies:
            write("replies.txt", _replies_text(replies).encode("utf-8"))
        notes = book.notes(cid)
        if notes:
            write("notes.txt", "".join(f"--- {n['written_on']}\n{inert_text(n['body'])}\n\n"
                                       for n in notes).encode("utf-8"))
        _cleaned(staging, clean_rows, summary, meta_lines, clean)
        write("METADATA.txt", _metadata_text(summary, meta_lines).encode("utf-8"))
        listing = "".join(f"{digest}  {rel}\n" for digest, rel in sorted(sums, key=lambda s: s[1]))
        atomic_write(staging / "SHA256SUMS", listing.encode("utf-8"))
        os.replace(staging, final)
        os.chmod(final, 0o700)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _cleaned(staging: Path, rows: list[tuple[Path, str]], summary: ExportSummary,
             meta_lines: list[str], clean: bool) -> None:
    if not rows or not clean:
        return
    if metadata.mat2_path() is None:
        summary.mat2_missing = True
        summary.not_cleaned = [(name, "mat2 is not installed") for _, name in rows]
        return
    scratch = staging / ".mat2"
    sums = []
    try:
        for original, name in rows:
            target = staging / "cleaned" / name
            target.parent.mkdir(exist_ok=True, mode=0o700)
            try:
                metadata.clean_copy(original, target, scratch)
            except (metadata.CleaningError, OSError, ValueError) as exc:
                summary.not_cleaned.append((name, str(exc)))
                continue
            summary.cleaned += 1
            sums.append(f"{hashlib.sha256(target.read_bytes()).hexdigest()}  {name}\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if sums:
        atomic_write(staging / "cleaned" / "SHA256SUMS", "".join(sums).encode("utf-8"))


def _metadata_text(summary: ExportSummary, lines: list[str]) -> str:
    head = ["Identifying metadata found in the attachments (a photo's position, a camera, a "
            "document's author). The originals in attachments/ are untouched evidence: share only "
            "the copies in cleaned/, and check them.", ""]
    body = lines or ["No identifying metadata found by whistle's finder (it knows JPEG, PNG, PDF "
                     "and office documents; other files may still carry some)."]
    tail = [""]
    if summary.mat2_missing:
        tail.append("NO CLEANED COPIES: mat2 is not installed on this workstation "
                    "(apt install mat2), so none of the attachments was cleaned.")
    else:
        tail.append(f"Cleaned copies made with mat2: {summary.cleaned}.")
        tail += [f"NOT CLEANED: {inert_line(name)}: {inert_line(reason)}"
                 for name, reason in summary.not_cleaned]
    return "\n".join(head + body + tail) + "\n"


def _case_text(book: Casebook, case: sqlite3.Row) -> str:
    c = case
    day = today()
    ack = deadlines.ack_deadline(c, day)
    feedback = deadlines.feedback_deadline(c, day)

    def state(d: deadlines.Deadline) -> str:
        if d.met_on:
            return f"due {d.due}, met {d.met_on}" + (" (late)" if d.late else "")
        return f"due {d.due}" + (" — OVERDUE" if d.overdue else "")

    cid = c["id"]
    lines = [f"Case {cid}", f"Received: {c['received_on']}",
             f"Status on the server: {inert_line(c['status'])}",
             f"Channel: {inert_line(c['channel'])}",
             f"Acknowledgement: {state(ack)}", f"Feedback: {state(feedback)}",
             f"Assignee: {inert_line(c['assignee']) or '-'}",
             f"Tags: {', '.join(inert_line(t) for t in book.tags(cid)) or '-'}",
             f"Linked cases: {', '.join(book.links(cid)) or '-'}",
             f"Exported: {day.isoformat()}"]
    return "\n".join(lines) + "\n"


def _replies_text(rows: list[sqlite3.Row]) -> str:
    out = []
    for r in rows:
        row = r
        where = ("on the server" if row["on_server"] else
                 f"collected into {row['collected_to']} on {row['collected_on']}, pending import"
                 if row["collected_on"] else "sealed, pending collection")
        number = f"reply {row['seq']}" if row["seq"] is not None else "reply (unbound)"
        out.append(f"--- {number}, {row['purpose']}, written {row['written_on']} ({where})\n"
                   f"{inert_text(row['body'])}\n")
    return "\n".join(out)
