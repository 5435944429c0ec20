# SPDX-License-Identifier: AGPL-3.0-or-later
"""``whistle casebook export-case``: a case for the legal file, originals untouched with their
SHA-256 list, identifying metadata found and warned about, cleaned copies made with mat2 beside
the originals, and a plain statement when mat2 is missing (never a silent skip)."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from support import (
    CASEBOOK_PORT,
    Workstation,
    casebook_bundle,
    casebook_client,
    post_form,
)

from whistle import cli
from whistle.workstation.casebook import metadata
from whistle.workstation.casebook.export import export_case
from whistle.workstation.casebook.importer import import_bundle
from whistle.workstation.casebook.store import Casebook, CasebookError

BASE = f"http://127.0.0.1:{CASEBOOK_PORT}"
# An 8x8 JPEG (GdkPixbuf, quality 50) without metadata.
TINY_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1R"
    "V19iZ2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2NjY2NjY2P/wAARCAAIAAgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAA"
    "AgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6"
    "Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXG"
    "x8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREA"
    "AgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5"
    "OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPE"
    "xcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwChRRRXuHnn/9k=")


def exif_jpeg(jpeg: bytes = TINY_JPEG, make: bytes = b"CanaryPhone") -> bytes:
    """``jpeg`` with an EXIF segment: camera make and model and a GPS block (latitude south)."""
    make, model = make + b"\x00", b"ModelX1\x00"
    ifd0_size = 2 + 12 * 3 + 4
    make_off = 8 + ifd0_size
    model_off = make_off + len(make)
    gps_off = model_off + len(model)
    ifd0 = (struct.pack("<H", 3) + struct.pack("<HHII", 0x010F, 2, len(make), make_off)
            + struct.pack("<HHII", 0x0110, 2, len(model), model_off)
            + struct.pack("<HHII", 0x8825, 4, 1, gps_off) + struct.pack("<I", 0))
    gps = struct.pack("<H", 1) + struct.pack("<HHI", 1, 2, 2) + b"S\x00\x00\x00" + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd0 + make + model + gps
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def office_doc(author: str) -> bytes:
    """A minimal .docx-shaped zip whose core properties name an author."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as doc:
        doc.writestr("[Content_Types].xml", "<Types/>")
        doc.writestr("docProps/core.xml", f"<cp:coreProperties><dc:creator>{author}</dc:creator>"
                                          "<cp:lastModifiedBy>jefe</cp:lastModifiedBy></cp:coreProperties>")
    return out.getvalue()


@pytest.fixture
def exported_case(app: Flask, client: FlaskClient, workstation: Workstation,
                  tmp_path: Path) -> tuple[Path, str]:
    post_form(client, "Fotos de la bodega vacía.", [
        ("bodega.jpg", "image/jpeg", exif_jpeg()),
        ("informe.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
         office_doc("María Canary")),
        ("notas.txt", "text/plain", b"sin metadatos"),
        ("notas.txt", "text/plain", b"otro archivo con el mismo nombre"),
    ])
    root = tmp_path / "cb"
    with Casebook.open(root) as book:
        import_bundle(book, casebook_bundle(app, tmp_path / "b.zip"), [workstation.secret_key])
        case_id = str(book.db.execute("SELECT id FROM cases").fetchone()[0])
        book.add_note(case_id, "Llamar a la farmacia.")
        book.set_tags(case_id, "bodega, fotos")
    return root, case_id


def test_casebook_metadata_finder(tmp_path: Path) -> None:
    cases = {"photo.jpg": exif_jpeg(), "plain.jpg": TINY_JPEG, "doc.docx": office_doc("Ana"),
             "file.pdf": b"%PDF-1.4\n1 0 obj << /Author (Juan Canary) /Producer (Word) >>\n%%EOF",
             "junk.bin": b"\x00" * 100, "broken.jpg": b"\xff\xd8\xff\xe1\xff\xff Exif"}
    found = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        found[name] = {(f.field, f.value) for f in metadata.find_metadata(tmp_path / name)}
    assert found["photo.jpg"] == {("camera make", "CanaryPhone"), ("camera model", "ModelX1"),
                                  ("GPS position", "present")}
    assert found["plain.jpg"] == set() and found["junk.bin"] == set()
    assert ("creator", "Ana") in found["doc.docx"] and ("lastModifiedBy", "jefe") in found["doc.docx"]
    assert ("author", "Juan Canary") in found["file.pdf"]


def test_casebook_export_case_originals_sums_metadata_cleaned(
    exported_case: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    if metadata.mat2_path() is None:
        pytest.skip("mat2 is not installed (apt install mat2)")
    root, case_id = exported_case
    out = tmp_path / "legal"
    assert cli.main(["casebook", "export-case", case_id[:8], "--out", str(out), "--casebook",
                     str(root), "--lang", "en"]) == 0
    printed = capsys.readouterr().out
    folder = out / f"case-{case_id}"
    assert f"case exported to {folder}" in printed and "identifying metadata" in printed
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert "attachments/bodega.jpg" in names and "attachments/notas (2).txt" in names
    assert {"report.txt", "case.txt", "notes.txt", "METADATA.txt", "SHA256SUMS"} <= set(names)
    # The originals, byte for byte, and the list that proves it.
    assert (folder / "attachments" / "bodega.jpg").read_bytes() == exif_jpeg()
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "attachments/bodega.jpg: OK" in check.stdout
    sums = (folder / "SHA256SUMS").read_text()
    assert hashlib.sha256(exif_jpeg()).hexdigest() + "  attachments/bodega.jpg" in sums
    meta = (folder / "METADATA.txt").read_text(encoding="utf-8")
    assert "GPS position" in meta and "CanaryPhone" in meta and "María Canary" in meta
    # Cleaned copies beside the originals: the photo's metadata is gone.
    cleaned = folder / "cleaned" / "bodega.jpg"
    assert cleaned.exists() and b"CanaryPhone" not in cleaned.read_bytes()
    assert metadata.find_metadata(cleaned) == []
    assert "Cleaned copies made with mat2:" in meta
    report = (folder / "report.txt").read_text(encoding="utf-8")
    assert "Fotos de la bodega vacía." in report and "Binding:" in report
    assert "Llamar a la farmacia." in (folder / "notes.txt").read_text(encoding="utf-8")
    assert "bodega, fotos" in (folder / "case.txt").read_text(encoding="utf-8")
    assert all(p.stat().st_mode & 0o077 == 0 for p in [folder, *folder.rglob("*")])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left
    # The same case again into the same folder: refused, nothing overwritten.
    with Casebook.open(root) as book, pytest.raises(CasebookError, match="exists already"):
        export_case(book, case_id, out)


def test_casebook_export_says_when_mat2_is_missing(
    exported_case: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, case_id = exported_case
    monkeypatch.setattr(metadata, "mat2_path", lambda: None)
    assert cli.main(["casebook", "export-case", case_id, "--out", str(tmp_path / "o"),
                     "--casebook", str(root)]) == 0
    assert "mat2 is not installed" in capsys.readouterr().err
    folder = tmp_path / "o" / f"case-{case_id}"
    assert not (folder / "cleaned").exists()
    assert "NO CLEANED COPIES: mat2 is not installed" in (folder / "METADATA.txt").read_text()
    # The case page says it too.
    client, _ = casebook_client(root)
    html = client.get(f"/case/{case_id}?lang=en", base_url=BASE).get_data(as_text=True)
    assert "mat2 is not installed" in html and "camera model" in html and "GPS position" in html


def test_casebook_case_page_warns_of_metadata(exported_case: tuple[Path, str]) -> None:
    root, case_id = exported_case
    client, _ = casebook_client(root)
    html = client.get(f"/case/{case_id}?lang=en", base_url=BASE).get_data(as_text=True)
    assert "identifying metadata" in html.lower()
    assert "CanaryPhone" in html and "María Canary" in html
    if shutil.which("mat2"):
        assert "makes cleaned copies with mat2" in html
