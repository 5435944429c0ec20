# SPDX-License-Identifier: AGPL-3.0-or-later
"""Protocol v2 binding on the workstation (issue 10, item 2; docs/protocol.md section 6).

A compromised server can move a source's messages between cases, replay one, swap the manifest's
source key, or drop items. Every v2 envelope carries the source's public key, the case tag and its
number, so ``whistle decrypt`` names each such item (report id, item, reason), writes every real
one, and exits with status 3; ``--strict`` refuses the bundle. Bundles are built here as a
hostile server would write them: real envelopes, a lying manifest.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask
from support import (
    Workstation,
    browser_login,
    file_report_api,
    message_payload,
    post_message,
    report_folders,
)

from whistle import cli
from whistle.core.bundle import BundleItem, BundleReader, BundleReport, BundleWriter, envelope_member
from whistle.core.crypto import Binding, Envelope, UnitPublicKey, b64encode, seal_envelope
from whistle.core.enums import ItemKind
from whistle.server.config import Config
from whistle.server.export import export_bundle
from whistle.workstation.decrypt import Quarantined, decrypt_bundle


@dataclass(frozen=True)
class Source:
    """A source's keys as derived from a passphrase (seed → keypair and case tag)."""

    seed: bytes = field(default_factory=lambda: os.urandom(32))

    @property
    def public_key(self) -> bytes:
        from whistle.core.crypto import UnitSecretKey

        return UnitSecretKey.from_seed(self.seed).public_key.encode()

    @property
    def case_tag(self) -> bytes:
        return hashlib.blake2b(b"whistle-case-tag-v2", digest_size=16, key=self.seed).digest()

    def binding(self, seq: int, *, tag: bytes | None = None) -> Binding:
        return Binding(tag or self.case_tag, seq, self.public_key)


@dataclass
class Case:
    """One report of the bundle being built: its manifest key and its items, in manifest order."""

    id: str
    manifest_key: bytes
    items: list[tuple[str, bytes]] = field(default_factory=list)  # (kind, sealed envelope)


def _rid() -> str:
    return os.urandom(8).hex()


def _seal(unit: UnitPublicKey, kind: str, body: str, binding: Binding | None) -> bytes:
    return seal_envelope(Envelope(kind=kind, body=body, category="corruption" if kind == "report" else "",
                                  binding=binding), unit)


def _write(path: Path, cases: list[Case]) -> Path:
    """A bundle with these cases; each item's manifest seq is its position (1, 2, …)."""
    writer = BundleWriter(path, created_on="2026-05-01", unit_fingerprint="x")
    for case in cases:
        entry = BundleReport(id=case.id, received_on="2026-05-01", status="received",
                             channel="browser", source_public_key=b64encode(case.manifest_key))
        for position, (kind, sealed) in enumerate(case.items, 1):
            iid = os.urandom(8).hex()
            writer.add_member(envelope_member(iid), [sealed])
            entry.items.append(BundleItem(id=iid, seq=position, kind=kind, created_on="2026-05-01",
                                          channel="browser", envelope=envelope_member(iid)))
        writer.add_report(entry)
    writer.close()
    return path


@dataclass
class Hostile:
    bundle: Path
    ids: dict[str, str]


@pytest.fixture
def hostile(workstation: Workstation, tmp_path: Path) -> Hostile:
    unit = workstation.secret_key.public_key
    a, b, attacker = Source(), Source(), Source()
    cases: dict[str, Case] = {}

    def case(name: str, source: Source | None, manifest_key: bytes | None = None) -> Case:
        key = manifest_key or (source.public_key if source else Source().public_key)
        cases[name] = Case(_rid(), key)
        return cases[name]

    def add(name: str, kind: str, body: str, binding: Binding | None) -> None:
        cases[name].items.append((kind, _seal(unit, kind, body, binding)))

    # A real case, whole: report, messages 2 and 3.
    case("good", a)
    add("good", "report", "good report", a.binding(1))
    add("good", "message", "good message 2", a.binding(2))
    add("good", "message", "good message 3", a.binding(3))
    # A message of case b moved into case c (another source's key and tag).
    c = Source()
    case("moved", c)
    add("moved", "report", "moved-into report", c.binding(1))
    add("moved", "message", "moved-into message 2", c.binding(2))
    add("moved", "message", "MOVED from another case", b.binding(3))
    # The same message twice (the server copied the item).
    d = Source()
    case("replayed", d)
    add("replayed", "report", "replayed report", d.binding(1))
    replayed = _seal(unit, "message", "replayed message 2", d.binding(2))
    cases["replayed"].items += [("message", replayed), ("message", replayed)]
    # The right source key but not the case tag: sealed by someone who knows the public key only.
    e = Source()
    case("forged", e)
    add("forged", "report", "forged-into report", e.binding(1))
    add("forged", "message", "FORGED message", e.binding(2, tag=os.urandom(16)))
    add("forged", "message", "forged-into message 2", e.binding(2))  # the real item 2
    # The manifest names the attacker's key: replies would go to them.
    f = Source()
    case("swapped", f, attacker.public_key)
    add("swapped", "report", "SWAPPED report", f.binding(1))
    add("swapped", "message", "SWAPPED message", f.binding(2))
    # An unbound (v1) message on a bound case.
    g = Source()
    case("v1_on_v2", g)
    add("v1_on_v2", "report", "bound report", g.binding(1))
    add("v1_on_v2", "message", "UNBOUND message", None)
    # Item 3 deleted on the server: 2 and 4 remain, both written.
    h = Source()
    case("gap", h)
    add("gap", "report", "gap report", h.binding(1))
    add("gap", "message", "gap message 2", h.binding(2))
    add("gap", "message", "gap message 4", h.binding(4))
    # Filed before protocol v2: nothing to check, marked so.
    case("legacy", None)
    add("legacy", "report", "legacy report", None)
    add("legacy", "message", "legacy message", None)
    # Filed before v2, followed up after: messages bound by the tag the source derives.
    i = Source()
    case("legacy_then_v2", i)
    add("legacy_then_v2", "report", "old report", None)
    add("legacy_then_v2", "message", "new message 2", i.binding(2))
    add("legacy_then_v2", "message", "new message 3", i.binding(3))
    # The report was exported before (no --all): only new messages, checked against the manifest.
    j = Source()
    case("no_report", j)
    add("no_report", "message", "later message 4", j.binding(4))
    add("no_report", "message", "later message 5", j.binding(5))
    bundle = _write(tmp_path / "hostile.zip", list(cases.values()))
    return Hostile(bundle, {name: c.id for name, c in cases.items()})


def _decrypt(bundle: Path, ws: Workstation, out: Path, *extra: str) -> int:
    return cli.main(["decrypt", str(bundle), "--key", str(ws.key_file), "--passphrase-file",
                     str(ws.passphrase_file), "--out", str(out), "--lang", "en", *extra])


def _texts(out: Path, rid: str) -> dict[str, str]:
    folder = out / rid
    if not folder.exists():
        return {}
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))}


def test_binding_every_real_item_written_every_bad_one_named(
        hostile: Hostile, workstation: Workstation, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _decrypt(hostile.bundle, workstation, out) == 3
    err = capsys.readouterr().err
    ids = hostile.ids
    texts = {name: _texts(out, rid) for name, rid in ids.items()}
    # Every real item written, each with its Binding line.
    assert sorted(texts["good"]) == ["message-002.txt", "message-003.txt", "report.txt"]
    assert "Binding: checked (item 1 of the case; its source key matches the manifest's)" in \
        texts["good"]["report.txt"]
    assert ("Binding: checked (item 3 from the source; same case tag and source key as the report, "
            "key matches the manifest's)") in texts["good"]["message-003.txt"]
    assert sorted(texts["moved"]) == ["message-002.txt", "report.txt"]
    assert sorted(texts["replayed"]) == ["message-002.txt", "report.txt"]
    assert sorted(texts["forged"]) == ["message-003.txt", "report.txt"]
    assert texts["swapped"] == {}  # no folder: both its items are quarantined
    assert sorted(texts["v1_on_v2"]) == ["report.txt"]
    assert sorted(texts["gap"]) == ["message-002.txt", "message-003.txt", "report.txt"]
    assert "gap message 4" in texts["gap"]["message-003.txt"]
    assert "Binding: none (filed before protocol v2)" in texts["legacy"]["report.txt"]
    assert "Binding: none (sent before protocol v2)" in texts["legacy"]["message-002.txt"]
    assert "Binding: none (filed before protocol v2)" in texts["legacy_then_v2"]["report.txt"]
    assert "the report was filed before protocol v2" in texts["legacy_then_v2"]["message-003.txt"]
    assert "export with --all" in texts["no_report"]["message-002.txt"]
    written = "".join(t for case in texts.values() for t in case.values())
    for bad in ("MOVED", "FORGED", "SWAPPED", "UNBOUND"):
        assert bad not in written
    assert written.count("replayed message 2") == 1
    # Every bad one named: report id, item, reason, on stderr and in QUARANTINE.txt.
    expected = [
        (ids["moved"], "(seq 3, message) binding: moved or replayed (item 3 of another case"),
        (ids["replayed"], "(seq 3, message) binding: moved or replayed (item 2 twice)"),
        (ids["forged"], "(seq 2, message) binding: forged (wrong case tag)"),
        (ids["swapped"], "(seq 1, report) binding: source key differs from the manifest"),
        (ids["swapped"], "(seq 2, message) binding: source key differs from the manifest"),
        (ids["v1_on_v2"], "(seq 2, message) binding: unbound (version-1) message on a case bound"),
        (ids["gap"], ": item 3 missing (deleted on the server?)"),
    ]
    listing = (out / "QUARANTINE.txt").read_text(encoding="utf-8")
    for where in (err, listing):
        lines = [line.strip() for line in where.splitlines() if line.strip().startswith("report ")]
        assert len(lines) == len(expected), where
        for rid, text in expected:
            assert any(line.startswith(f"report {rid}") and text in line for line in lines), (text, where)


def test_binding_strict_refuses_the_bundle(hostile: Hostile, workstation: Workstation,
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _decrypt(hostile.bundle, workstation, out, "--strict") == 1
    err = capsys.readouterr().err
    assert err.startswith("whistle: decryption failed, nothing written: report ") and "6 more" in err
    assert list(out.iterdir()) == []


def test_binding_summary_lists_a_gap_without_an_item(hostile: Hostile, workstation: Workstation,
                                                     tmp_path: Path) -> None:
    summary = decrypt_bundle(hostile.bundle, workstation.secret_key, tmp_path / "out", strict=False)
    gaps = [q for q in summary.quarantined if not q.item_id]
    assert gaps == [Quarantined(hostile.ids["gap"], "", 3, "message", "",
                                "item 3 missing (deleted on the server?)")]
    # 3 + 2 + 2 + 2 + 0 + 1 + 3 + 2 + 3 + 2 items written.
    assert summary.items == 20


def test_binding_key_swap_alone_and_longer_gaps(workstation: Workstation, tmp_path: Path) -> None:
    """A case whose only fault is the manifest's key; a gap of several items; a message whose
    key is not the report's but whose tag is (forged by someone who read the report)."""
    unit = workstation.secret_key.public_key
    a, b = Source(), Source()
    swapped = Case(_rid(), Source().public_key, [("report", _seal(unit, "report", "r", a.binding(1)))])
    gap = Case(_rid(), b.public_key, [
        ("report", _seal(unit, "report", "r", b.binding(1))),
        ("message", _seal(unit, "message", "m", b.binding(5))),
        ("message", _seal(unit, "message", "odd key", Binding(b.case_tag, 6, Source().public_key))),
        ("message", _seal(unit, "message", "older", b.binding(4))),
    ])
    bundle = _write(tmp_path / "b.zip", [swapped, gap])
    summary = decrypt_bundle(bundle, workstation.secret_key, tmp_path / "out", strict=False)
    reasons = [(q.report_id, q.seq, q.reason.split(" (")[0]) for q in summary.quarantined]
    assert reasons == [
        (swapped.id, 1, "source key differs from the manifest"),
        (gap.id, 0 + 2, "items 2 to 4 missing"),
        (gap.id, 3, "forged"),
        (gap.id, 4, "moved or replayed"),
    ]
    assert summary.items == 2


def test_binding_without_the_report_messages_must_agree(workstation: Workstation,
                                                        tmp_path: Path) -> None:
    """Without the report in the bundle, a message whose tag differs from the case's other
    messages is refused (export with --all to tell which is right); one sealed under another key
    than the manifest's (and another tag: moved from another case) is too."""
    unit = workstation.secret_key.public_key
    a = Source()
    case = Case(_rid(), a.public_key, [
        ("message", _seal(unit, "message", "first", a.binding(2))),
        ("message", _seal(unit, "message", "other tag", a.binding(3, tag=os.urandom(16)))),
        ("message", _seal(unit, "message", "other key", Source().binding(4))),
        ("message", _seal(unit, "message", "second", a.binding(5))),
    ])
    summary = decrypt_bundle(_write(tmp_path / "b.zip", [case]), workstation.secret_key,
                             tmp_path / "out", strict=False)
    assert [(q.seq, q.reason) for q in summary.quarantined if q.item_id] == [
        (2, "case tag differs from the case's other messages and the report is not in this bundle "
            "to tell which is right (export with --all)"),
        (3, "moved or replayed (item 4 of another case: another source key and case tag)"),
    ]
    assert [q.reason for q in summary.quarantined if not q.item_id] == [
        "items 3 to 4 missing (deleted on the server?)"]
    assert summary.items == 2


def test_binding_through_the_server_moved_message(app: Flask, workstation: Workstation,
                                                  tmp_path: Path) -> None:
    """Two real cases filed and followed up through the API; a hostile server moves case B's
    message into case A's entry of the manifest. Only that message is refused."""
    state = app.extensions["whistle"]
    unit = state.unit_key
    cases = []
    for name in ("A", "B"):
        client = app.test_client()
        keys = file_report_api(client, unit, body=f"report {name}")
        assert browser_login(client, keys.login_key).status_code == 200
        resp = post_message(client, message_payload(unit, keys, 2, f"message {name}"))
        assert resp.status_code in (200, 201), resp.get_data(as_text=True)
        cases.append(keys)
    exported = tmp_path / "exported.zip"
    export_bundle(state.sessions, exported, unit_fingerprint=unit.fingerprint())
    hostile = tmp_path / "hostile.zip"
    with BundleReader(exported) as reader:
        first, second = reader.reports
        moved = next(i for i in second.items if i.kind == ItemKind.MESSAGE)
        second.items.remove(moved)
        moved.seq = max(i.seq for i in first.items) + 1
        first.items.append(moved)
        writer = BundleWriter(hostile, created_on=reader.meta["created_on"], unit_fingerprint="x")
        for _, item in reader.iter_items():
            writer.add_member(item.envelope, [reader.read_small(item.envelope)])
        writer.add_report(first)
        writer.add_report(second)
        writer.close()
    out = tmp_path / "out"
    summary = decrypt_bundle(hostile, workstation.secret_key, out, strict=False)
    assert [(q.report_id, q.part, q.reason.split(" (")[0]) for q in summary.quarantined] == [
        (first.id, "binding", "moved or replayed")]
    assert summary.items == 4 - 1 and len(report_folders(out)) == 2


# ------------------------------------------------------------------ whistle reply: the key inside


def _reply(bundle: Path, ws: Workstation, report: str, out: Path, text: Path, *extra: str) -> int:
    return cli.main(["reply", str(bundle), "--report", report, "--text-file", str(text), "--out",
                     str(out), "--key", str(ws.key_file), "--passphrase-file", str(ws.passphrase_file),
                     *extra])


def _write_with_replies(path: Path, cases: list[Case], replies: int) -> Path:
    _write(path, cases)
    with BundleReader(path) as reader:
        reports = reader.reports
        data = {i.envelope: reader.read_small(i.envelope) for _, i in reader.iter_items()}
    writer = BundleWriter(path, created_on="2026-05-01", unit_fingerprint="x")
    for name, raw in data.items():
        writer.add_member(name, [raw])
    for report in reports:
        report.replies = replies
        writer.add_report(report)
    writer.close()
    return path


def test_reply_seals_to_the_key_inside_with_tag_and_next_number(
        workstation: Workstation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reply goes to the key sealed in the report even when another report of the bundle
    differs; its number follows the manifest's count and the replies already in --out."""
    from whistle.core.crypto import UnitSecretKey
    from whistle.core.replies import open_reply, read_replies_file

    unit = workstation.secret_key.public_key
    a = Source()
    case = Case(_rid(), a.public_key, [("report", _seal(unit, "report", "r", a.binding(1))),
                                       ("message", _seal(unit, "message", "m", a.binding(2)))])
    bundle = _write_with_replies(tmp_path / "b.zip", [case], replies=2)
    with BundleReader(bundle) as reader:
        assert reader.reports[0].replies == 2
    (tmp_path / "t.txt").write_text("Recibido.", encoding="utf-8")
    out = tmp_path / "replies.json"
    for _ in range(2):
        assert _reply(bundle, workstation, case.id, out, tmp_path / "t.txt") == 0
    source = UnitSecretKey.from_seed(a.seed)
    opened = [open_reply(r, source, workstation.signing_key.verify_key, case_tag=a.case_tag)
              for r in read_replies_file(out)]
    assert [(o.body, o.seq, o.version) for o in opened] == [("Recibido.", 3, 3), ("Recibido.", 4, 3)]


def test_reply_refuses_a_swapped_manifest_key_a_missing_report_item_and_a_v1_report(
        workstation: Workstation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from whistle.core.crypto import UnitSecretKey
    from whistle.core.replies import open_reply, read_replies_file

    unit = workstation.secret_key.public_key
    a, b, attacker = Source(), Source(), Source()
    swapped = Case(_rid(), attacker.public_key, [("report", _seal(unit, "report", "r", a.binding(1)))])
    later = Case(_rid(), b.public_key, [("message", _seal(unit, "message", "m", b.binding(3)))])
    legacy = Case(_rid(), a.public_key, [("report", _seal(unit, "report", "old", None))])
    bundle = _write(tmp_path / "b.zip", [swapped, later, legacy])
    (tmp_path / "t.txt").write_text("Recibido.", encoding="utf-8")
    out = tmp_path / "replies.json"
    capsys.readouterr()
    for case, needle in ((swapped, "another source key than the one sealed in the report"),
                         (later, "export --all"),
                         (legacy, "--trust-server-key")):
        assert _reply(bundle, workstation, case.id, out, tmp_path / "t.txt") == 1
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    # A report filed before v2, on the unit's word: sealed to the manifest's key, unbound, warned.
    assert _reply(bundle, workstation, legacy.id, out, tmp_path / "t.txt", "--trust-server-key") == 0
    assert "filed before protocol v2" in capsys.readouterr().err
    (reply,) = read_replies_file(out)
    opened = open_reply(reply, UnitSecretKey.from_seed(a.seed), workstation.signing_key.verify_key)
    assert (opened.seq, opened.version) == (None, 2)
    # The flag changes nothing for a bound report: its swapped key is still refused.
    assert _reply(bundle, workstation, swapped.id, out, tmp_path / "t.txt", "--trust-server-key") == 1


def test_reply_numbering_through_the_server(app: Flask, workstation: Workstation,
                                            server_env: object, tmp_path: Path) -> None:
    """Reply, import, export again: the manifest counts the imported reply, so the next reply is
    number 2; the source's own derivation opens both with its case tag."""
    from whistle.core.replies import open_reply, read_replies_file

    state = app.extensions["whistle"]
    client = app.test_client()
    keys = file_report_api(client, state.unit_key, body="report for replies")
    (tmp_path / "t.txt").write_text("Gracias.", encoding="utf-8")
    seqs = []
    for round_ in range(2):
        bundle = tmp_path / f"b{round_}.zip"
        export_bundle(state.sessions, bundle, unit_fingerprint=state.unit_key.fingerprint(),
                      include_all=True)
        with BundleReader(bundle) as reader:
            (report,) = reader.reports
            assert report.replies == round_
        out = tmp_path / f"replies{round_}.json"
        assert _reply(bundle, workstation, report.id, out, tmp_path / "t.txt") == 0
        (reply,) = read_replies_file(out)
        opened = open_reply(reply, keys.secret_key, workstation.signing_key.verify_key,
                            case_tag=keys.case_tag)
        seqs.append(opened.seq)
        assert cli.main(["import-replies", str(out)]) == 0
    assert seqs == [1, 2]


# ------------------------------------------------------- a v1 database, upgraded, still decrypts


def test_binding_v1_database_upgraded_decrypts_every_old_item(
        config: Config, workstation: Workstation, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A database at the first migration holding v1 items the old way (a report with an
    attachment, two follow-up messages, one with an attachment, a reply, and a second report) is
    upgraded to head by the server's start; exported and decrypted strictly, every old item is
    readable and marked ``Binding: none``; the manifest counts the reply; ``whistle reply``
    refuses to trust the server's key for such a report unless told to."""
    import datetime as dt
    import io

    from sqlalchemy import MetaData, Table, insert

    from whistle import create_app
    from whistle.core.crypto import AttachmentRef, encrypt_stream, new_stream_key
    from whistle.core.passphrase import derive, generate
    from whistle.server.db import make_engine
    from whistle.server.instance import load_or_create_secrets
    from whistle.server.migrate import current_revision, head_revision, upgrade_database

    secrets = load_or_create_secrets(config)
    engine = make_engine(config.database_url)
    upgrade_database(engine, "0001")
    keys = derive(generate("es"), secrets.argon2)
    unit = workstation.secret_key.public_key
    blobs: list[dict[str, object]] = []
    chunks: list[dict[str, object]] = []

    def blob(data: bytes) -> str:
        bid = os.urandom(16).hex()
        blobs.append({"id": bid, "size": len(data)})
        chunks.append({"blob_id": bid, "seq": 0, "data": data})
        return bid

    def with_file(kind: str, body: str, name: str, data: bytes) -> tuple[str, str]:
        key = new_stream_key()
        stream = io.BytesIO()
        encrypt_stream(io.BytesIO(data), stream, key)
        ref = AttachmentRef(name, "application/pdf", len(data), key)
        category = "corruption" if kind == "report" else ""
        sealed = seal_envelope(Envelope(kind=kind, body=body, category=category, attachments=(ref,)),
                               unit)
        return blob(sealed), blob(stream.getvalue())

    day = dt.date(2025, 11, 3)
    a, b = "a1" * 8, "b2" * 8
    report_env, report_att = with_file("report", "Informe v1", "v1.pdf", b"%PDF report")
    message_env, message_att = with_file("message", "Mensaje v1 con archivo", "m.pdf", b"%PDF message")
    plain_message = blob(seal_envelope(Envelope(kind="message", body="Mensaje v1"), unit))
    reply_blob = blob(seal_envelope(Envelope(kind="reply", body="Respuesta v1"), keys.secret_key.public_key))
    other = blob(seal_envelope(Envelope(kind="report", category="other", body="Otro informe v1"), unit))
    old = MetaData()
    old.reflect(engine)
    t = {name: Table(name, old) for name in ("blobs", "blob_chunks", "reports", "items", "attachments")}
    with engine.begin() as conn:
        conn.execute(insert(t["blobs"]), blobs)
        conn.execute(insert(t["blob_chunks"]), chunks)
        conn.execute(insert(t["reports"]), [
            {"id": a, "received_on": day, "status": "received", "sealed_by": "server",
             "login_hash": keys.login_hash, "source_public_key": keys.public_key_bytes},
            {"id": b, "received_on": day, "status": "received", "sealed_by": "browser",
             "login_hash": os.urandom(32), "source_public_key": os.urandom(32)}])
        conn.execute(insert(t["items"]), [
            {"id": f"{n:016x}", "report_id": rid, "seq": seq, "kind": kind, "created_on": day,
             "sealed_by": by, "exported": False, "envelope_blob_id": env}
            for n, (rid, seq, kind, by, env) in enumerate((
                (a, 1, "report", "server", report_env), (a, 2, "message", "server", message_env),
                (a, 3, "reply", "unit", reply_blob), (a, 4, "message", "browser", plain_message),
                (b, 1, "report", "browser", other)), 1)])
        conn.execute(insert(t["attachments"]), [
            {"id": "c" * 16, "item_id": f"{1:016x}", "seq": 0, "blob_id": report_att},
            {"id": "d" * 16, "item_id": f"{2:016x}", "seq": 0, "blob_id": message_att}])
    engine.dispose()

    app = create_app(config)  # upgrades on start
    state = app.extensions["whistle"]
    try:
        assert current_revision(state.engine) == head_revision()
        bundle = tmp_path / "bundle.zip"
        export_bundle(state.sessions, bundle, unit_fingerprint=unit.fingerprint())
    finally:
        state.engine.dispose()
    with BundleReader(bundle) as reader:
        assert {r.id: r.replies for r in reader.reports} == {a: 1, b: 0}
    out = tmp_path / "out"
    summary = decrypt_bundle(bundle, workstation.secret_key, out)  # strict: nothing quarantined
    assert summary.items == 4 and summary.attachments == 2 and summary.quarantined == ()
    texts = {name: _texts(out, rid) for name, rid in (("a", a), ("b", b))}
    assert sorted(texts["a"]) == ["message-002.txt", "message-004.txt", "report.txt"]
    assert "Informe v1" in texts["a"]["report.txt"] and "Otro informe v1" in texts["b"]["report.txt"]
    assert "Mensaje v1 con archivo" in texts["a"]["message-002.txt"]
    assert "Mensaje v1" in texts["a"]["message-004.txt"]
    assert (out / a / "attachments" / "v1.pdf").read_bytes() == b"%PDF report"
    assert (out / a / "attachments" / "m.pdf").read_bytes() == b"%PDF message"
    for case in ("a", "b"):
        assert "\nBinding: none (filed before protocol v2)\n" in texts[case]["report.txt"]
    for name in ("message-002.txt", "message-004.txt"):
        assert "\nBinding: none (sent before protocol v2)\n" in texts["a"][name]
    # Replying to such a report: the server's key only on the unit's explicit word.
    (tmp_path / "t.txt").write_text("Gracias.", encoding="utf-8")
    capsys.readouterr()
    assert _reply(bundle, workstation, a, tmp_path / "r.json", tmp_path / "t.txt") == 1
    assert "--trust-server-key" in capsys.readouterr().err
    assert _reply(bundle, workstation, a, tmp_path / "r.json", tmp_path / "t.txt",
                  "--trust-server-key") == 0
