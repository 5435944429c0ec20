# SPDX-License-Identifier: AGPL-3.0-or-later
"""Similar reports and groups (whistle/workstation/casebook/similar.py), and the structured
answers they use: stored at import from the sealed envelope, shown on the case page, usable as
inbox and search filters.

The main test plants groups in a generated corpus (tests/casebook_corpus.py: 2,000 ordinary
reports, 10 campaigns of the same complaint written in different words, 3 floods of
near-identical junk) and measures the pairwise precision and recall of the groups found: a pair
of reports is a true pair when both were planted in the same group; a found pair when both are in
the same group found. Background reports that happen to look alike (the same kind of complaint
at the same facility) count against precision.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import casebook_corpus as corpus_mod
import pytest
from flask import Flask
from flask.testing import FlaskClient
from support import CASEBOOK_PORT, Workstation, casebook_client

from whistle.workstation.casebook import similar
from whistle.workstation.casebook.answers import fold, load_fields
from whistle.workstation.casebook.store import Casebook

BASE = f"http://127.0.0.1:{CASEBOOK_PORT}"
FIELDS = load_fields(None)


def _pairs(groups: dict[str, list[str]]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for members in groups.values():
        out.update(itertools.combinations(sorted(members), 2))
    return out


def _scores(found: set[tuple[str, str]], true: set[tuple[str, str]]) -> tuple[float, float]:
    hit = len(found & true)
    return hit / max(len(found), 1), hit / max(len(true), 1)


@pytest.mark.parametrize("seed", [11, 12])
def test_casebook_similar_planted_groups_precision_recall(tmp_path: Path, seed: int) -> None:
    corpus = corpus_mod.generate(seed, 2000, campaigns=10, spam=3)
    with Casebook.open(tmp_path / "cb") as book:
        ids = corpus_mod.fill(book, corpus)
        done = similar.refresh(book, FIELDS)
        assert done.full and done.total == len(ids) and not similar.needs_refresh(book)
        member = dict(book.db.execute("SELECT case_id, group_id FROM sim_members"))
        kinds = dict(book.db.execute("SELECT id, kind FROM sim_groups"))
    planted: dict[str, list[str]] = {}
    for cid, report in zip(ids, corpus.reports, strict=True):
        if report.group:
            planted.setdefault(report.group, []).append(cid)
    found: dict[int, list[str]] = {}
    for cid, gid in member.items():
        found.setdefault(gid, []).append(cid)
    found_pairs = _pairs({str(k): v for k, v in found.items()})
    precision, recall = _scores(found_pairs, _pairs(planted))
    campaigns = {g: m for g, m in planted.items() if g.startswith("campaign")}
    in_campaigns = {c for m in campaigns.values() for c in m}
    c_precision, c_recall = _scores({p for p in found_pairs if p[0] in in_campaigns or p[1] in in_campaigns},
                                    _pairs(campaigns))
    print(f"seed {seed}: all planted groups P={precision:.3f} R={recall:.3f}; "
          f"campaigns only P={c_precision:.3f} R={c_recall:.3f}")
    assert precision >= 0.9 and recall >= 0.9
    assert c_precision >= 0.9 and c_recall >= 0.85
    # Each planted group found is of the right kind; most are found whole or nearly.
    whole = 0
    for name, members in planted.items():
        gid, n = Counter(member.get(c) for c in members).most_common(1)[0]
        if gid is None:
            continue
        whole += n >= 0.8 * len(members)
        assert kinds[gid] == ("spam" if name.startswith("spam") else "pattern"), name
    assert whole >= len(planted) - 2


def test_casebook_similar_incremental_matches_full(tmp_path: Path) -> None:
    corpus = corpus_mod.generate(5, 600, campaigns=4, spam=1)
    first = corpus_mod.Corpus(corpus.reports[:400])
    rest = corpus_mod.Corpus(corpus.reports[400:])
    with Casebook.open(tmp_path / "inc") as book:
        ids = corpus_mod.fill(book, first)
        assert similar.refresh(book, FIELDS).full
        ids += corpus_mod.fill(book, rest, seed=2)
        assert similar.needs_refresh(book)
        step = similar.refresh(book, FIELDS)
        assert step.added == len(rest.reports) and not step.full and step.total == len(corpus.reports)
        inc = dict(book.db.execute("SELECT case_id, group_id FROM sim_members"))
        assert similar.refresh(book, FIELDS).added == 0
        # The whole index recomputed: the same groups (the word weights moved a little).
        similar.refresh(book, FIELDS, full=True)
        full = dict(book.db.execute("SELECT case_id, group_id FROM sim_members"))
    agree = _pairs(_by_group(inc)) & _pairs(_by_group(full))
    assert len(agree) >= 0.9 * len(_pairs(_by_group(full)))


def _by_group(member: dict[str, int]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for cid, gid in member.items():
        out.setdefault(str(gid), []).append(cid)
    return out


def test_casebook_similar_tokens_fold_and_stem() -> None:
    assert similar.tokens("MEDICAMENTOS no entregados") == similar.tokens("medicamento   NO entregado")
    assert "medica" in similar.tokens("Medicación")
    assert "de" not in similar.tokens("la farmacia de Quito") and "farmac quito" in similar.tokens(
        "la farmacia de Quito")


def test_casebook_similar_pages(tmp_path: Path) -> None:
    """The case page lists the similar reports and the group; the groups page lists groups; the
    answers show on the case page and filter the inbox; a stranger's text stays text."""
    corpus = corpus_mod.generate(3, 200, campaigns=2, spam=1)
    hostile = "<script>alert('g')</script> =HYPERLINK(\"http://evil\")"
    for report in corpus.reports:
        if report.group == "spam-0":
            report.body = hostile + " " + report.body
    spam_case = next(k for k, r in enumerate(corpus.reports) if r.group == "spam-0")
    campaign_case = next(k for k, r in enumerate(corpus.reports)
                         if r.group == "campaign-0" and "facility" in r.answers)
    root = tmp_path / "cb"
    with Casebook.open(root) as book:
        ids = corpus_mod.fill(book, corpus)
    client, _ = casebook_client(root)
    # The first page that needs the index builds it.
    html = client.get(f"/case/{ids[campaign_case]}", base_url=BASE).get_data(as_text=True)
    assert 'id="similar"' in html and "Parte de un patrón" in html or "Part of a pattern" in html
    others = [ids[k] for k, r in enumerate(corpus.reports) if r.group == "campaign-0" and k != campaign_case]
    assert sum(1 for o in others if f"/case/{o}" in html) >= 3
    facility = corpus.reports[campaign_case].answers["facility"]
    assert facility in html
    groups = client.get("/groups", base_url=BASE).get_data(as_text=True)
    assert "<script>alert" not in groups and "&lt;script&gt;" in groups
    spam_html = client.get("/groups?kind=spam", base_url=BASE).get_data(as_text=True)
    assert ids[spam_case][:8] in spam_html or "spam" in spam_html
    # The answers filter the inbox (folded: capitals and accents do not matter).
    inbox = client.get("/", base_url=BASE, query_string={"a_facility": facility.upper(), "per_page": 100})
    text = inbox.get_data(as_text=True)
    expected = [ids[k] for k, r in enumerate(corpus.reports)
                if fold(r.answers.get("facility", "")) == fold(facility)]
    assert all(cid[:8] in text for cid in expected)
    assert ids[spam_case][:8] not in text
    # A malformed filter is dropped, not trusted.
    assert client.get("/", base_url=BASE, query_string={"a_X;drop": "1"}).status_code == 200


def test_casebook_import_keeps_answers(app: Flask, client: FlaskClient, workstation: Workstation,
                                       tmp_path: Path) -> None:
    """The answers sealed in a v2 report are stored at import (and added when a casebook made
    before them imports the bundle again)."""
    from whistle.core.bundle import BundleItem, BundleReport, BundleWriter, envelope_member
    from whistle.core.crypto import Binding, Envelope, UnitSecretKey, b64encode, seal_envelope
    from whistle.workstation.casebook.importer import import_bundle

    unit = workstation.secret_key
    source = UnitSecretKey.generate().public_key.encode()
    envelope = Envelope(kind="report", category="medication", body="No hay insulina.",
                        binding=Binding(b"t" * 16, 1, source),
                        fields=(("province", "pichincha"), ("facility", "Hospital Carlos Andrade Marín"),
                                ("month", "2026-03")))
    bundle = tmp_path / "b.zip"
    writer = BundleWriter(bundle, created_on="2026-04-01", unit_fingerprint="t")
    writer.add_member(envelope_member("aa" * 8), [seal_envelope(envelope, unit.public_key)])
    report = BundleReport(id="bb" * 8, received_on="2026-03-30", status="received", channel="browser",
                          source_public_key=b64encode(source))
    report.items.append(BundleItem(id="aa" * 8, seq=1, kind="report", created_on="2026-03-30",
                                   channel="browser", envelope=envelope_member("aa" * 8), attachments=[]))
    writer.add_report(report)
    writer.close()
    with Casebook.open(tmp_path / "cb") as book:
        import_bundle(book, bundle, [unit])
        rows = book.db.execute("SELECT field, value, key FROM answers ORDER BY field").fetchall()
        assert [tuple(r) for r in rows] == [
            ("facility", "Hospital Carlos Andrade Marín", "hospital carlos andrade marin"),
            ("month", "2026-03", "2026-03"), ("province", "pichincha", "pichincha")]
        book.db.execute("DELETE FROM answers")
        import_bundle(book, bundle, [unit])
        assert book.db.execute("SELECT count(*) FROM answers").fetchone()[0] == 3
    page, _ = casebook_client(tmp_path / "cb")
    html = page.get("/case/" + "bb" * 8, base_url=BASE).get_data(as_text=True)
    assert "Pichincha" in html and "Hospital Carlos Andrade Marín" in html and "2026-03" in html


def test_casebook_schema_1_is_migrated(tmp_path: Path) -> None:
    """A casebook made before answers and the index (schema 1) opens, gains both, and indexes."""
    import sqlite3

    from whistle.workstation.casebook import schema

    root = tmp_path / "old"
    root.mkdir(mode=0o700)
    db = sqlite3.connect(root / "casebook.sqlite3")
    db.executescript("BEGIN;" + schema.DDL + "PRAGMA user_version = 1; COMMIT;")
    db.close()
    with Casebook.open(root) as book:
        assert book.db.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        corpus_mod.fill(book, corpus_mod.generate(1, 30))
        assert similar.refresh(book, FIELDS).total == 30
