# SPDX-License-Identifier: AGPL-3.0-or-later
"""The casebook's search (whistle/workstation/casebook/queries.py) over more matches than it
counts: one pass over the full-text matches gives the count, the order and the page; snippets are
made for the rows shown only; a filter that keeps few of many matches still ranks them."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest

from whistle.workstation.casebook import deadlines, queries
from whistle.workstation.casebook.store import Casebook

TODAY = dt.date(2026, 6, 1)
CASES = 2600


@pytest.fixture(scope="module")
def big_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,600 cases, each report saying "farmacia" (some twice, to rank), one in ten tagged
    "urgente", one in four of category "corruption"; a follow-up message for one in five."""
    root = tmp_path_factory.mktemp("search") / "cb"
    rng = random.Random(3)  # noqa: S311 - generated test data
    with Casebook.open(root) as book:
        db = book.db
        db.execute("BEGIN")
        rowid = 0
        for n in range(CASES):
            cid = f"{n:016x}"
            received = (dt.date(2025, 1, 1) + dt.timedelta(days=rng.randint(0, 500))).isoformat()
            category = "corruption" if n % 4 == 0 else "medication"
            db.execute(
                "INSERT INTO cases (id, received_on, status, status_on, channel, category, "
                "manifest_key, ack_due, feedback_due, last_activity) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (cid, received, "received", received, "browser", category, "x",
                 deadlines.ack_due(received), deadlines.feedback_due(received, None), received))
            for seq in (1, 2) if n % 5 == 0 else (1,):
                rowid += 1
                words = ["farmacia"] * rng.choice((1, 1, 1, 2)) + ["hospital"] * 20
                if seq == 2:
                    words = ["mensaje", "sin", "la", "palabra"]
                body = " ".join(words)
                db.execute("INSERT INTO items (rowid, id, case_id, seq, kind, created_on, channel, "
                           "version, body) VALUES (?,?,?,?,?,?,?,?,?)",
                           (rowid, f"{rowid:016x}", cid, seq, "report" if seq == 1 else "message",
                            received, "browser", 2, body))
                db.execute("INSERT INTO items_fts (rowid, body, names) VALUES (?,?,?)", (rowid, body, ""))
            if n % 10 == 3:
                db.execute("INSERT INTO tags (case_id, tag) VALUES (?, 'urgente')", (cid,))
        db.execute("COMMIT")
    return root


def _search(root: Path, text: str, **args: str) -> tuple[queries.Page, list[str]]:
    """The page, and every statement the search ran."""
    with Casebook.open(root) as book:
        statements: list[str] = []
        book.db.set_trace_callback(statements.append)
        page = queries.search(book, text, queries.Filters.from_args(args), TODAY)
        book.db.set_trace_callback(None)
    return page, statements


def _walks(statements: list[str]) -> list[str]:
    """The statements that walk the full-text matches (not only those of listed rows)."""
    return [s for s in statements if "MATCH" in s and "BETWEEN" not in s]


def test_casebook_search_walks_the_matches_once(big_book: Path) -> None:
    """A common word with a filter keeping 1 in 10: one walk over the matches, snippets only for
    the rows shown, the exact count, ranked (every match passing the filter is in the list)."""
    page, statements = _search(big_book, "farmacia", tag="urgente", sort="relevance")
    assert page.total == CASES // 10 and not page.extra["more"] and not page.extra["unranked"]
    assert len(page.rows) == queries.DEFAULT_PAGE_SIZE
    assert len(_walks(statements)) == 1, statements
    snippets = [s for s in statements if "snippet(" in s]
    assert len(snippets) == 1 and "json_each" in snippets[0]
    assert all(queries.SNIPPET_OPEN + "farmacia" in r["snippet"].lower() for r in page.rows)
    # Ranked: the reports saying "farmacia" twice first.
    with Casebook.open(big_book) as book:
        twice = {r[0] for r in book.db.execute("SELECT id FROM items WHERE body LIKE 'farmacia farmacia%'")}
    first = [r["item_id"] in twice for r in page.rows]
    assert first == sorted(first, reverse=True) and first[0]


def test_casebook_search_pages_partition_the_results(big_book: Path) -> None:
    """Every page of a filtered search, sorted by date: each match once, in order."""
    seen: list[tuple[str, str]] = []
    total = 0
    for number in range(1, 20):
        page, statements = _search(big_book, "farmacia", category="corruption", sort="received",
                                   dir="asc", page=str(number), per_page="100")
        assert len(_walks(statements)) == 1
        total = page.total
        if number > page.pages:
            break
        seen += [(r["received_on"], r["id"]) for r in page.rows]
    assert total == CASES // 4 == len(seen) == len(set(seen))
    assert seen == sorted(seen)


def test_casebook_search_beyond_the_count(big_book: Path) -> None:
    """More than 1,000 matches: "more than 1,000", newest imported first, still one walk."""
    page, statements = _search(big_book, "hospital")
    assert page.total == queries.MAX_COUNTED + 1 and page.extra["more"] and page.extra["unranked"]
    assert len(_walks(statements)) == 1
    with Casebook.open(big_book) as book:
        newest = [r[0] for r in book.db.execute(
            "SELECT id FROM items WHERE kind = 'report' ORDER BY rowid DESC LIMIT 50")]
    assert [r["item_id"] for r in page.rows] == newest
    last, _ = _search(big_book, "hospital", page="1000")
    assert last.page == last.pages == 21 and len(last.rows) == 1
    # The same through a filter keeping most cases (the matches joined to their cases).
    wide, statements = _search(big_book, "hospital", category="medication")
    assert wide.extra["more"] and len(_walks(statements)) == 1
    assert all(r["category"] == "medication" for r in wide.rows)
    none, _ = _search(big_book, "inexistente")
    assert none.total == 0 and none.rows == []
