# SPDX-License-Identifier: AGPL-3.0-or-later
"""Hostile content stays inert on the workstation.

What a source sends (body, category, attachment names) and what a hostile server exports is
written for a person: nothing in it may act on the investigator's terminal or file manager
(escape sequences, carriage returns, bidi overrides), forge lines of report.txt, or cost more
than linear time (thousands of same-named attachments). Replies files are read with a cap.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from flask import Flask
from nacl.public import SealedBox
from support import Workstation, post_api, random_browser_keys, report_folders

from whistle import cli
from whistle.core.bundle import BundleItem, BundleReport, BundleWriter, attachment_member, envelope_member
from whistle.core.crypto import AttachmentRef, Envelope, encrypt_stream, new_stream_key, seal_envelope
from whistle.core.replies import MAX_REPLIES_FILE_BYTES, RepliesError, read_replies_file
from whistle.server.config import Config
from whistle.server.export import export_bundle
from whistle.workstation.decrypt import decrypt_bundle
from whistle.workstation.names import NameSlots, safe_filename
from whistle.workstation.render import inert_line, inert_text

# One case per class of hostile character: (raw, what must be written instead).
HOSTILE = {
    "osc52-clipboard": ("\x1b]52;c;cm0gLXJmIH4=\x07", "\\x1b]52;c;cm0gLXJmIH4=\\x07"),
    "csi-clear-screen": ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
    "cr-line-overwrite": ("checked: FAKE\rchecked: ok", "checked: FAKE\\rchecked: ok"),
    "nul": ("a\x00b", "a\\x00b"),
    "c1-csi": ("\x9b2J", "\\x9b2J"),
    "del": ("x\x7fy", "x\\x7fy"),
    "rlo-bidi": ("invoice\u202efdp.exe", "invoice\\u202efdp.exe"),
    "isolate-bidi": ("\u2066x\u2069", "\\u2066x\\u2069"),
    "line-separator": ("a\u2028b", "a\\u2028b"),
    "lone-surrogate": ("\ud800", "\\ud800"),
}


@pytest.mark.parametrize("raw,shown", HOSTILE.values(), ids=HOSTILE.keys())
def test_inert_text_shows_control_characters_visibly(raw: str, shown: str) -> None:
    assert inert_text(raw) == shown
    assert inert_line(raw) == shown
    inert_text(raw).encode("utf-8")  # even a lone surrogate becomes writable text


def test_inert_text_keeps_lines_tabs_and_windows_line_endings() -> None:
    assert inert_text("uno\n\tdos\r\ntres ñ 😀 مرحبا") == "uno\n\tdos\ntres ñ 😀 مرحبا"
    assert inert_line("uno\n\tdos", 5) == "uno\\n\\t…"


def test_safe_filename_u202e_cannot_spoof_the_extension() -> None:
    assert safe_filename("invoice\u202efdp.exe") == "invoice_fdp.exe"
    assert safe_filename("a\u2028b.txt") == "a_b.txt"
    # Filesystems count bytes: 120 CJK characters would be 360.
    assert len(safe_filename("漢" * 300 + ".pdf").encode()) <= 200


def test_nameslots_numbers_duplicates_without_reusing_a_taken_name() -> None:
    slots = NameSlots(["a.txt", "A (2).TXT"])  # already in the folder; compared case-folded
    assert [slots.claim(n) for n in ("a.txt", "a (3).txt", "a.txt", "b", "b")] == [
        "a (3).txt", "a (3) (2).txt", "a (4).txt", "b", "b (2)"]


@pytest.fixture
def hostile_out(app: Flask, workstation: Workstation, tmp_path: Path) -> Path:
    """A report through the API whose category forges lines, whose body carries every hostile
    class and whose attachment name hides its extension."""
    body = "Before.\n" + "\n".join(raw for raw, _ in HOSTILE.values()) + "\nAfter."
    # Sealed by hand, as a hostile client would: ASCII-escaped JSON can carry a lone surrogate
    # ("\\ud800"), which whistle's own encoder cannot even produce.
    key, stream = new_stream_key(), io.BytesIO()
    encrypt_stream(io.BytesIO(b"%PDF-1.4"), stream, key)
    ref = AttachmentRef(name="invoice\u202efdp.exe", type="application/pdf", size=8, key=key)
    doc = {"v": 1, "kind": "report", "category": "corruption\nDate: 2020-01-01\nEncrypted in: browser\x1b[2J",
           "body": body, "attachments": [ref.to_json()], "pad": ""}
    doc["pad"] = " " * (-len(json.dumps(doc, separators=(",", ":"))) % 1024)
    sealed = SealedBox(app.extensions["whistle"].unit_key.nacl_key).encrypt(
        json.dumps(doc, separators=(",", ":")).encode("ascii"))
    payload = {"report": (io.BytesIO(sealed), "report.bin", "application/octet-stream"),
               "attachment": [(io.BytesIO(stream.getvalue()), "attachment.bin", "application/octet-stream")],
               **random_browser_keys().key_fields()}
    assert post_api(app.test_client(), payload).status_code == 201
    state = app.extensions["whistle"]
    export_bundle(state.sessions, tmp_path / "b.zip", unit_fingerprint="x")
    return tmp_path / "b.zip"


def test_decrypt_hostile_report_is_written_inert(
    hostile_out: Path, workstation: Workstation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert cli.main(["decrypt", str(hostile_out), "--key", str(workstation.key_file), "--passphrase-file",
                     str(workstation.passphrase_file), "--out", str(out), "--lang", "en"]) == 3
    printed = capsys.readouterr()
    (folder,) = report_folders(out)
    text = (folder / "report.txt").read_text(encoding="utf-8")
    for _raw, shown in HOSTILE.values():
        assert shown in text
    written = text + (out / "QUARANTINE.txt").read_text(encoding="utf-8") + printed.out + printed.err
    for bad in ("\x1b", "\r", "\x00", "\x7f", "\x9b", "\u202e", "\u2066", "\u2028"):
        assert bad not in written, repr(bad)
    # The category forged no line: one Date line, no Encrypted-in line, flagged invalid.
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("Date:")] == [lines[1]]
    assert not any(line.startswith("Encrypted in:") for line in lines)
    assert lines[2] == ('Category: invalid category "corruption\\nDate: 2020-01-01\\nEncrypted in: '
                        'browser\\x1b[2J" (quarantined)')
    assert "category: invalid category" in printed.err
    # The file name cannot spoof its extension; report.txt says what it was sent as.
    assert [p.name for p in (folder / "attachments").iterdir()] == ["invoice_fdp.exe"]
    assert 'attachments/invoice_fdp.exe was sent as "invoice\\u202efdp.exe"' in text


def _duplicates_bundle(path: Path, unit: Workstation, count: int) -> None:
    """One report with ``count`` attachments, every one named "same.txt"."""
    refs, streams = [], []
    for n in range(count):
        key, data, sink = new_stream_key(), str(n).encode(), io.BytesIO()
        encrypt_stream(io.BytesIO(data), sink, key)
        refs.append(AttachmentRef(name="same.txt", type="text/plain", size=len(data), key=key))
        streams.append(sink.getvalue())
    sealed = seal_envelope(Envelope(kind="report", category="other", body="many files",
                                    attachments=tuple(refs)), unit.secret_key.public_key)
    iid = "ab" * 8
    writer = BundleWriter(path, created_on="2026-01-01", unit_fingerprint="x")
    writer.add_member(envelope_member(iid), [sealed])
    for n, stream in enumerate(streams):
        writer.add_member(attachment_member(iid, n), [stream])
    item = BundleItem(id=iid, seq=1, kind="report", created_on="2026-01-01", channel="browser",
                      envelope=envelope_member(iid),
                      attachments=[attachment_member(iid, n) for n in range(count)])
    writer.add_report(BundleReport(id="cd" * 8, received_on="2026-01-01", status="received",
                                   channel="browser", source_public_key="A" * 43 + "=", items=[item]))
    writer.close()


def test_decrypt_duplicate_attachment_names_resolve_in_linear_time(
    workstation: Workstation, tmp_path: Path
) -> None:
    count = 3000
    _duplicates_bundle(tmp_path / "b.zip", workstation, count)
    started = time.perf_counter()
    summary = decrypt_bundle(tmp_path / "b.zip", workstation.secret_key, tmp_path / "out")
    elapsed = time.perf_counter() - started
    print(f"{count} same-named attachments decrypted in {elapsed:.2f} s")
    assert elapsed < 10, f"{count} same-named attachments took {elapsed:.1f} s"
    names = {p.name for p in (tmp_path / "out" / ("cd" * 8) / "attachments").iterdir()}
    assert summary.attachments == count and len(names) == count
    assert {"same.txt", "same (2).txt", f"same ({count}).txt"} <= names
    assert (tmp_path / "out" / ("cd" * 8) / "attachments" / "same (7).txt").read_bytes() == b"6"


@pytest.mark.parametrize("source", ["dev-zero", "sparse-2gb"])
def test_read_replies_file_caps_what_it_reads(tmp_path: Path, source: str) -> None:
    if source == "dev-zero":
        path = Path("/dev/zero")
        if not path.exists():
            pytest.skip("no /dev/zero here")
    else:
        path = tmp_path / "sparse.json"
        with path.open("wb") as fh:
            fh.truncate(2 * 1024**3)
    started = time.perf_counter()
    with pytest.raises(RepliesError, match=f"larger than {MAX_REPLIES_FILE_BYTES} bytes"):
        read_replies_file(path)
    elapsed = time.perf_counter() - started
    print(f"replies file {source} refused in {elapsed:.3f} s")
    assert elapsed < 5


def test_import_replies_command_refuses_dev_zero(
    server_env: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    assert cli.main(["import-replies", "/dev/zero"]) == 1
    assert "larger than" in capsys.readouterr().err


def test_decrypt_merge_keeps_listed_names(workstation: Workstation, tmp_path: Path) -> None:
    """A second bundle into the same folder numbers its files before writing report.txt, so the
    names report.txt lists are the names on disk."""
    _duplicates_bundle(tmp_path / "b.zip", workstation, 3)
    out = tmp_path / "out"
    decrypt_bundle(tmp_path / "b.zip", workstation.secret_key, out)
    decrypt_bundle(tmp_path / "b.zip", workstation.secret_key, out)
    folder = out / ("cd" * 8)
    second = (folder / "report (2).txt").read_text(encoding="utf-8")
    assert "attachments/same (4).txt, attachments/same (5).txt, attachments/same (6).txt" in second
    assert os.listdir(folder / "attachments").__len__() == 6
