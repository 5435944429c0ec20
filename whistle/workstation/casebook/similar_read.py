# SPDX-License-Identifier: AGPL-3.0-or-later
"""Reading the similar-reports index (similar.py) for the pages: a case's nearest reports, its
group, the groups page, a group's members, and the thresholds the pages explain."""

from __future__ import annotations

from typing import Any

from whistle.workstation.casebook import similar as s
from whistle.workstation.casebook.store import Casebook

MIN_GROUP_SHOWN = 3


def similar_to(book: Casebook, case_id: str, limit: int = 10) -> list[dict[str, Any]]:
    """The reports most similar to a case, best first: each a case row with ``text`` and
    ``score``."""
    row = book.db.execute("SELECT n FROM sim_docs WHERE case_id = ?", (case_id,)).fetchone()
    if row is None:
        return []
    n = row[0]
    found = book.db.execute(
        "SELECT other, text, score FROM (SELECT b AS other, text, score FROM sim_edges WHERE a = ? "
        "UNION ALL SELECT a, text, score FROM sim_edges WHERE b = ?) ORDER BY score DESC LIMIT ?",
        (n, n, limit)).fetchall()
    out = []
    for other, text, score in found:
        case = book.db.execute(
            "SELECT c.id, c.received_on, c.category, c.category_valid, c.status FROM sim_docs d "
            "JOIN cases c ON c.id = d.case_id WHERE d.n = ?", (other,)).fetchone()
        if case is not None:
            out.append(dict(case) | {"text": text, "score": score})
    return out


def group_of(book: Casebook, case_id: str) -> dict[str, Any] | None:
    """The group a case belongs to, or None."""
    row = book.db.execute("SELECT g.* FROM sim_members m JOIN sim_groups g ON g.id = m.group_id "
                          "WHERE m.case_id = ?", (case_id,)).fetchone()
    return dict(row) if row else None


def groups(book: Casebook, kind: str, page: int, per_page: int) -> tuple[list[dict[str, Any]], int]:
    """One page of the groups of at least ``MIN_GROUP_SHOWN`` reports, largest first; ``kind``
    "spam" or "pattern" narrows them."""
    where, params = "WHERE size >= ?", [str(MIN_GROUP_SHOWN)]
    if kind in ("spam", "pattern"):
        where += " AND kind = ?"
        params.append(kind)
    total = int(book.db.execute(f"SELECT count(*) FROM sim_groups {where}", params).fetchone()[0])  # noqa: S608 - fixed SQL  # nosec B608
    rows = book.db.execute(
        f"SELECT g.*, (SELECT body FROM items WHERE case_id = g.sample AND kind = 'report') AS body "  # noqa: S608 - fixed SQL  # nosec B608
        f"FROM sim_groups g {where} ORDER BY size DESC, last_on DESC, id LIMIT ? OFFSET ?",
        [*params, per_page, (max(page, 1) - 1) * per_page]).fetchall()
    return [dict(r) | {"body": (r["body"] or "")[:300]} for r in rows], total


def members(book: Casebook, group_id: int, limit: int = 500) -> list[dict[str, Any]]:
    """The cases of a group, newest first (at most ``limit``)."""
    return [dict(r) for r in book.db.execute(
        "SELECT c.id, c.received_on, c.category, c.category_valid, c.status, "
        "substr((SELECT body FROM items WHERE case_id = c.id AND kind = 'report'), 1, 200) AS body "
        "FROM sim_members m JOIN cases c ON c.id = m.case_id WHERE m.group_id = ? "
        "ORDER BY c.received_on DESC, c.id LIMIT ?", (group_id, limit))]


def pairwise_scores(book: Casebook) -> dict[tuple[str, str], float]:
    """Every stored pair as (case id, case id) → score (tests)."""
    names = dict(book.db.execute("SELECT n, case_id FROM sim_docs"))
    return {(names[a], names[b]): s for a, b, s in book.db.execute("SELECT a, b, score FROM sim_edges")}


def describe_math() -> dict[str, float]:
    """The thresholds, for the pages that explain them."""
    return {"show": s.SHOW_MIN, "group": s.GROUP_MIN, "link": s.LINK_MIN, "shared": s.SHARED_NEIGHBOURS,
            "spam": s.SPAM_TEXT, "finest": s.FINEST_PLACE_WEIGHT,
            "month": s.MONTH_WEIGHT, "other": s.OTHER_WEIGHT,
            "common": s.COMMON_SHARE * 100, "common_min": s.COMMON_MIN, "floor": s.TEXT_FLOOR}
