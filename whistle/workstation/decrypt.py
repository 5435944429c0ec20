# SPDX-License-Identifier: AGPL-3.0-or-later
"""Offline workstation: decrypt a bundle into one folder per report.

Imports no Flask and needs no database. Nothing half-written: everything is decrypted into a
staging folder inside ``out`` and moved into place only when the whole bundle decrypted cleanly.

After a key rotation a bundle may hold envelopes sealed to the old unit key and to the new one:
:func:`decrypt_bundle` takes a keyring and opens each envelope with whichever key opens it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from whistle.core.bundle import BundleReader, BundleReport
from whistle.core.crypto import (
    CryptoError,
    DecryptionError,
    Envelope,
    UnitSecretKey,
    decrypt_stream,
    open_envelope,
)
from whistle.core.enums import ItemKind, channel_text
from whistle.core.errors import WhistleError
from whistle.core.files import atomic_write, safe_join

_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_MAX_NAME = 120

Progress = Callable[[int, int], None]


class BundleDecryptError(WhistleError):
    """Decrypting a bundle failed; nothing was written to the output folder."""


@dataclass(frozen=True)
class DecryptSummary:
    """What a decryption produced."""

    report_dirs: list[Path]
    items: int
    attachments: int
    # Envelopes each key of the keyring opened, in the order the keys were given.
    opened_by: tuple[int, ...] = ()


def safe_filename(name: str, fallback: str = "attachment") -> str:
    """A file name safe on any OS: no path parts, no control characters, no hidden or reserved
    names, no trailing dots or spaces, at most 120 characters, extension kept."""
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(
        "_" if (unicodedata.category(c)[0] == "C" or c in '<>:"|?*') else c for c in name
    )
    # Leading dots hide a file; trailing dots and spaces are dropped or refused by Windows.
    cleaned = re.sub(r"^[\s.]+|[\s.]+$", "", cleaned) or fallback
    stem, dot, ext = cleaned.rpartition(".")
    if not dot:
        stem, ext = cleaned, ""
    # Windows treats NUL.tar.gz like NUL: check what comes before the first dot.
    if stem.split(".", 1)[0].strip().lower() in _RESERVED:
        stem = f"_{stem}"
    ext = ext[:16].rstrip()
    room = _MAX_NAME - (len(ext) + 1 if ext else 0)
    stem = stem[:room].rstrip(" .") or fallback
    return f"{stem}.{ext}" if ext else stem


def _unique(directory: Path, name: str) -> Path:
    candidate = safe_join(directory, name)
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    n = 2
    while candidate.exists():
        candidate = safe_join(directory, f"{stem} ({n}){'.' + ext if ext else ''}")
        n += 1
    return candidate


def decrypt_bundle(
    bundle_path: Path,
    secret_key: UnitSecretKey | Sequence[UnitSecretKey],
    out_dir: Path,
    *,
    categories: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> DecryptSummary:
    """Decrypt every report and message of a bundle into ``out_dir/<report id>/``.

    ``secret_key`` is one unit key or a keyring (say, the old and the new key after a rotation):
    each envelope is opened with whichever key opens it. Raises :class:`BundleDecryptError` (wrapping
    the cause) and leaves ``out_dir`` as it was.
    """
    keys = [secret_key] if isinstance(secret_key, UnitSecretKey) else list(secret_key)
    if not keys:
        raise BundleDecryptError("no key given")
    opened = [0] * len(keys)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".whistle-staging-", dir=out_dir))
    try:
        with BundleReader(bundle_path) as bundle:
            total = sum(bundle.size(i.envelope) + sum(bundle.size(a) for a in i.attachments)
                        for _, i in bundle.iter_items())
            done = [0]

            def advance(n: int) -> None:
                done[0] += n
                if progress is not None:
                    progress(done[0], total)

            items = attachments = 0
            for report in bundle.reports:
                n_items, n_atts = _decrypt_report(bundle, report, _Keyring(keys, opened), staging,
                                                  categories or {}, advance)
                items += n_items
                attachments += n_atts
        dirs = [_move_into_place(staging / r.id, out_dir / r.id) for r in bundle.reports
                if (staging / r.id).exists()]
        return DecryptSummary(report_dirs=dirs, items=items, attachments=attachments,
                              opened_by=tuple(opened))
    except BundleDecryptError:
        raise
    except (CryptoError, OSError, ValueError) as exc:
        raise BundleDecryptError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - BundleError and anything else: one clear error
        raise BundleDecryptError(str(exc) or type(exc).__name__) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class _Keyring:
    """The unit keys to try, and how many envelopes each one opened."""

    keys: list[UnitSecretKey]
    opened: list[int]

    def open(self, sealed: bytes) -> Envelope:
        """Open with the first key that opens it; only a box that opens with none is an error."""
        failure: DecryptionError | None = None
        for index, key in enumerate(self.keys):
            try:
                envelope = open_envelope(sealed, key)
            except DecryptionError as exc:
                failure = exc
                continue
            self.opened[index] += 1
            return envelope
        if len(self.keys) == 1 and failure is not None:
            raise failure  # the one-key message, unchanged
        raise DecryptionError(f"envelope does not open with any of the {len(self.keys)} keys "
                              "(wrong keys or altered)")


def _decrypt_report(
    bundle: BundleReader,
    report: BundleReport,
    keys: _Keyring,
    staging: Path,
    categories: dict[str, str],
    advance: Callable[[int], None],
) -> tuple[int, int]:
    folder = safe_join(staging, report.id)
    folder.mkdir(mode=0o700)
    n_atts = 0
    n_items = 0
    for item in report.items:
        if item.kind == ItemKind.REPLY:
            continue  # sealed to the source, not to us
        sealed = bundle.read_small(item.envelope)
        advance(len(sealed))
        envelope = keys.open(sealed)
        if envelope.kind != item.kind:
            raise BundleDecryptError(
                f"item {item.id}: envelope says {envelope.kind!r}, manifest {item.kind!r}")
        if len(envelope.attachments) != len(item.attachments):
            raise BundleDecryptError(f"item {item.id}: envelope lists {len(envelope.attachments)} "
                               f"attachments, bundle holds {len(item.attachments)}")
        saved: list[str] = []
        att_dir = folder / "attachments"
        for ref, member in zip(envelope.attachments, item.attachments, strict=True):
            att_dir.mkdir(exist_ok=True, mode=0o700)
            target = _unique(att_dir, safe_filename(ref.name))
            with bundle.open(member) as src, target.open("xb") as dst:
                decrypt_stream(src, dst, ref.key, expected_size=ref.size, progress=advance)
            saved.append(target.name)
            n_atts += 1
        name = "report.txt" if item.kind == ItemKind.REPORT else f"message-{item.seq:03d}.txt"
        text = _render(report, item.kind, item.seq, item.created_on, envelope.category,
                       categories.get(envelope.category, ""), envelope.body, saved)
        atomic_write(_unique(folder, name), text.encode("utf-8"))
        n_items += 1
    return n_items, n_atts


def _render(report: BundleReport, kind: str, seq: int, day: str, category: str, label: str,
            body: str, saved: list[str]) -> str:
    lines = [f"Report {report.id}" if kind == ItemKind.REPORT else f"Message {seq} on report {report.id}",
             f"Date: {day}"]
    if kind == ItemKind.REPORT:
        lines.append(f"Category: {category}" + (f" ({label})" if label else ""))
        # The channel's label and where it was encrypted, in English like the rest of the file,
        # from the same table the investigators' pages translate (core.enums).
        lines.append(f"Channel: {channel_text(report.channel)}")
    if saved:
        lines.append("Attachments: " + ", ".join(f"attachments/{n}" for n in saved))
    return "\n".join(lines) + "\n\n" + body + ("\n" if not body.endswith("\n") else "")


def _move_into_place(src: Path, dst: Path) -> Path:
    """Move a decrypted report folder into ``out``, merging into one decrypted earlier."""
    if not dst.exists():
        os.replace(src, dst)
        return dst
    for path in sorted(src.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(src)
        target_dir = dst / rel.parent
        target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(path, _unique(target_dir, rel.name))
    return dst
