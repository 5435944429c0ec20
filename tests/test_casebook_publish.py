# SPDX-License-Identifier: AGPL-3.0-or-later
"""``whistle casebook publish`` (whistle/workstation/casebook/publish.py): the transparency file
of docs/protocol.md section 10 never carries a count below the threshold, a text, a day or a
place finer than the questionnaire allows; the secondary suppression leaves no single suppressed
category in a month whose total is shown."""

from __future__ import annotations

import datetime as dt
import json
import re
import stat
from pathlib import Path

import casebook_corpus as corpus_mod
import pytest

from whistle import cli
from whistle.workstation.casebook import publish, store
from whistle.workstation.casebook.answers import load_fields
from whistle.workstation.casebook.store import Casebook, CasebookError

TODAY = dt.date(2026, 7, 10)
KEYS = {"reports": {"kind", "month", "category", "count"},
        "timeliness": {"kind", "month", "measure", "count"},
        "closed": {"kind", "outcome", "count"},
        "places": {"kind", "level", "place", "count"}}


def _book(root: Path, seed: int, background: int) -> corpus_mod.Corpus:
    corpus = corpus_mod.generate(seed, background, campaigns=2, spam=1, start=dt.date(2025, 5, 1), days=420)
    with Casebook.open(root) as book:
        corpus_mod.fill(book, corpus, seed=seed)
    return corpus


def check_file(doc: dict, corpus: corpus_mod.Corpus) -> None:  # type: ignore[type-arg]
    """Everything a published file must never carry."""
    assert set(doc) == {"format", "v", "period", "threshold", "published_on", "series"}
    assert doc["format"] == "whistle-transparency" and doc["v"] == 1
    threshold = doc["threshold"]
    raw = json.dumps(doc, ensure_ascii=False)
    assert not re.search(r"\d{4}-\d{2}-\d{2}", raw), "a day"
    months = [doc["period"]["from"], doc["period"]["to"], doc["published_on"]]
    assert all(re.fullmatch(r"\d{4}-\d{2}", m) for m in months)
    # No text at all: every string is a month, a code of the protocol's or the deployment's.
    options = {o.code for q in (load_fields(None).questionnaire.questions or ()) for o in q.options}
    allowed = {"whistle-transparency", "reports", "timeliness", "closed", "places", "province",
               *publish.MEASURES, *publish.OUTCOMES, *corpus_mod.CATEGORIES, *options}

    def strings(value: object) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return []

    stray = [v for v in strings(doc) if v not in allowed and not re.fullmatch(r"\d{4}-\d{2}", v)]
    assert not stray, stray[:5]
    assert not [r for r in corpus.reports if r.body[:40] in raw]
    by_month: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for row in doc["series"]:
        suppressed = row.get("suppressed") is True
        assert set(row) == KEYS[row["kind"]] | ({"suppressed"} if suppressed else set())
        count = row["count"]
        if suppressed:
            assert count is None
        else:
            assert type(count) is int and threshold <= count <= 1_000_000_000
        for key in ("category", "measure", "place", "level"):
            if key in row:
                assert re.fullmatch(r"[a-z][a-z0-9_]{0,31}", row[key])
        if "month" in row:
            assert doc["period"]["from"] <= row["month"] <= doc["period"]["to"]
            by_month.setdefault(row["month"], []).append(row)
        if row["kind"] == "places":
            assert row["level"] == "province"
        if row["kind"] == "closed":
            assert row["outcome"] in publish.OUTCOMES
    assert sorted(r["outcome"] for r in doc["series"] if r["kind"] == "closed") == sorted(publish.OUTCOMES)
    for month, rows in by_month.items():
        received = next(r for r in rows if r.get("measure") == "received")
        cats = [r for r in rows if r["kind"] == "reports"]
        if received["count"] is not None:
            assert sum(1 for r in cats if r["count"] is None) != 1, month
            assert sum(r["count"] or 0 for r in cats) <= received["count"]


@pytest.mark.parametrize(("seed", "background", "threshold"), [(1, 300, 5), (2, 900, 5), (3, 120, 3),
                                                                (4, 2000, 20)])
def test_casebook_publish_never_carries_small_counts_text_or_days(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, background: int, threshold: int) -> None:
    monkeypatch.setattr(store, "today", lambda: TODAY)
    corpus = _book(tmp_path / "cb", seed, background)
    out = tmp_path / "transparency.json"
    assert cli.main(["casebook", "publish", "--casebook", str(tmp_path / "cb"), "--out", str(out),
                     "--threshold", str(threshold), "--from", "2025-05", "--to", "2026-06"]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["period"] == {"from": "2025-05", "to": "2026-06"} and doc["published_on"] == "2026-07"
    assert doc["threshold"] == threshold
    check_file(doc, corpus)
    rows = doc["series"]
    assert {r["kind"] for r in rows} == {"reports", "timeliness", "closed", "places"}
    categories = {r["category"] for r in rows if r["kind"] == "reports"}
    assert len([r for r in rows if r["kind"] == "reports"]) == 14 * len(categories)  # a full grid
    assert len([r for r in rows if r["kind"] == "timeliness"]) == 14 * 5
    assert len([r for r in rows if r["kind"] == "places"]) == 24  # every province option
    # The shown counts are the true ones.
    truth = sum(1 for r in corpus.reports if r.received_on[:7] == "2026-01" and r.category == "medication")
    shown = next(r for r in rows if r["kind"] == "reports" and r["month"] == "2026-01"
                 and r["category"] == "medication")
    assert shown["count"] in (truth, None) and (shown["count"] is None or truth >= threshold)
    closed = _closed_truth(tmp_path / "cb", "2025-05-01", "2026-07-01")
    for row in (r for r in rows if r["kind"] == "closed"):
        true = closed.get(row["outcome"], 0)
        assert row["count"] == (true if true >= threshold else None), row


def _closed_truth(root: Path, first_day: str, last_day: str) -> dict[str, int]:
    """The cases closed in the period by outcome, counted without publish.py."""
    with Casebook.open(root) as book:
        return dict(book.db.execute(
            "SELECT outcome, count(*) FROM cases WHERE status = 'closed' AND closed_on >= ? "
            "AND closed_on < ? GROUP BY outcome", (first_day, last_day)).fetchall())


def test_casebook_publish_secondary_suppression(tmp_path: Path) -> None:
    fields = load_fields(None)
    with Casebook.open(tmp_path / "cb") as book:
        rows = [("medication", 9), ("corruption", 7), ("other", 2)]
        n = 0
        book.db.execute("BEGIN")
        for category, count in rows:
            for _ in range(count):
                n += 1
                book.db.execute(
                    "INSERT INTO cases (id, received_on, status, status_on, channel, category, "
                    "manifest_key, ack_due, feedback_due, last_activity) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (f"{n:016x}", "2026-03-05", "received", "2026-03-05", "browser", category, "x",
                     "2026-03-12", "2026-06-12", "2026-03-05"))
        book.db.execute("COMMIT")
        doc = publish.transparency(book, fields, start="2026-03", to="2026-03", threshold=5, today=TODAY)
    counts = {r["category"]: r["count"] for r in doc["series"] if r["kind"] == "reports"}
    # "other" (2) is suppressed; the received total (18) is shown, so the smallest shown
    # category (corruption, 7) is suppressed too: 18 - 9 no longer gives "other" away.
    assert counts == {"medication": 9, "corruption": None, "other": None}
    received = next(r for r in doc["series"] if r.get("measure") == "received")
    assert received["count"] == 18


def test_casebook_publish_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(CasebookError):
        publish.period_of("2026-13", None, TODAY)
    with pytest.raises(CasebookError):
        publish.period_of("2026-05", "2026-03", TODAY)
    with pytest.raises(CasebookError):
        publish.period_of("2010-01", "2026-06", TODAY)
    with pytest.raises(CasebookError):
        publish.period_of(None, "2026-08", TODAY)
    assert publish.period_of(None, None, TODAY) == ("2025-07", "2026-06")
    with Casebook.open(tmp_path / "cb") as book, pytest.raises(CasebookError):
        publish.transparency(book, load_fields(None), start="2026-01", to="2026-02", threshold=2,
                             today=TODAY)
    answer = cli.main(["casebook", "publish", "--casebook", str(tmp_path / "cb"), "--out",
                       str(tmp_path / "x.json"), "--threshold", "1"])
    assert answer != 0 and not (tmp_path / "x.json").exists()


def test_casebook_publish_places_only_when_allowed(tmp_path: Path) -> None:
    """A questionnaire without [transparency] place_level publishes no place at all."""
    folder = tmp_path / "q"
    folder.mkdir()
    text = (Path(publish.__file__).parents[2] / "core" / "questionnaires" / "default.toml").read_text()
    text = text.replace('[transparency]\nplace_level = "province"\n', "")
    (folder / "q.toml").write_text(text, encoding="utf-8")
    (folder / "facilities.txt").write_text("Hospital A\n", encoding="utf-8")
    corpus = _book(tmp_path / "cb", 7, 200)
    with Casebook.open(tmp_path / "cb") as book:
        doc = publish.transparency(book, load_fields(folder / "q.toml"), start="2025-06",
                                   to="2026-06", threshold=5, today=TODAY)
    assert not [r for r in doc["series"] if r["kind"] == "places"]
    check_file(doc, corpus)


def test_casebook_publish_reads_with_the_servers_reader(tmp_path: Path) -> None:
    """The file as written passes the server's reader (whistle/core/transparency.py), ``closed``
    rows included: one per outcome, the true count or suppressed."""
    transparency = pytest.importorskip("whistle.core.transparency")
    from whistle.core.questionnaire import load_questionnaire

    corpus = _book(tmp_path / "cb", 8, 900)
    with Casebook.open(tmp_path / "cb") as book:
        doc = publish.transparency(book, load_fields(None), start="2025-05", to="2026-06",
                                   threshold=5, today=TODAY)
    check_file(doc, corpus)
    closed = [r for r in doc["series"] if r["kind"] == "closed"]
    assert [r["outcome"] for r in closed] == list(transparency.OUTCOMES)
    # The corpus closes ~30 % of its cases: the common outcomes are shown, the rarest suppressed.
    assert any(r["count"] is not None for r in closed) and any(r["count"] is None for r in closed)
    codes = [o.code for o in load_questionnaire(None).question("province").options]
    parsed = transparency.parse_transparency(
        json.dumps(doc).encode(), categories=corpus_mod.CATEGORIES, place_level="province",
        place_codes=codes, current_month="2026-07")
    assert parsed.months[0] == "2025-05" and len(parsed.months) == 14
    truth = _closed_truth(tmp_path / "cb", "2025-05-01", "2026-07-01")
    assert parsed.count("closed", "not_substantiated") == truth["not_substantiated"] >= 5
