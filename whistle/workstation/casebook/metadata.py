# SPDX-License-Identifier: AGPL-3.0-or-later
"""Identifying metadata in attachments: found (to warn on the case page) and removed (cleaned
copies in a case export, made with mat2, the metadata anonymisation toolkit Debian packages).

The finder reads the few places where phones and office suites put what identifies a person — a
photo's EXIF (GPS position, camera make and model, owner, serial number), a PNG's text chunks, a
PDF's document information (author, creator, producer), an office document's core properties
(creator, last modified by) — with the standard library only, a bounded number of bytes, and no
parser that could run what it reads. It warns; it does not promise a file is clean: only mat2's
copy is offered as cleaned, and the originals stay untouched as evidence.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess  # nosec B404 - runs mat2 only, a fixed tool on our own file
import zipfile
from dataclasses import dataclass
from pathlib import Path

MAX_SCAN = 4 * 1024 * 1024
# EXIF tags worth a warning (TIFF tag numbers): who, what device, where.
_EXIF_TAGS = {0x010F: "camera make", 0x0110: "camera model", 0x013B: "artist",
              0x8298: "copyright", 0xA430: "camera owner", 0xA431: "camera serial number",
              0x9C9D: "author (Windows)"}
_GPS_IFD = 0x8825
_EXIF_IFD = 0x8769
_PDF_KEYS = (b"/Author", b"/Creator", b"/Producer")
_OOXML_CORE = "docProps/core.xml"
_ODF_META = "meta.xml"
_XML_FIELDS = re.compile(rb"<(dc:creator|cp:lastModifiedBy|meta:initial-creator|dc:title|"
                         rb"meta:generator)[^>]*>([^<]{1,200})<")


@dataclass(frozen=True)
class Finding:
    """One piece of identifying metadata: what it is and (shortened) what it says."""

    field: str
    value: str


def find_metadata(path: Path, declared_type: str = "", name: str = "") -> list[Finding]:
    """What identifying metadata the file at ``path`` carries, as far as this finder knows; an
    unreadable or unknown file gives an empty list."""
    try:
        with path.open("rb") as fh:
            head = fh.read(MAX_SCAN)
    except OSError:
        return []
    try:
        if head.startswith(b"\xff\xd8"):
            return _jpeg(head)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(head)
        if head.startswith(b"%PDF-"):
            return _pdf(path, head)
        if head.startswith(b"PK\x03\x04"):
            return _office(path)
    except (struct.error, ValueError, IndexError, zipfile.BadZipFile, OSError, KeyError):
        return [Finding("metadata", "could not be read; treat the file as carrying some")]
    return []


def _short(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text[:120]


def _jpeg(data: bytes) -> list[Finding]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            return _tiff(data[pos + 10:pos + 2 + length])
        if marker in (0xDA, 0xD9):  # start of scan: no metadata after this point
            break
        pos += 2 + length
    return []


def _tiff(tiff: bytes) -> list[Finding]:
    if tiff[:2] not in (b"II", b"MM"):
        return []
    order = "<" if tiff[:2] == b"II" else ">"
    found: list[Finding] = []

    def ifd(offset: int, depth: int) -> None:
        if depth > 3 or offset <= 0 or offset + 2 > len(tiff):
            return
        count = struct.unpack(order + "H", tiff[offset:offset + 2])[0]
        for n in range(min(count, 512)):
            entry = tiff[offset + 2 + 12 * n: offset + 14 + 12 * n]
            if len(entry) < 12:
                return
            tag, kind, num = struct.unpack(order + "HHI", entry[:8])
            value_off = struct.unpack(order + "I", entry[8:12])[0]
            if tag == _GPS_IFD:
                found.append(Finding("GPS position", "present"))
            elif tag == _EXIF_IFD:
                ifd(value_off, depth + 1)
            elif tag in _EXIF_TAGS:
                raw = entry[8:8 + num] if num <= 4 else tiff[value_off:value_off + min(num, 200)]
                found.append(Finding(_EXIF_TAGS[tag], _short(raw.rstrip(b"\x00"))
                                     if kind == 2 else "present"))

    ifd(struct.unpack(order + "I", tiff[4:8])[0], 0)
    return found


def _png(data: bytes) -> list[Finding]:
    found: list[Finding] = []
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind in (b"tEXt", b"iTXt", b"zTXt"):
            key = data[pos + 8:pos + 8 + min(length, 80)].split(b"\x00", 1)[0]
            found.append(Finding(f"text chunk {_short(key)}", "present"))
        elif kind == b"eXIf":
            found.extend(_tiff(data[pos + 8:pos + 8 + length]) or [Finding("EXIF", "present")])
        elif kind == b"IEND":
            break
        pos += 12 + length
    return found


def _pdf(path: Path, head: bytes) -> list[Finding]:
    size = path.stat().st_size
    tail = b""
    if size > len(head):
        with path.open("rb") as fh:
            fh.seek(max(0, size - MAX_SCAN))
            tail = fh.read(MAX_SCAN)
    found: list[Finding] = []
    for key in _PDF_KEYS:
        match = re.search(re.escape(key) + rb"\s*\(([^)]{0,200})\)", head + tail)
        if match:
            found.append(Finding(key.decode()[1:].lower(), _short(match.group(1))))
    if b"<x:xmpmeta" in head or b"<x:xmpmeta" in tail:
        found.append(Finding("XMP metadata", "present"))
    return found


def _office(path: Path) -> list[Finding]:
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        member = _OOXML_CORE if _OOXML_CORE in names else _ODF_META if _ODF_META in names else None
        if member is None:
            return []
        info = archive.getinfo(member)
        if info.file_size > MAX_SCAN:
            return [Finding("document properties", "present (large)")]
        xml = archive.read(member)
    return [Finding(m.group(1).decode().split(":")[1], _short(m.group(2)))
            for m in _XML_FIELDS.finditer(xml)]


# --- cleaning with mat2 ------------------------------------------------------------------------


def mat2_path() -> str | None:
    """The mat2 executable, or None when it is not installed (``apt install mat2``)."""
    return shutil.which("mat2")


class CleaningError(Exception):
    """mat2 could not make a cleaned copy of a file (unsupported format, damaged file)."""


def clean_copy(original: Path, target: Path, scratch: Path) -> None:
    """Make ``target``, a copy of ``original`` with its metadata removed by mat2; the original is
    not touched. mat2 works on a copy in ``scratch`` (inside the casebook or export folder), with
    its temporary folder there too, so no plaintext is written anywhere else."""
    tool = mat2_path()
    if tool is None:
        raise CleaningError("mat2 is not installed")
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = scratch / ("in" + original.suffix.lower()[:16])
    shutil.copyfile(original, work)
    os.chmod(work, 0o600)
    cleaned = work.with_name(work.stem + ".cleaned" + work.suffix)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(scratch),
           "HOME": str(scratch), "LANG": "C.UTF-8"}
    try:
        result = subprocess.run([tool, str(work)],  # noqa: S603 # nosec B603 - fixed tool, our own path
                                cwd=scratch, env=env, capture_output=True, text=True, timeout=300,
                                check=False)
        if result.returncode != 0 or not cleaned.exists():
            reason = (result.stderr or result.stdout).strip().splitlines()
            raise CleaningError(reason[-1][:200] if reason else "mat2 failed")
        os.chmod(cleaned, 0o600)
        os.replace(cleaned, target)
    finally:
        for leftover in (work, cleaned):
            if leftover.exists():
                leftover.unlink()
