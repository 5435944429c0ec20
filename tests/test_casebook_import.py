# SPDX-License-Identifier: AGPL-3.0-or-later
"""``whistle casebook import``: bundles from a real test instance into the casebook.

Idempotent (the same or an overlapping bundle adds nothing twice), attachments stored once by
content, quarantined items listed and not lost, the same checks as ``whistle decrypt``, the
folder and files the unit's only, and no plaintext written outside the casebook folder.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from support import (
    CASEBOOK_PORT,
    Workstation,
    api_payload,
    casebook_bundle,
    casebook_client,
    find_needles,
    post_api,
    post_form,
    random_browser_keys,
)

from whistle import cli
from whistle.core.bundle import BundleItem, BundleReport, BundleWriter, envelope_member
from whistle.core.crypto import Binding, Envelope, UnitPublicKey, UnitSecretKey, b64encode, seal_envelope
from whistle.workstation.casebook.importer import import_bundle
from whistle.workstation.casebook.store import DB_NAME, Casebook, CasebookError
from whistle.workstation.decrypt import decrypt_bundle


def _modes(root: Path) -> list[str]:
    """Every path under ``root`` that others could read or enter."""
    bad = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            bad.append(f"{path} {oct(mode)}")
    return bad


def test_casebook_import_report_messages_attachments(
    app: Flask, client: FlaskClient, workstation: Workstation, tmp_path: Path
) -> None:
    post_form(client, "Medicinas no entregadas en el dispensario de Quito.",
              [("receta.pdf", "application/pdf", b"%PDF-1.4 receta"),
               ("foto.jpg", "image/jpeg", b"\xff\xd8\xff\xe0 foto")])
    unit = app.extensions["whistle"].unit_key
    assert post_api(client, api_payload(unit, "Cobran por turnos en el hospital.",
                                        [("copia.pdf", "application/pdf", b"%PDF-1.4 receta")]))\
        .status_code == 201
    bundle = casebook_bundle(app, tmp_path / "b1.zip")
    root = tmp_path / "casebook"
    with Casebook.open(root) as book:
        summary = import_bundle(book, bundle, [workstation.secret_key])
        assert (summary.cases_added, summary.items_added, summary.attachments_added) == (2, 2, 3)
        # The same PDF twice (two reports): stored once.
        assert summary.blobs_added == 2
        assert book.count("cases") == 2 and book.count("attachments") == 3
        rows = book.db.execute("SELECT * FROM cases ORDER BY channel").fetchall()
        assert [r["channel"] for r in rows] == ["browser", "server-form"]
        assert {r["category"] for r in rows} == {"corruption", "medication"}
        assert all(r["unread"] == 1 for r in rows)
        browser = rows[0]
        assert browser["report_version"] == 2 and len(browser["case_tag"]) == 16
        (item,) = book.items(browser["id"])
        assert item["body"] == "Cobran por turnos en el hospital." and item["binding"] == "report"
        (att,) = book.attachments(browser["id"])
        blob = book.blob_path(att["sha256"])
        assert blob.read_bytes() == b"%PDF-1.4 receta"
        assert att["sha256"] == hashlib.sha256(b"%PDF-1.4 receta").hexdigest()
    assert _modes(root) == []
    assert stat.S_IMODE((root / DB_NAME).stat().st_mode) == 0o600


def test_casebook_import_idempotent_and_overlapping(
    app: Flask, client: FlaskClient, workstation: Workstation, tmp_path: Path
) -> None:
    post_form(client, "Primera denuncia", [("a.txt", "text/plain", b"uno")])
    first = casebook_bundle(app, tmp_path / "first.zip")
    post_form(app.test_client(), "Segunda denuncia", [("b.txt", "text/plain", b"dos")])
    overlapping = casebook_bundle(app, tmp_path / "all.zip", include_all=True)
    with Casebook.open(tmp_path / "cb") as book:
        assert import_bundle(book, first, [workstation.secret_key]).items_added == 1
        again = import_bundle(book, first, [workstation.secret_key])
        assert (again.items_added, again.items_skipped, again.cases_added) == (0, 1, 0)
        both = import_bundle(book, overlapping, [workstation.secret_key])
        assert (both.items_added, both.items_skipped, both.cases_added) == (1, 1, 1)
        assert book.count("items") == 2 and book.count("attachments") == 2
        assert book.db.execute("SELECT count(*) FROM items_fts").fetchone()[0] == 2
        assert len(list((tmp_path / "cb" / "files").rglob("*"))) == 4  # 2 folders, 2 files


def _replace_member(src: Path, dst: Path, member_suffix: str, data: bytes) -> None:
    """Copy a bundle, replacing the first member whose name ends with ``member_suffix``."""
    done = False
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            payload = zin.read(info.filename)
            if not done and info.filename.endswith(member_suffix):
                payload, done = data, True
            zout.writestr(info, payload)
    assert done


def test_casebook_import_quarantines_and_keeps_the_rest(
    app: Flask, client: FlaskClient, workstation: Workstation, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    post_form(client, "Denuncia con adjunto dañado", [("acta.pdf", "application/pdf", b"%PDF acta")])
    good = casebook_bundle(app, tmp_path / "good.zip")
    bad = tmp_path / "bad.zip"
    _replace_member(good, bad, "attachment-0.bin", os.urandom(200))
    root = tmp_path / "cb"
    code = cli.main(["casebook", "import", str(bad), "--key", str(workstation.key_file),
                     "--passphrase-file", str(workstation.passphrase_file), "--casebook", str(root)])
    captured = capsys.readouterr()
    assert code == 3
    assert "1 part(s) of" in captured.err and 'attachment 0 "acta.pdf"' in captured.err
    with Casebook.open(root) as book:
        (case,) = book.db.execute("SELECT * FROM cases").fetchall()
        (item,) = book.items(case["id"])
        assert "Denuncia con adjunto dañado" in item["body"]
        (att,) = book.attachments(case["id"])
        assert att["sha256"] is None and "acta.pdf" in att["problem"]
        (q,) = book.quarantine()
        assert q["part"].startswith("attachment 0") and q["bundle"] == "bad.zip"
    # The good bundle afterwards: the item is known, nothing is added twice; the quarantine
    # entry stays listed.
    assert cli.main(["casebook", "quarantine", "--casebook", str(root)]) == 0
    assert "acta.pdf" in capsys.readouterr().out


def test_casebook_import_wrong_key_imports_nothing(
    app: Flask, client: FlaskClient, workstation: Workstation, tmp_path: Path
) -> None:
    post_form(client, "Para otra clave", [])
    bundle = casebook_bundle(app, tmp_path / "b.zip")
    with Casebook.open(tmp_path / "cb") as book:
        with pytest.raises(CasebookError, match="not one item"):
            import_bundle(book, bundle, [UnitSecretKey.generate()])
        assert book.count("cases") == 0 and book.count("quarantine") == 0


def test_casebook_import_unreadable_bundle_one_line(workstation: Workstation, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    code = cli.main(["casebook", "import", str(junk), "--key", str(workstation.key_file),
                     "--passphrase-file", str(workstation.passphrase_file),
                     "--casebook", str(tmp_path / "cb")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("whistle: import failed") and err.count("\n") == 1


def test_casebook_refuses_a_folder_others_can_read(tmp_path: Path) -> None:
    root = tmp_path / "cb"
    Casebook.open(root).close()
    os.chmod(root, 0o755)  # noqa: S103 - the mistake the casebook must refuse
    with pytest.raises(CasebookError, match="other users"):
        Casebook.open(root)


def test_casebook_import_writes_no_plaintext_outside_its_folder(
    app: Flask, client: FlaskClient, workstation: Workstation, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The canary: after import, nothing outside the casebook folder holds the report's text, a
    file's content or its name (the system temp folder pointed at a watched folder)."""
    canary = "CANARY-CASEBOOK-" + os.urandom(6).hex()
    post_form(client, f"Texto secreto {canary}",
              [(f"{canary}-name.txt", "text/plain", f"file {canary} content".encode() * 5000)])
    bundle = casebook_bundle(app, tmp_path / "b.zip")
    watched = tmp_path / "watched-tmp"
    watched.mkdir()
    monkeypatch.setenv("TMPDIR", str(watched))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(watched))
    root = tmp_path / "home" / "cb"
    with Casebook.open(root) as book:
        import_bundle(book, bundle, [workstation.secret_key])
    needles = {"body": canary.encode()}
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and root not in p.parents
               and p.name != "bundle.zip" and p != bundle]
    # The instance's own files hold ciphertext only; the bundle too.
    assert find_needles(outside, needles) == []
    inside = [p for p in root.rglob("*") if p.is_file()]
    assert find_needles(inside, needles)  # the canary is found where it belongs


def _hostile_bundle(path: Path, unit: UnitPublicKey) -> dict[str, str]:
    """A bundle as a compromised server could write it: real envelopes, a lying manifest (the
    cases of tests/test_binding.py). Returns case name -> report id."""
    writer = BundleWriter(path, created_on="2026-05-01", unit_fingerprint="x")
    ids: dict[str, str] = {}

    def case(name: str, manifest_key: bytes, items: list[tuple[str, str, Binding | None]]) -> None:
        rid = os.urandom(8).hex()
        ids[name] = rid
        entry = BundleReport(id=rid, received_on="2026-05-01", status="received", channel="browser",
                             source_public_key=b64encode(manifest_key))
        for position, (kind, body, binding) in enumerate(items, 1):
            iid = os.urandom(8).hex()
            sealed = seal_envelope(Envelope(kind=kind, body=body, binding=binding,
                                            category="corruption" if kind == "report" else ""), unit)
            writer.add_member(envelope_member(iid), [sealed])
            entry.items.append(BundleItem(id=iid, seq=position, kind=kind, created_on="2026-05-01",
                                          channel="browser", envelope=envelope_member(iid)))
        writer.add_report(entry)

    a, b, c, d, attacker = (random_browser_keys() for _ in range(5))
    case("good", a.public_key, [("report", "good report", a.binding(1)),
                                ("message", "good message 2", a.binding(2))])
    case("moved", c.public_key, [("report", "moved-into report", c.binding(1)),
                                 ("message", "MOVED from another case", b.binding(2))])
    case("forged", d.public_key, [("report", "forged-into report", d.binding(1)),
                                  ("message", "FORGED", Binding(os.urandom(16), 2, d.public_key)),
                                  ("message", "real message 2", d.binding(2))])
    e = random_browser_keys()
    case("swapped", attacker.public_key, [("report", "SWAPPED report", e.binding(1))])
    f = random_browser_keys()
    case("gap", f.public_key, [("report", "gap report", f.binding(1)),
                               ("message", "gap message 4", f.binding(4))])
    case("legacy", random_browser_keys().public_key, [("report", "legacy report", None)])
    writer.close()
    return ids


def test_casebook_import_applies_exactly_decrypts_checks(workstation: Workstation,
                                                         tmp_path: Path) -> None:
    bundle = tmp_path / "hostile.zip"
    ids = _hostile_bundle(bundle, workstation.secret_key.public_key)
    decrypted = decrypt_bundle(bundle, workstation.secret_key, tmp_path / "out", strict=False)
    with Casebook.open(tmp_path / "cb") as book:
        summary = import_bundle(book, bundle, [workstation.secret_key])
        assert sorted(q.describe() for q in summary.quarantined) == \
            sorted(q.describe() for q in decrypted.quarantined)
        assert len(summary.quarantined) == 4  # moved, forged, swapped report, gap
        assert summary.items_added == decrypted.items
        bodies = " ".join(r[0] for r in book.db.execute("SELECT body FROM items"))
        for bad in ("MOVED", "FORGED", "SWAPPED"):
            assert bad not in bodies
        assert book.case(ids["swapped"]) is None  # nothing of it opened: no case
        assert book.case(ids["legacy"])["report_version"] == 1
        assert [i["binding"] for i in book.items(ids["good"])] == ["report", "message"]
        listed = {(q["report_id"], q["part"]) for q in book.quarantine()}
        assert (ids["gap"], "") in listed and (ids["forged"], "binding") in listed


def test_casebook_import_takes_status_and_outcome_from_the_server(
    app: Flask, client: FlaskClient, workstation: Workstation, tmp_path: Path
) -> None:
    """Each report of a bundle carries the case's outcome (docs/protocol.md section 6); importing
    a later bundle updates the status and outcome of known cases (they change on the server), and
    ``publish`` counts the cases closed by outcome."""
    import datetime as dt
    import json

    from whistle.server.casework import set_status
    from whistle.workstation.casebook import publish
    from whistle.workstation.casebook.answers import load_fields

    for n in range(3):
        post_form(client, f"Cobran por los turnos en la ventanilla {n}.", [])
    root = tmp_path / "casebook"
    keys = [workstation.secret_key]
    with Casebook.open(root) as book:
        import_bundle(book, casebook_bundle(app, tmp_path / "b1.zip"), keys)
        rows = book.db.execute("SELECT id, status, outcome, closed_on FROM cases ORDER BY id").fetchall()
    ids = [r["id"] for r in rows]
    assert [tuple(r)[1:] for r in rows] == [("received", None, None)] * 3
    sessions = app.extensions["whistle"].sessions
    with sessions.begin() as db:
        for cid in ids:
            set_status(db, cid, "closed", "substantiated", "ana")
    closed = casebook_bundle(app, tmp_path / "b2.zip", include_all=True)
    with zipfile.ZipFile(closed) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert {r["outcome"] for r in manifest["reports"]} == {"substantiated"}
    created = manifest["created_on"]
    with Casebook.open(root) as book:
        summary = import_bundle(book, closed, keys)
        assert (summary.items_added, summary.cases_updated) == (0, 3)
        rows = book.db.execute("SELECT status, outcome, closed_on FROM cases").fetchall()
        assert [tuple(r) for r in rows] == [("closed", "substantiated", created)] * 3
        day = dt.date.fromisoformat(created)
        month = created[:7]
        doc = publish.transparency(book, load_fields(None), start=month, to=month, threshold=3,
                                   today=day)
    counts = {r["outcome"]: r["count"] for r in doc["series"] if r["kind"] == "closed"}
    assert counts == {o: (3 if o == "substantiated" else None) for o in publish.OUTCOMES}
    web, _ = casebook_client(root)
    page = web.get(f"/case/{ids[0]}?lang=en", base_url=f"http://127.0.0.1:{CASEBOOK_PORT}")
    assert "Closed — Substantiated" in page.get_data(as_text=True)
    # Reopened on the server: the next bundle clears the outcome and the day of closing.
    with sessions.begin() as db:
        set_status(db, ids[0], "investigating", None, "ana")
    with Casebook.open(root) as book:
        summary = import_bundle(book, casebook_bundle(app, tmp_path / "b3.zip", include_all=True), keys)
        assert summary.cases_updated == 1
        assert tuple(book.db.execute("SELECT status, outcome, closed_on FROM cases WHERE id = ?",
                                     (ids[0],)).fetchone()) == ("investigating", None, None)


def test_casebook_schema_2_is_migrated(tmp_path: Path) -> None:
    """A casebook of schema 2 (before outcomes) opens and gains the columns; a case it knew as
    closed keeps the day of the last bundle that showed it as its day of closing, and gets its
    outcome from the next bundle."""
    import sqlite3

    from whistle.workstation.casebook import schema

    root = tmp_path / "old"
    root.mkdir(mode=0o700)
    db = sqlite3.connect(root / DB_NAME)
    db.executescript("BEGIN;" + schema.DDL + schema.DDL_V2 + "PRAGMA user_version = 2; COMMIT;")
    db.execute("INSERT INTO cases (id, received_on, status, status_on, channel, manifest_key, "
               "ack_due, feedback_due, last_activity) VALUES ('aaaaaaaaaaaaaaaa', '2026-01-05', "
               "'closed', '2026-02-10', 'browser', 'x', '2026-01-12', '2026-04-05', '2026-01-05')")
    db.commit()
    db.close()
    with Casebook.open(root) as book:
        assert book.db.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 3
        row = book.db.execute("SELECT outcome, closed_on FROM cases").fetchone()
        assert tuple(row) == (None, "2026-02-10")
        assert len(book.db.execute("SELECT value FROM meta WHERE key = 'casebook_id'").fetchone()[0]) == 32
