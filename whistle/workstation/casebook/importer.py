# SPDX-License-Identifier: AGPL-3.0-or-later
"""``whistle casebook import``: bundles opened with the unit's keyring into the casebook.

Each item is opened and checked exactly as ``whistle decrypt`` does it (the same functions of
:mod:`whistle.workstation.decrypt`: keyring, manifest agreement, protocol-v2 binding checks); an
item that fails is quarantined — listed in the casebook's quarantine list and on stderr, never
stored as it came — and the others are imported. Importing is idempotent: an item whose id the
casebook holds is skipped without being read, and an attachment's plaintext is stored once by its
SHA-256, so the same or an overlapping bundle adds nothing twice.

Attachments are decrypted as they stream out of the zip into a temporary file inside the casebook
folder (``tmp/``), hashed on the way, then renamed to their content address: a bundle of any size
is never held whole, and no plaintext is written outside the casebook folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from whistle.core.bundle import BundleError, BundleItem, BundleReader, BundleReport
from whistle.core.crypto import CryptoError, UnitSecretKey
from whistle.core.enums import ItemKind, Status
from whistle.workstation.casebook import answers, deadlines
from whistle.workstation.casebook.opening import (
    CaseChecker,
    ItemCheckError,
    Keyring,
    Opened,
    is_category_code,
)
from whistle.workstation.casebook.store import Casebook, CasebookError, today
from whistle.workstation.checks import decrypt_member
from whistle.workstation.render import inert_line

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class QuarantineEntry:
    """One part of a bundle not imported as it came, and why."""

    report_id: str
    item_id: str
    seq: int
    kind: str
    part: str
    reason: str

    def describe(self) -> str:
        """One inert line for a person (the terminal, the quarantine page)."""
        if not self.item_id:
            return inert_line(f"report {self.report_id}: {self.reason}")
        return inert_line(f"report {self.report_id} item {self.item_id} (seq {self.seq}, "
                          f"{self.kind}) {self.part}: {self.reason}")


@dataclass
class ImportSummary:
    """What one bundle added to the casebook."""

    bundle: str
    cases_added: int = 0
    # Known cases whose status or outcome the bundle changed.
    cases_updated: int = 0
    items_added: int = 0
    items_skipped: int = 0
    attachments_added: int = 0
    blobs_added: int = 0
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    opened_by: list[int] = field(default_factory=list)


def import_bundle(book: Casebook, bundle_path: Path, keys: Sequence[UnitSecretKey], *,
                  progress: Progress | None = None) -> ImportSummary:
    """Import one bundle; return what it added. Raise :class:`CasebookError` (nothing imported)
    when the bundle is unreadable, or when it held new items and not one of them opened (a wrong
    key, usually)."""
    if not keys:
        raise CasebookError("no key given")
    book.sweep_tmp()
    try:
        with BundleReader(bundle_path) as bundle:
            run = _Run(book, bundle, Keyring(list(keys)), progress, ImportSummary(bundle_path.name))
            created_on = bundle.meta["created_on"]
            run.plan()
            for report in bundle.reports:
                run.import_report(report, created_on)
    except BundleError as exc:
        raise CasebookError(f"{inert_line(bundle_path.name)} is not a readable bundle, nothing "
                            f"imported: {inert_line(str(exc))}") from exc
    summary = run.summary
    summary.opened_by = list(run.keyring.opened)
    if summary.items_added == 0 and run.new_items and summary.quarantined:
        first = summary.quarantined[0].describe()
        raise CasebookError(f"not one item of {inert_line(bundle_path.name)} could be imported; "
                            f"first: {first}")
    day = today().isoformat()
    with book.transaction() as db:
        db.executemany(
            "INSERT OR IGNORE INTO quarantine (bundle, bundle_created_on, imported_on, report_id, "
            "item_id, seq, kind, part, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(bundle_path.name, created_on, day, q.report_id, q.item_id, q.seq, q.kind, q.part,
              q.reason) for q in summary.quarantined])
        db.execute("UPDATE quarantine SET resolved = 1 WHERE resolved = 0 AND part = 'envelope' "
                   "AND item_id IN (SELECT id FROM items)")
        db.execute("INSERT INTO bundles (name, created_on, imported_on, items_added, "
                   "attachments_added, quarantined) VALUES (?, ?, ?, ?, ?, ?)",
                   (bundle_path.name, created_on, day, summary.items_added,
                    summary.attachments_added, len(summary.quarantined)))
    book.fix_modes()
    return summary


@dataclass
class _Run:
    book: Casebook
    bundle: BundleReader
    keyring: Keyring
    progress: Progress | None
    summary: ImportSummary
    new_items: int = 0
    created_cases: list[str] = field(default_factory=list)
    _done: int = 0
    _total: int = 0

    def plan(self) -> None:
        """Count the bytes to read (items the casebook lacks) for the progress bar."""
        known = self._known_ids([i.id for _, i in self.bundle.iter_items()])
        for _, item in self.bundle.iter_items():
            if item.kind != ItemKind.REPLY and item.id not in known:
                self.new_items += 1
                self._total += self.bundle.size(item.envelope)
                self._total += sum(self.bundle.size(a) for a in item.attachments)
        self.known = known

    def _known_ids(self, ids: list[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            known.update(r[0] for r in self.book.db.execute(
                f"SELECT id FROM items WHERE id IN ({marks})", chunk))  # noqa: S608 - placeholders only  # nosec B608
        return known

    def advance(self, n: int) -> None:
        self._done += n
        if self.progress is not None and self._total:
            self.progress(min(self._done, self._total), self._total)

    def quarantine(self, report: BundleReport, item: BundleItem, part: str, exc: BaseException) -> str:
        entry = QuarantineEntry(report.id, item.id, item.seq, item.kind, part,
                                str(exc) or type(exc).__name__)
        self.summary.quarantined.append(entry)
        return entry.describe()

    def import_report(self, report: BundleReport, created_on: str) -> None:
        """Check every item of one report in manifest order (the binding checks need the items
        already imported too, when the bundle holds them); store the new ones that pass."""
        checker = CaseChecker(report)
        with self.book.transaction() as db:
            self._upsert_case(db, report, created_on)
            for item in report.items:
                if item.kind == ItemKind.REPLY:
                    continue
                new = item.id not in self.known
                if not new:
                    self.summary.items_skipped += 1
                    # Checked again (the envelope only: no attachment is read) so that the case's
                    # binding state is what decrypt would have at the next item.
                    with contextlib.suppress(ItemCheckError):
                        again = checker.open(self.keyring, self.bundle, item)
                        if item.kind == ItemKind.REPORT and again.envelope.answers:
                            # A casebook made before answers were kept gains them now.
                            answers.store(self.book.db, report.id, again.envelope.answers)
                    continue
                try:
                    opened = checker.open(self.keyring, self.bundle, item)
                except ItemCheckError as exc:
                    self.quarantine(report, item, exc.part, exc)
                    self.advance(self.bundle.size(item.envelope)
                                 + sum(self.bundle.size(a) for a in item.attachments))
                    continue
                self.advance(self.bundle.size(item.envelope))
                for first, last in opened.gaps:
                    what = f"item {first} missing" if first == last else f"items {first} to {last} missing"
                    self.summary.quarantined.append(QuarantineEntry(
                        report.id, "", first, ItemKind.MESSAGE.value, "", f"{what} (deleted on the server?)"))
                self._store_item(db, report, item, opened)
            if report.id in self.created_cases and self.book.db.execute(
                    "SELECT item_count FROM cases WHERE id = ?", (report.id,)).fetchone()[0] == 0:
                # Nothing of this report opened: like decrypt's folder, no case; the quarantine
                # list says why.
                self.book.db.execute("DELETE FROM cases WHERE id = ?", (report.id,))
                self.created_cases.remove(report.id)
                self.summary.cases_added -= 1

    def _upsert_case(self, db: object, report: BundleReport, created_on: str) -> None:
        book = self.book
        existing = book.case(report.id)
        server_replies = int(getattr(report, "replies", 0) or 0)
        closed = report.status == Status.CLOSED
        outcome = report.outcome if closed else None
        if existing is None:
            if all(i.id in self.known or i.kind == ItemKind.REPLY for i in report.items):
                return
            book.db.execute(
                "INSERT INTO cases (id, received_on, status, status_on, channel, manifest_key, "
                "server_replies, ack_due, feedback_due, last_activity, outcome, closed_on) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (report.id, report.received_on, report.status, created_on, report.channel,
                 report.source_public_key, server_replies, deadlines.ack_due(report.received_on),
                 deadlines.feedback_due(report.received_on, None), report.received_on, outcome,
                 created_on if closed else None))
            self.created_cases.append(report.id)
            self.summary.cases_added += 1
            return
        if created_on >= existing["status_on"]:
            # The status and the outcome change on the server: a later bundle's are the case's.
            # The closing day is the first bundle's that showed the case closed (kept while it
            # stays closed, cleared when it is reopened).
            book.db.execute(
                "UPDATE cases SET status = ?, status_on = ?, manifest_key = ?, outcome = ?, "
                "closed_on = CASE WHEN ? THEN coalesce(closed_on, ?) END WHERE id = ?",
                (report.status, created_on, report.source_public_key, outcome, closed, created_on,
                 report.id))
            if (existing["status"], existing["outcome"]) != (report.status, outcome):
                self.summary.cases_updated += 1
        if server_replies > existing["server_replies"]:
            book.db.execute("UPDATE cases SET server_replies = ? WHERE id = ?",
                            (server_replies, report.id))
        book.db.execute("UPDATE replies SET on_server = 1 WHERE case_id = ? AND seq <= ? "
                        "AND on_server = 0", (report.id, max(server_replies, existing["server_replies"])))

    def _store_item(self, db: object, report: BundleReport, item: BundleItem, opened: Opened) -> None:
        book = self.book
        envelope = opened.envelope
        problems: list[str] = []
        if item.kind == ItemKind.REPORT:
            valid = is_category_code(envelope.category)
            if not valid:
                problems.append(self.quarantine(report, item, "category",
                                                ItemCheckError("category", "invalid category")))
            binding = envelope.binding
            book.db.execute(
                "UPDATE cases SET category = ?, category_valid = ?, source_key = ?, case_tag = ?, "
                "report_version = ? WHERE id = ?",
                (envelope.category[:200], int(valid), binding.source_public_key if binding else None,
                 binding.case_tag if binding else None, envelope.version, report.id))
            answers.store(book.db, report.id, envelope.answers)
        rows = []
        for index, (ref, member) in enumerate(zip(envelope.attachments, item.attachments, strict=True)):
            size = self.bundle.size(member)
            try:
                digest = self._attachment(member, ref.key, ref.size, size)
                problem = ""
            except (CryptoError, BundleError) as exc:
                digest = None
                problem = self.quarantine(report, item, f"attachment {index} \"{inert_line(ref.name, 80)}\"",
                                          exc)
                problems.append(problem)
            rows.append((item.id, index, ref.name, ref.type[:200], ref.size, digest, problem))
        names = " ".join(ref.name for ref in envelope.attachments)
        cur = book.db.execute(
            "INSERT INTO items (id, case_id, seq, kind, created_on, channel, version, body, names, "
            "problems, binding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item.id, report.id, item.seq, item.kind, item.created_on, item.channel or report.channel,
             envelope.version, envelope.body, names, "\n".join(problems), opened.binding))
        book.db.execute("INSERT INTO items_fts (rowid, body, names) VALUES (?, ?, ?)",
                        (cur.lastrowid, envelope.body, names))
        book.db.executemany(
            "INSERT INTO attachments (item_id, idx, name, type, size, sha256, problem) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        book.db.execute(
            "UPDATE cases SET item_count = item_count + 1, unread = unread + 1, "
            "last_activity = max(last_activity, ?) WHERE id = ?", (item.created_on, report.id))
        self.summary.items_added += 1
        self.summary.attachments_added += sum(1 for r in rows if r[5])

    def _attachment(self, member: str, key: bytes, expected: int, size: int) -> str:
        """Decrypt one attachment into ``tmp/`` hashing it, then store it by content; return
        its SHA-256. The same checks as decrypt (whistle.workstation.checks.decrypt_member): the
        stream authenticates and has the size the envelope says."""
        tmp, sha = decrypt_member(self.bundle, member, key, expected=expected, size=size,
                                  folder=self.book.tmp_dir, advance=self.advance)
        try:
            if self.book.keep_blob(tmp, sha):
                self.summary.blobs_added += 1
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return sha
