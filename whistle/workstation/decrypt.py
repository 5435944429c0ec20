# SPDX-License-Identifier: AGPL-3.0-or-later
"""Offline workstation: decrypt a bundle into one folder per report.

Imports no Flask and needs no database. Nothing half-written: everything is decrypted into a
staging folder inside ``out`` and moved into place at the end.

Each item is opened on its own. One that does not open or does not check out (junk posted to the
server, an envelope sealed to another key, a truncated or swapped attachment, an invalid
category) is *quarantined*: listed by report, item and reason, never written as it came, while
every other item is written. With ``strict`` any quarantined part refuses the whole bundle and
nothing is written; with ``strict=False`` a bundle of which nothing at all could be written is
refused the same way. Quarantine is an outcome the caller is told about
(:attr:`DecryptSummary.quarantined`), never a silent skip.

After a key rotation a bundle may hold envelopes sealed to the old unit key and to the new one:
:func:`decrypt_bundle` takes a keyring and opens each envelope with whichever key opens it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from whistle.core.bundle import BundleError, BundleItem, BundleReader, BundleReport
from whistle.core.crypto import (
    CryptoError,
    UnitSecretKey,
)
from whistle.core.enums import ItemKind, Language, category_label, channel_text
from whistle.core.errors import WhistleError
from whistle.core.files import atomic_write, safe_join
from whistle.workstation.checks import (
    CATEGORY_CODE,
    BindingError,
    CaseCheck,
    ItemRefusedError,
    Keyring,
    decrypt_member,
    open_item,
)
from whistle.workstation.names import NameSlots, safe_filename
from whistle.workstation.render import (
    SavedAttachment,
    binding_text,
    inert_line,
    render_item,
    render_quarantine,
    words,
)

__all__ = ["BundleDecryptError", "DecryptSummary", "Quarantined", "decrypt_bundle", "safe_filename"]

QUARANTINE_FILE = "QUARANTINE.txt"
Progress = Callable[[int, int], None]


class BundleDecryptError(WhistleError):
    """Decrypting a bundle failed as a whole; nothing was written to the output folder."""


@dataclass(frozen=True)
class Quarantined:
    """One part of a bundle not written as it came: which report, item and part, and why."""

    report_id: str
    item_id: str
    seq: int
    kind: str
    part: str
    reason: str

    def describe(self) -> str:
        """One inert line for a person: the terminal, QUARANTINE.txt, an error message."""
        if not self.item_id:  # an item the bundle lacks (a gap in the case's numbers)
            return inert_line(f"report {self.report_id}: {self.reason}")
        return inert_line(f"report {self.report_id} item {self.item_id} (seq {self.seq}, "
                          f"{self.kind}) {self.part}: {self.reason}")


@dataclass(frozen=True)
class DecryptSummary:
    """What a decryption produced."""

    report_dirs: list[Path]
    items: int
    attachments: int
    # Envelopes each key of the keyring opened, in the order the keys were given.
    opened_by: tuple[int, ...] = ()
    # Parts not written as they came (empty unless ``strict=False``), and where they are listed.
    quarantined: tuple[Quarantined, ...] = ()
    quarantine_file: Path | None = None


def decrypt_bundle(
    bundle_path: Path,
    secret_key: UnitSecretKey | Sequence[UnitSecretKey],
    out_dir: Path,
    *,
    categories: dict[str, str] | None = None,
    progress: Progress | None = None,
    strict: bool = True,
    lang: Language = Language.EN,
) -> DecryptSummary:
    """Decrypt every report and message of a bundle into ``out_dir/<report id>/``.

    ``secret_key`` is one unit key or a keyring (say, the old and the new key after a rotation):
    each envelope is opened with whichever key opens it. With ``strict`` (the default) any part
    that fails refuses the bundle; otherwise failed parts are quarantined: listed in the summary
    and in ``out_dir/QUARANTINE.txt``, the rest written. Raises :class:`BundleDecryptError`
    (naming the first failed part, or wrapping the cause) and leaves ``out_dir`` as it was when
    the bundle is unreadable, when ``strict`` and anything failed, or when nothing could be written.

    ``report.txt`` and the message files are written in ``lang`` (the command's ``--lang``,
    Spanish by default there); a category is shown by its label from ``categories`` (code ->
    label, already in ``lang``), else from the default table (core.enums), else as its code.
    Every file is written 0600 and every folder 0700: the plaintext is for the unit only.
    """
    keys = [secret_key] if isinstance(secret_key, UnitSecretKey) else list(secret_key)
    if not keys:
        raise BundleDecryptError("no key given")
    opened = [0] * len(keys)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".whistle-staging-", dir=out_dir))
    try:
        with BundleReader(bundle_path) as bundle:
            run = _Run(bundle, Keyring(keys, opened), staging, out_dir, categories or {}, progress,
                       lang)
            for report in bundle.reports:
                run.decrypt_report(report)
            created_on = bundle.meta["created_on"]
        if run.quarantined and (strict or run.items == 0):
            first = run.quarantined[0].describe()
            more = len(run.quarantined) - 1
            prefix = "" if strict else "not one item could be written; first: "
            raise BundleDecryptError(prefix + first + (f" (and {more} more)" if more else ""))
        # A report of which nothing opened gets no folder: its items are in QUARANTINE.txt.
        dirs = [_move_into_place(staging / r.id, out_dir / r.id) for r in bundle.reports
                if (staging / r.id).exists() and any((staging / r.id).iterdir())]
        qfile = None
        if run.quarantined:
            qfile = _append_quarantine(out_dir, bundle_path.name, created_on, run.quarantined)
        return DecryptSummary(report_dirs=dirs, items=run.items, attachments=run.attachments,
                              opened_by=tuple(opened), quarantined=tuple(run.quarantined),
                              quarantine_file=qfile)
    except BundleDecryptError:
        raise
    except (CryptoError, OSError, ValueError) as exc:
        raise BundleDecryptError(inert_line(str(exc))) from exc
    except Exception as exc:  # noqa: BLE001 - BundleError and anything else: one clear error
        raise BundleDecryptError(inert_line(str(exc)) or type(exc).__name__) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# What one part of an item can fail with and still leave the rest of the bundle readable.
# Anything else (OSError writing the output, a bug) stops the whole run.
_PART_ERRORS = (CryptoError, BundleError, ItemRefusedError)


@dataclass
class _Folder:
    """A report's staging folder and the names taken in it and in what ``out`` already holds."""

    path: Path
    names: NameSlots
    attachment_names: NameSlots


@dataclass
class _Run:
    """One decryption: the bundle, where it goes, and what came out so far."""

    bundle: BundleReader
    keys: Keyring
    staging: Path
    out_dir: Path
    categories: dict[str, str]
    progress: Progress | None
    lang: Language
    items: int = 0
    attachments: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)
    _done: int = 0
    _total: int = -1

    def advance(self, n: int) -> None:
        """Count ``n`` bytes of the bundle as handled, decrypted or quarantined."""
        if self._total < 0:
            self._total = sum(self.bundle.size(i.envelope) + sum(self.bundle.size(a) for a in i.attachments)
                              for _, i in self.bundle.iter_items())
        self._done += n
        if self.progress is not None:
            self.progress(self._done, self._total)

    def quarantine(self, report: BundleReport, item: BundleItem, part: str, exc: Exception) -> Quarantined:
        entry = Quarantined(report.id, item.id, item.seq, item.kind, part, str(exc) or type(exc).__name__)
        self.quarantined.append(entry)
        return entry

    def decrypt_report(self, report: BundleReport) -> None:
        """Decrypt the report's items one by one into its staging folder (made when needed),
        checking each one's binding to the case (:class:`whistle.workstation.checks.CaseCheck`)."""
        folder: _Folder | None = None
        case = CaseCheck.for_report(report)
        for item in report.items:
            if item.kind == ItemKind.REPLY:
                continue  # sealed to the source, not to us
            if folder is None:
                folder = self._folder(report)
            self._decrypt_item(report, item, folder, case)

    def missing(self, report: BundleReport, first: int, last: int) -> None:
        """List items the case's numbers say existed between two of this bundle's, but it lacks."""
        what = (f"item {first} missing" if first == last
                else f"items {first} to {last} missing")
        self.quarantined.append(Quarantined(report.id, "", first, ItemKind.MESSAGE.value, "",
                                            f"{what} (deleted on the server?)"))

    def _folder(self, report: BundleReport) -> _Folder:
        path = safe_join(self.staging, report.id)
        path.mkdir(mode=0o700)
        # Names are chosen against what an earlier bundle left in out/<id>/ too, once per folder,
        # so that moving into place never renames a file report.txt already lists.
        dest = self.out_dir / report.id
        return _Folder(path, NameSlots(_listdir(dest)), NameSlots(_listdir(dest / "attachments")))

    def _decrypt_item(self, report: BundleReport, item: BundleItem, folder: _Folder,
                      case: CaseCheck) -> None:
        member_sizes = [self.bundle.size(m) for m in item.attachments]
        try:
            sealed = self.bundle.read_small(item.envelope)
            self.advance(len(sealed))
            envelope, binding, gaps = open_item(self.keys, sealed, item, case)
        except _PART_ERRORS as exc:
            self.quarantine(report, item, "binding" if isinstance(exc, BindingError) else "envelope",
                            exc)
            self.advance(sum(member_sizes))  # attachments of an envelope not written
            return
        for first, last in gaps:
            self.missing(report, first, last)
        notes: list[str] = []
        category: str | None = None
        if item.kind == ItemKind.REPORT:
            if CATEGORY_CODE.match(envelope.category):
                category = (self.categories.get(envelope.category)
                            or category_label(envelope.category, self.lang))
            else:
                category = words(self.lang)["invalid_category"].format(
                    code=inert_line(envelope.category, 64))
                notes.append(self.quarantine(report, item, "category",
                                             ItemRefusedError("invalid category")).describe())
        saved: list[SavedAttachment] = []
        for index, (ref, member, size) in enumerate(zip(envelope.attachments, item.attachments,
                                                        member_sizes, strict=True)):
            try:
                saved.append(SavedAttachment(self._attachment(folder, ref.name, member, ref.key,
                                                              ref.size, size), ref.name))
            except _PART_ERRORS as exc:
                part = f"attachment {index} \"{inert_line(ref.name, 80)}\""
                notes.append(self.quarantine(report, item, part, exc).describe())
        text = render_item(report_id=report.id, kind=item.kind, seq=item.seq, day=item.created_on,
                           channel=channel_text(report.channel, self.lang), category=category,
                           body=envelope.body, attachments=saved, quarantined=notes, lang=self.lang,
                           binding=binding_text(binding, envelope.binding, self.lang))
        name = "report.txt" if item.kind == ItemKind.REPORT else f"message-{item.seq:03d}.txt"
        atomic_write(folder.path / folder.names.claim(name), text.encode("utf-8"))
        self.items += 1
        self.attachments += len(saved)

    def _attachment(self, folder: _Folder, sent_as: str, member: str, key: bytes,
                    expected: int, size: int) -> str:
        """Decrypt one attachment into a temporary file, then give it its name; return the name."""
        att_dir = folder.path / "attachments"
        att_dir.mkdir(exist_ok=True, mode=0o700)
        tmp, _digest = decrypt_member(self.bundle, member, key, expected=expected, size=size,
                                      folder=att_dir, advance=self.advance)
        name = folder.attachment_names.claim(safe_filename(sent_as))
        try:
            os.replace(tmp, att_dir / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return name


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _move_into_place(src: Path, dst: Path) -> Path:
    """Move a decrypted report folder into ``out``, merging into one decrypted earlier.

    Names in ``src`` were chosen against ``dst``'s (:meth:`_Run._folder`), so a merge renames
    nothing; a file that appeared in between is still never overwritten.
    """
    if not dst.exists():
        os.replace(src, dst)
        return dst
    for path in sorted(src.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(src)
        target_dir = dst / rel.parent
        target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = target_dir / rel.name
        if target.exists():
            target = target_dir / NameSlots(_listdir(target_dir)).claim(rel.name)
        os.replace(path, target)
    return dst


def _append_quarantine(out_dir: Path, bundle_name: str, created_on: str,
                       entries: list[Quarantined]) -> Path:
    """Add this run's section to ``out/QUARANTINE.txt`` (earlier runs' sections are kept)."""
    path = out_dir / QUARANTINE_FILE
    before = path.read_text(encoding="utf-8") + "\n" if path.exists() else ""
    section = render_quarantine(bundle_name, created_on, [e.describe() for e in entries])
    atomic_write(path, (before + section).encode("utf-8"))
    return path
