# SPDX-License-Identifier: AGPL-3.0-or-later
"""Quarantine, not refusal: one bad item never keeps the unit from reading the others.

The bundle is built through the server (the API accepts a sealed envelope it cannot read, so junk
gets a 201 like a real report), then altered as a hostile server could: an attachment stream
truncated, attachments swapped between two reports. ``whistle decrypt`` must write every real
item, name every bad one with its reason, and exit with status 3; ``--strict`` refuses it all.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from support import (
    Workstation,
    api_payload,
    browser_derive,
    form_tokens,
    post_api,
    post_form,
    report_folders,
    source_login,
)

from whistle import cli
from whistle.core.bundle import BundleReader, BundleWriter
from whistle.core.crypto import CHUNK_SIZE, UnitSecretKey, stream_ciphertext_length
from whistle.server.export import export_bundle
from whistle.workstation.decrypt import BundleDecryptError, decrypt_bundle

FILES = {name: os.urandom(size) for name, size in
         (("a.txt", 1000), ("b.txt", 2000), ("c.txt", 3000), ("d.txt", 4000),
          ("g.bin", CHUNK_SIZE + 7000))}


@dataclass
class Hostile:
    """The altered bundle and which report is which."""

    bundle: Path
    ids: dict[str, str]
    junk: bytes


def _find(reader: BundleReader, attachment: str) -> str:
    """The report whose first attachment has the ciphertext size of FILES[attachment]."""
    size = stream_ciphertext_length(len(FILES[attachment]))
    return next(r.id for r in reader.reports for i in r.items
                if i.attachments and reader.size(i.attachments[0]) == size)


@pytest.fixture
def hostile(app: Flask, tmp_path: Path) -> Hostile:
    unit = app.extensions["whistle"].unit_key
    one = lambda name: [(name, "text/plain", FILES[name])]  # noqa: E731
    assert post_form(app.test_client(), "real one, no JavaScript", one("a.txt")).status_code == 200
    for body, name in (("real two", "b.txt"), ("swapped three", "c.txt"), ("swapped four", "d.txt"),
                       ("truncated seven", "g.bin")):
        assert post_api(app.test_client(), api_payload(unit, body, one(name))).status_code == 201
    # Junk of a plausible sealed size, with well-formed keys: the server cannot tell, and
    # answers 201.
    junk = os.urandom(1072)
    source = app.test_client()
    keys = browser_derive(source)
    resp = post_api(source, {"report": (io.BytesIO(junk), "report.bin", "application/octet-stream"),
                             **keys.key_fields()})
    assert resp.status_code == 201
    # Its sender comes back (JavaScript off) and adds a message that does open (sealed by the
    # server, bound to the case).
    source_login(source, keys.passphrase)
    assert source.post("/case", data={**form_tokens(source, "/case"),
                                      "body": "follow-up of the junk"},
                       content_type="multipart/form-data").status_code == 302
    stranger = UnitSecretKey.generate().public_key
    assert post_api(app.test_client(), api_payload(stranger, "sealed to another key", [])).status_code == 201

    state = app.extensions["whistle"]
    exported = tmp_path / "exported.zip"
    export_bundle(state.sessions, exported, unit_fingerprint=state.unit_key.fingerprint())
    bundle = tmp_path / "hostile.zip"
    with BundleReader(exported) as reader:
        ids = {name: _find(reader, name) for name in ("a.txt", "b.txt", "c.txt", "d.txt", "g.bin")}
        with_message = [r for r in reader.reports if len(r.items) == 2]
        ids["junk"] = with_message[0].id
        ids["stranger"] = next(r.id for r in reader.reports if r.id not in ids.values())
        members = {r.id: [m for i in r.items for m in (i.envelope, *i.attachments)] for r in reader.reports}
        data = {m: b"".join(reader.iter_member(m)) for ms in members.values() for m in ms}
        c_att, d_att = members[ids["c.txt"]][1], members[ids["d.txt"]][1]
        data[c_att], data[d_att] = data[d_att], data[c_att]  # a hostile server swaps them
        g_att = members[ids["g.bin"]][1]
        data[g_att] = data[g_att][:-(7000 + 17)]  # the last chunk, FINAL tag and all, cut off
        writer = BundleWriter(bundle, created_on=reader.meta["created_on"], unit_fingerprint="x")
        for name, raw in data.items():
            writer.add_member(name, [raw])
        for report in reader.reports:
            writer.add_report(report)
        writer.close()
    return Hostile(bundle, ids, junk)


def _run(hostile: Hostile, workstation: Workstation, out: Path, *extra: str) -> int:
    return cli.main(["decrypt", str(hostile.bundle), "--key", str(workstation.key_file),
                     "--passphrase-file", str(workstation.passphrase_file), "--out", str(out), *extra])


def test_decrypt_quarantine_writes_every_real_item_and_names_every_bad_one(
    hostile: Hostile, workstation: Workstation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _run(hostile, workstation, out) == 3
    err = capsys.readouterr().err
    ids = hostile.ids
    # The real ones, whole.
    for name, body in (("a.txt", "real one, no JavaScript"), ("b.txt", "real two")):
        folder = out / ids[name]
        assert body in (folder / "report.txt").read_text(encoding="utf-8")
        assert (folder / "attachments" / name).read_bytes() == FILES[name]
    # The texts whose attachments are bad are written, and say what is missing.
    for name, body in (("c.txt", "swapped three"), ("d.txt", "swapped four"), ("g.bin", "truncated seven")):
        text = (out / ids[name] / "report.txt").read_text(encoding="utf-8")
        assert body in text and f'En cuarentena: report {ids[name]} item ' in text
        assert not (out / ids[name] / "attachments" / name).exists()
        assert list((out / ids[name] / "attachments").iterdir()) == [], "a partial file was left"
    # A bad envelope: its follow-up message is still written; the stranger's report has no folder.
    assert [p.name for p in (out / ids["junk"]).iterdir()] == ["message-002.txt"]
    assert "follow-up of the junk" in (out / ids["junk"] / "message-002.txt").read_text(encoding="utf-8")
    assert not (out / ids["stranger"]).exists()
    assert sorted(p.name for p in report_folders(out)) == sorted(
        v for k, v in ids.items() if k != "stranger")
    # Every bad part named, with its reason, on stderr and in QUARANTINE.txt.
    listing = (out / "QUARANTINE.txt").read_text(encoding="utf-8")
    expected = [
        (ids["c.txt"], 'attachment 0 "c.txt": ', "does not authenticate"),
        (ids["d.txt"], 'attachment 0 "d.txt": ', "does not authenticate"),
        (ids["g.bin"], 'attachment 0 "g.bin": ', "truncated"),
        (ids["junk"], "report) envelope: ", "does not open"),
        (ids["stranger"], "report) envelope: ", "does not open"),
    ]
    for where in (err, listing):
        lines = [line for line in where.splitlines() if line.strip().startswith("report ")]
        assert len(lines) == len(expected), where
        for rid, part, reason in expected:
            assert any(f"report {rid} item " in line and part in line and reason in line
                       for line in lines), (rid, part, reason, where)
    # The undecryptable bytes stay in the bundle: nothing written holds them.
    written = [p for p in out.rglob("*") if p.is_file()]
    assert not any(hostile.junk[:32] in p.read_bytes() for p in written)


def test_decrypt_quarantine_strict_refuses_and_writes_nothing(
    hostile: Hostile, workstation: Workstation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _run(hostile, workstation, out, "--strict") == 1
    err = capsys.readouterr().err
    assert err.startswith("whistle: decryption failed, nothing written: report ") and "4 more" in err
    assert err.count("\n") == 1
    assert list(out.iterdir()) == []
    with pytest.raises(BundleDecryptError):  # the library's default is strict too
        decrypt_bundle(hostile.bundle, workstation.secret_key, out)


def test_decrypt_quarantine_summary_and_second_run_appends(
    hostile: Hostile, workstation: Workstation, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    summary = decrypt_bundle(hostile.bundle, workstation.secret_key, out, strict=False)
    assert summary.items == 6 and summary.attachments == 2 and len(summary.quarantined) == 5
    assert summary.quarantine_file == out / "QUARANTINE.txt"
    again = decrypt_bundle(hostile.bundle, workstation.secret_key, out, strict=False)
    # The same bundle twice: numbered copies beside the first, nothing overwritten.
    assert (out / hostile.ids["a.txt"] / "report (2).txt").exists()
    assert (out / hostile.ids["a.txt"] / "attachments" / "a (2).txt").read_bytes() == FILES["a.txt"]
    assert "attachments/a (2).txt" in (out / hostile.ids["a.txt"] / "report (2).txt").read_text()
    assert again.quarantine_file is not None
    assert again.quarantine_file.read_text().count("5 part(s) quarantined") == 2
