# SPDX-License-Identifier: AGPL-3.0-or-later
"""The inbox and the search: filters, sorting and pagination, all in SQL over indexed columns.

A filter value comes from a query string typed or edited by anyone who reaches the page, so each
one is checked against what it can be (a date, a known sort key, a page number) and otherwise
ignored; values reach SQL only as parameters. Search text becomes an FTS5 query of quoted terms
(never FTS5 syntax of the user's), each a prefix when it ends in ``*``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from whistle.workstation.casebook import deadlines
from whistle.workstation.casebook.answers import MAX_KEY as MAX_ANSWER
from whistle.workstation.casebook.answers import fold
from whistle.workstation.casebook.store import Casebook

PAGE_SIZES = (25, 50, 100)
DEFAULT_PAGE_SIZE = 50
SORTS = {
    "received": "c.received_on {dir}, c.id {dir}",
    "activity": "c.last_activity {dir}, c.id {dir}",
    "ack": "coalesce(c.ack_on, c.ack_due) {dir}, c.id {dir}",
    "feedback": "coalesce(c.feedback_on, c.feedback_due) {dir}, c.id {dir}",
    "status": "c.status {dir}, c.received_on {dir}, c.id {dir}",
    "category": "c.category {dir}, c.received_on {dir}, c.id {dir}",
}
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
_CODE = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
MAX_ANSWER_FILTERS = 4
# A search term: letters, digits and the joining marks of words (after NFKC).
_TERM = re.compile(r"[\w]+\*?", re.UNICODE)
MAX_TERMS = 12
# Search results are counted up to this many ("more than 1,000"); up to this many they are
# ranked (bm25) or sorted as asked, beyond it shown most recently imported first: ranking every
# match of a word found in half of 100,000 reports is what would make the page slow.
MAX_COUNTED = 1000
# A search whose filters keep at most this many items lists them and tests the matches against
# the list; with more, it joins each match to its case (search, _hits).
PROBE_MAX = 2500
# A filtered inbox is counted up to this many cases (100 pages of 50); unfiltered, exactly.
MAX_INBOX_COUNTED = 5000
SNIPPET_OPEN, SNIPPET_CLOSE = "\x02", "\x03"


@dataclass(frozen=True)
class Filters:
    """What the inbox or the search is narrowed to; every field optional."""

    category: str = ""
    status: str = ""
    channel: str = ""
    tag: str = ""
    assignee: str = ""
    date_from: str = ""
    date_to: str = ""
    overdue: bool = False
    unread: bool = False
    sort: str = "received"
    descending: bool = True
    page: int = 1
    per_page: int = DEFAULT_PAGE_SIZE
    # Structured answers (question id, folded answer): ``a_province=pichincha``, ``a_month=2026-03``.
    answers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> Filters:
        """Filters from a query string; anything malformed is dropped, never trusted."""
        def day(name: str) -> str:
            value = args.get(name, "")
            try:
                return dt.date.fromisoformat(value).isoformat() if _DAY.match(value) else ""
            except ValueError:
                return ""

        def code(name: str) -> str:
            value = args.get(name, "")
            return value if _CODE.match(value) else ""

        try:
            page = max(1, min(int(args.get("page", "1")), 1_000_000))
        except ValueError:
            page = 1
        try:
            per_page = int(args.get("per_page", str(DEFAULT_PAGE_SIZE)))
        except ValueError:
            per_page = DEFAULT_PAGE_SIZE
        sort = args.get("sort", "received")
        answers = tuple(sorted(
            (name[2:], fold(str(value))) for name, value in args.items()
            if name.startswith("a_") and _FIELD.match(name[2:]) and str(value).strip()
            and len(str(value)) <= MAX_ANSWER))[:MAX_ANSWER_FILTERS]
        return cls(
            category=code("category"), status=code("status"), channel=code("channel"),
            tag=args.get("tag", "").strip().casefold()[:40],
            assignee=" ".join(args.get("assignee", "").split())[:80],
            date_from=day("from"), date_to=day("to"),
            overdue=args.get("overdue") == "1", unread=args.get("unread") == "1",
            sort=sort if sort in SORTS or sort == "relevance" else "received",
            descending=args.get("dir", "desc") != "asc",
            page=page, per_page=per_page if per_page in PAGE_SIZES else DEFAULT_PAGE_SIZE,
            answers=answers,
        )

    def answer(self, field_id: str) -> str:
        """The folded answer this filter set narrows ``field_id`` to ("" when none)."""
        return dict(self.answers).get(field_id, "")

    def to_args(self, **changes: Any) -> dict[str, str]:
        """This filter set as query-string arguments (for links to other pages and sorts)."""
        f = replace(self, **changes)
        args = {"category": f.category, "status": f.status, "channel": f.channel, "tag": f.tag,
                "assignee": f.assignee, "from": f.date_from, "to": f.date_to,
                "overdue": "1" if f.overdue else "", "unread": "1" if f.unread else "",
                "sort": f.sort if f.sort != "received" else "", "dir": "" if f.descending else "asc",
                "page": str(f.page) if f.page != 1 else "",
                "per_page": str(f.per_page) if f.per_page != DEFAULT_PAGE_SIZE else ""}
        args |= {f"a_{name}": value for name, value in f.answers}
        return {k: v for k, v in args.items() if v}

    def where(self, today: dt.date) -> tuple[list[str], list[object]]:
        """SQL conditions on the cases table (alias ``c``) and their parameters."""
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (("category", self.category), ("status", self.status),
                              ("channel", self.channel), ("assignee", self.assignee)):
            if value:
                clauses.append(f"c.{column} = ?")
                params.append(value)
        if self.tag:
            clauses.append("c.id IN (SELECT t.case_id FROM tags t WHERE t.tag = ?)")
            params.append(self.tag)
        if self.date_from:
            clauses.append("c.received_on >= ?")
            params.append(self.date_from)
        if self.date_to:
            clauses.append("c.received_on <= ?")
            params.append(self.date_to)
        if self.overdue:
            sql, values = deadlines.overdue_sql(today.isoformat(), "c.")
            clauses.append(sql)
            params.extend(values)
        if self.unread:
            clauses.append("c.unread > 0")
        for name, key in self.answers:
            clauses.append("c.id IN (SELECT a.case_id FROM answers a WHERE a.field = ? AND a.key = ?)")
            params += [name, key]
        return clauses, params


@dataclass
class Page:
    """One page of results and what the page needs to link to the others."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    per_page: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _decorate(book: Casebook, rows: Sequence[sqlite3.Row | dict[str, Any]],
              today: dt.date) -> list[dict[str, Any]]:
    """Case rows with their deadlines and tags (one query for the page's tags)."""
    out = [dict(r) for r in rows]
    ids = [r["id"] for r in out]
    tags: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        marks = ",".join("?" * len(ids))
        for case_id, tag in book.db.execute(
                f"SELECT case_id, tag FROM tags WHERE case_id IN ({marks}) ORDER BY tag", ids):  # noqa: S608 - placeholders only  # nosec B608
            tags[case_id].append(tag)
    for row in out:
        row["tags"] = tags[row["id"]]
        row["ack"] = deadlines.ack_deadline(row, today)
        row["feedback"] = deadlines.feedback_deadline(row, today)
    return out


CASE_COLUMNS = ("c.id, c.received_on, c.status, c.channel, c.category, c.category_valid, "
                "c.assignee, c.ack_due, c.ack_on, c.feedback_due, c.feedback_on, c.unread, "
                "c.item_count, c.last_activity, c.report_version")


def inbox(book: Casebook, filters: Filters, today: dt.date) -> Page:
    """One page of the inbox."""
    clauses, params = filters.where(today)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    if clauses:
        total = int(book.db.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM cases c {where} LIMIT ?)",  # noqa: S608 - fixed SQL, values as parameters  # nosec B608
            [*params, MAX_INBOX_COUNTED + 1]).fetchone()[0])
    else:
        total = int(book.db.execute("SELECT count(*) FROM cases").fetchone()[0])
    order = SORTS.get(filters.sort, SORTS["received"]).format(dir="DESC" if filters.descending else "ASC")
    page = min(filters.page, max(1, -(-total // filters.per_page)))
    rows = book.db.execute(
        f"SELECT {CASE_COLUMNS} FROM cases c {where} ORDER BY {order} LIMIT ? OFFSET ?",  # noqa: S608 - fixed SQL, values as parameters  # nosec B608
        [*params, filters.per_page, (page - 1) * filters.per_page]).fetchall()
    return Page(_decorate(book, rows, today), total, page, filters.per_page,
                {"more": bool(clauses) and total > MAX_INBOX_COUNTED})


def fts_query(text: str) -> str:
    """The user's words as an FTS5 query: each a quoted term (a prefix when it ends in ``*``),
    all required. Empty when no word is left."""
    text = unicodedata.normalize("NFKC", text)
    terms = []
    for match in _TERM.finditer(text):
        word = match.group()
        prefix = word.endswith("*")
        word = word.rstrip("*").replace("_", " ").strip()
        if word:
            terms.append(f'"{word}"' + ("*" if prefix else ""))
    return " ".join(terms[:MAX_TERMS])


def search(book: Casebook, text: str, filters: Filters, today: dt.date) -> Page:
    """Items (reports and messages) matching ``text``, best first, within ``filters``; each row
    carries its case's columns and a snippet with the matches between SNIPPET_OPEN/CLOSE.

    One pass over the matches collects at most MAX_COUNTED + 1 of those that pass the filters,
    most recently imported first: the count ("more than 1,000" when the list is full), the order
    and the page all come from that list, and snippets are made for the rows shown only. A word
    found in half of 100,000 reports with a filter that keeps 1 % of them is walked once, not once
    to count and again for the page."""
    query = fts_query(text)
    if not query:
        return Page([], 0, 1, filters.per_page, {"query": ""})
    ranked = filters.sort == "relevance"
    try:
        hits = _hits(book.db, query, filters, today, ranked)
        total = len(hits)
        many = total > MAX_COUNTED
        if many:
            # Ranking or sorting beyond MAX_COUNTED matches would need every match: newest
            # imported first (the order the list was collected in), and the page says so.
            ordered = [rowid for rowid, _ in hits]
        elif ranked:
            ordered = [rowid for rowid, _ in sorted(hits, key=lambda h: (h[1], -h[0]))]
        else:
            ordered = _sorted(book.db, [rowid for rowid, _ in hits], filters)
        page = min(filters.page, max(1, -(-total // filters.per_page)))
        shown = ordered[(page - 1) * filters.per_page:page * filters.per_page]
        rows = _page_rows(book.db, query, shown)
    except sqlite3.OperationalError:
        # A query FTS5 still refuses (it should not: terms are quoted): no results, not a 500.
        return Page([], 0, 1, filters.per_page, {"query": query})
    return Page(_decorate(book, rows, today), total, page, filters.per_page,
                {"query": query, "more": many, "unranked": many})


def _hits(db: sqlite3.Connection, query: str, filters: Filters, today: dt.date,
          ranked: bool) -> list[tuple[int, float]]:
    """(item rowid, bm25 rank or 0) of up to MAX_COUNTED + 1 matches within the filters, newest
    first. With filters that keep few items (PROBE_MAX at most), those items are listed first and
    the full-text matches only tested against the list (no join per match); otherwise each match
    is joined to its case and filtered, until the list is full."""
    rank = "rank" if ranked else "0"
    limit = MAX_COUNTED + 1
    clauses, params = filters.where(today)
    if not clauses:
        return db.execute(f"SELECT rowid, {rank} FROM items_fts WHERE items_fts MATCH ? "  # noqa: S608 - fixed SQL  # nosec B608
                          "ORDER BY rowid DESC LIMIT ?", [query, limit]).fetchall()
    where = " AND ".join(clauses)
    kept = [r[0] for r in db.execute(
        f"SELECT i.rowid FROM cases c CROSS JOIN items i ON i.case_id = c.id WHERE {where} LIMIT ?",  # noqa: S608 - fixed SQL, values as parameters  # nosec B608
        [*params, PROBE_MAX + 1])]
    if len(kept) <= PROBE_MAX:
        # "+rowid": test each match against the list, rather than look each listed item up in
        # the full-text index (which re-reads the index once per item).
        return db.execute(
            f"SELECT rowid, {rank} FROM items_fts WHERE items_fts MATCH ? AND +rowid IN "  # noqa: S608 - fixed SQL  # nosec B608
            "(SELECT value FROM json_each(?)) ORDER BY rowid DESC LIMIT ?",
            [query, json.dumps(kept), limit]).fetchall()
    # CROSS JOIN keeps the full-text match as the outer loop: SQLite would otherwise drive the
    # query from a filter's index and re-run the MATCH for every candidate row.
    return db.execute(
        f"SELECT items_fts.rowid, {rank} FROM items_fts CROSS JOIN items i ON i.rowid = items_fts.rowid "  # noqa: S608 - fixed SQL, values as parameters  # nosec B608
        f"CROSS JOIN cases c ON c.id = i.case_id WHERE items_fts MATCH ? AND {where} "
        "ORDER BY items_fts.rowid DESC LIMIT ?", [query, *params, limit]).fetchall()


# The inbox's sorts (SORTS) as the columns of a Python sort key, for the matches of a search.
SORT_KEYS = {name: order.replace(" {dir}", "") for name, order in SORTS.items()}


def _sorted(db: sqlite3.Connection, rowids: list[int], filters: Filters) -> list[int]:
    """The matches (at most MAX_COUNTED) in the order the search asks for (the item's rowid
    last: two items of one case keep an order)."""
    columns = SORT_KEYS.get(filters.sort, SORT_KEYS["received"])
    keyed = db.execute(
        f"SELECT {columns}, i.rowid FROM items i CROSS JOIN cases c ON c.id = i.case_id "  # noqa: S608 - fixed SQL  # nosec B608
        "WHERE i.rowid IN (SELECT value FROM json_each(?))", [json.dumps(rowids)]).fetchall()
    keyed.sort(key=tuple, reverse=filters.descending)
    return [row[-1] for row in keyed]


def _page_rows(db: sqlite3.Connection, query: str, rowids: list[int]) -> list[dict[str, Any]]:
    """The rows shown, in ``rowids``' order, with their case's columns and their snippets."""
    if not rowids:
        return []
    listed = json.dumps(rowids)
    rows = {r["item_rowid"]: dict(r) for r in db.execute(
        f"SELECT {CASE_COLUMNS}, i.rowid AS item_rowid, i.id AS item_id, i.seq AS item_seq, "  # noqa: S608 - fixed SQL  # nosec B608
        "i.kind AS item_kind, i.created_on AS item_created_on FROM items i "
        "CROSS JOIN cases c ON c.id = i.case_id WHERE i.rowid IN (SELECT value FROM json_each(?))",
        [listed])}
    # One scan of the matches between the page's first and last rowid, each tested against the
    # list ("+rowid"): looking each row up in the index instead re-reads it once per row (a
    # prefix query's every word each time: 0.5 s for a page).
    for rowid, snippet in db.execute(
            "SELECT rowid, snippet(items_fts, -1, char(2), char(3), '…', 24) FROM items_fts "
            "WHERE items_fts MATCH ? AND rowid BETWEEN ? AND ? "
            "AND +rowid IN (SELECT value FROM json_each(?))",
            [query, min(rowids), max(rowids), listed]):
        if rowid in rows:
            rows[rowid]["snippet"] = snippet
    return [rows[r] for r in rowids if r in rows]


def snippet_parts(snippet: str) -> list[tuple[str, bool]]:
    """A snippet as (text, highlighted) pieces, for a template to escape and mark up."""
    parts: list[tuple[str, bool]] = []
    for i, chunk in enumerate(re.split(f"[{SNIPPET_OPEN}{SNIPPET_CLOSE}]", snippet)):
        if chunk:
            parts.append((chunk, i % 2 == 1))
    return parts
