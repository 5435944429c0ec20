# SPDX-License-Identifier: AGPL-3.0-or-later
"""``whistle casebook publish``: the transparency file (docs/protocol.md section 10).

Counts only, from the casebook's own columns: the reports filed each month by category, the
timeliness of the acknowledgement and the feedback, and — only when the questionnaire allows it
with ``[transparency] place_level`` — the reports by place at that level, one row per option of
that choice question (a free-text place is never published). No text, no day: months only.

Every count below the threshold (zero included) is written as ``null`` with ``"suppressed":
true``. Then the secondary suppression: a month whose total (``received``) is shown must not have
exactly one suppressed category, or the total minus the others would give it away; the smallest
shown category of that month is suppressed too (and when there is none, the total).

Cases closed by outcome: one row for every outcome of the protocol's list, counting the cases
closed during the period. The outcome comes with each report of a bundle (docs/protocol.md
section 6); the day of closing is the one the casebook knows, the creation day of the first bundle
that showed the case closed (the server does not export the day itself), so a case closed at the
end of a month and exported in the next one counts in the next one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

from whistle.core.enums import Outcome
from whistle.workstation.casebook.answers import Fields
from whistle.workstation.casebook.spikes import month_add
from whistle.workstation.casebook.store import Casebook, CasebookError

FORMAT = "whistle-transparency"
VERSION = 1
DEFAULT_THRESHOLD = 5
MIN_THRESHOLD, MAX_THRESHOLD = 3, 1000
MAX_MONTHS = 120
MAX_COUNT = 1_000_000_000
MAX_BYTES = 1024 * 1024
DEFAULT_MONTHS = 12
CODE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])\Z")
MEASURES = ("received", "ack_due", "ack_in_time", "feedback_due", "feedback_in_time")
OUTCOMES = tuple(o.value for o in Outcome)


def _count(n: int, threshold: int) -> dict[str, Any]:
    if n < threshold:
        return {"count": None, "suppressed": True}
    return {"count": min(n, MAX_COUNT)}


def period_of(first: str | None, last: str | None, today: dt.date) -> tuple[str, str]:
    """The period: ``--from``/``--to`` checked, by default the 12 complete months before today's."""
    current = today.strftime("%Y-%m")
    to = last or month_add(current, -1)
    start = first or month_add(to, -(DEFAULT_MONTHS - 1))
    for name, value in (("--from", start), ("--to", to)):
        if not MONTH.match(value):
            raise CasebookError(f"{name} must be a month written YYYY-MM")
    if not start <= to <= current:
        raise CasebookError("the period must run forward and end by this month")
    if _months_between(start, to) > MAX_MONTHS:
        raise CasebookError(f"the period is at most {MAX_MONTHS} months")
    return start, to


def _months_between(start: str, to: str) -> int:
    return (int(to[:4]) * 12 + int(to[5:7])) - (int(start[:4]) * 12 + int(start[5:7])) + 1


def transparency(book: Casebook, fields: Fields, *, start: str, to: str, threshold: int,
                 today: dt.date) -> dict[str, Any]:
    """The transparency document for ``start``..``to`` (months)."""
    if not MIN_THRESHOLD <= threshold <= MAX_THRESHOLD:
        raise CasebookError(f"the threshold is from {MIN_THRESHOLD} to {MAX_THRESHOLD}")
    months = [month_add(start, k) for k in range(_months_between(start, to))]
    first_day, last_day = start + "-01", month_add(to, 1) + "-01"
    day = today.isoformat()
    db = book.db
    reports: dict[tuple[str, str], int] = {}
    for month, category, n in db.execute(
            "SELECT substr(received_on, 1, 7), category, count(*) FROM cases WHERE received_on >= ? "
            "AND received_on < ? AND category_valid = 1 GROUP BY 1, 2", (first_day, last_day)):
        if CODE.match(category):
            reports[(month, category)] = int(n)
    categories = sorted({c for _, c in reports})
    timeliness: dict[tuple[str, str], int] = {}
    for row in db.execute(
            "SELECT substr(received_on, 1, 7), count(*), "
            "sum(ack_due < ?), sum(ack_due < ? AND ack_on IS NOT NULL AND ack_on <= ack_due), "
            "sum(feedback_due < ?), "
            "sum(feedback_due < ? AND feedback_on IS NOT NULL AND feedback_on <= feedback_due) "
            "FROM cases WHERE received_on >= ? AND received_on < ? AND category_valid = 1 GROUP BY 1",
            (day, day, day, day, first_day, last_day)):
        for measure, value in zip(MEASURES, row[1:], strict=True):
            timeliness[(row[0], measure)] = int(value or 0)
    series: list[dict[str, Any]] = []
    for month in months:
        cells = {c: reports.get((month, c), 0) for c in categories}
        hidden = {c for c, n in cells.items() if n < threshold}
        received = timeliness.get((month, "received"), 0)
        received_hidden = received < threshold
        if not received_hidden and len(hidden) == 1:
            shown = sorted((n, c) for c, n in cells.items() if c not in hidden)
            if shown:
                hidden.add(shown[0][1])
            else:
                received_hidden = True
        for c in categories:
            row = {"kind": "reports", "month": month, "category": c}
            row |= {"count": None, "suppressed": True} if c in hidden else _count(cells[c], threshold)
            series.append(row)
        for measure in MEASURES:
            value = timeliness.get((month, measure), 0)
            row = {"kind": "timeliness", "month": month, "measure": measure}
            hide = received_hidden if measure == "received" else False
            row |= {"count": None, "suppressed": True} if hide else _count(value, threshold)
            series.append(row)
    series += _closed(book, first_day, last_day, threshold)
    series += _places(book, fields, first_day, last_day, threshold)
    return {"format": FORMAT, "v": VERSION, "period": {"from": start, "to": to},
            "threshold": threshold, "published_on": today.strftime("%Y-%m"), "series": series}


def _closed(book: Casebook, first_day: str, last_day: str, threshold: int) -> list[dict[str, Any]]:
    """One row per outcome: the cases closed during the period (no total is published, so the
    suppression below the threshold is all these rows need)."""
    counts = dict(book.db.execute(
        "SELECT outcome, count(*) FROM cases WHERE closed_on >= ? AND closed_on < ? "
        "AND status = 'closed' AND outcome IS NOT NULL GROUP BY outcome", (first_day, last_day)))
    return [{"kind": "closed", "outcome": outcome} | _count(int(counts.get(outcome, 0)), threshold)
            for outcome in OUTCOMES]


def _places(book: Casebook, fields: Fields, first_day: str, last_day: str,
            threshold: int) -> list[dict[str, Any]]:
    """One row per option of the place question the questionnaire allows publishing, if any."""
    field = fields.publish_place_field
    questionnaire = fields.questionnaire
    question = questionnaire.question(field) if questionnaire and field else None
    if question is None or question.type != "choice" or question.level is None:
        return []
    counts = dict(book.db.execute(
        "SELECT a.value, count(*) FROM answers a JOIN cases c ON c.id = a.case_id WHERE a.field = ? "
        "AND c.received_on >= ? AND c.received_on < ? AND c.category_valid = 1 GROUP BY a.value",
        (field, first_day, last_day)))
    return [{"kind": "places", "level": question.level, "place": option.code}
            | _count(int(counts.get(option.code, 0)), threshold)
            for option in question.options if CODE.match(option.code)]


def write(document: dict[str, Any], out: Path) -> int:
    """Write the document atomically (0600 until the unit chooses to share it); return its size."""
    data = json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=False).encode("utf-8")
    if len(data) > MAX_BYTES:
        raise CasebookError(f"the file would be larger than {MAX_BYTES} bytes: choose a shorter period")
    tmp = out.with_name(f".{out.name}.part")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, out)
    return len(data)
