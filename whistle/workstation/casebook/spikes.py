# SPDX-License-Identifier: AGPL-3.0-or-later
"""Spikes: the cells — a category in a place, or a category overall — whose count in a recent
month is far above their own history (docs/investigators.md, "Spikes").

The statistic, as the page says it in plain words: for each cell and each of the last
``TESTED_MONTHS`` months (the current one included, perhaps incomplete), the reports received that
month are compared with the cell's ``BASELINE_MONTHS`` months before it. If the month were like
those before it, each report of those seven months would have fallen in it with the same chance,
one in seven; how likely is it that at least this many did? That is the exact conditional test
of two Poisson counts (the month's count against its history, given their sum: a one-sided
binomial tail), which, unlike comparing with the history's mean as if it were exact, does not
mistake a quiet history for a low rate. A cell is listed when

- the count is at least ``MIN_COUNT`` and at least ``MIN_RATIO`` times the history's monthly
  mean, and
- the chance is below ``ALPHA`` divided by the number of cells tested (Bonferroni's correction:
  testing hundreds of cells, some would look unusual by luck alone; dividing keeps the chance of
  listing even one cell by luck below ``ALPHA`` in all).

Months are the months the server received the reports (``received_on``); places are the answers
to the questionnaire's place questions (each level separately: province, facility).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass

from whistle.workstation.casebook.answers import Fields
from whistle.workstation.casebook.store import Casebook

BASELINE_MONTHS = 6
TESTED_MONTHS = 3
MIN_COUNT = 5
MIN_RATIO = 2.0
# The least monthly mean a ratio is taken against (a cell with no history has a mean of 0).
MIN_RATE = 0.5
ALPHA = 0.05


@dataclass(frozen=True)
class Spike:
    """One cell found far above its history."""

    category: str
    field: str  # "" for the category overall, else the place question's id
    place: str  # the place as a source wrote it ("" for the category overall)
    key: str  # the place folded (for the inbox link)
    month: str
    count: int
    baseline: float
    p_value: float

    @property
    def ratio(self) -> float:
        return self.count / max(self.baseline, MIN_RATE)


@dataclass(frozen=True)
class Result:
    """What the page shows: the spikes, and what was tested."""

    spikes: list[Spike]
    tested: int
    threshold: float
    months: list[str]


def month_add(month: str, n: int) -> str:
    """``YYYY-MM`` plus ``n`` months."""
    year, mon = int(month[:4]), int(month[5:7])
    index = year * 12 + mon - 1 + n
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def binomial_tail(count: int, total: int, chance: float) -> float:
    """P(X ≥ count) for X binomial with ``total`` trials of ``chance``: the sum of the upper
    terms, each computed in logs."""
    if count <= 0:
        return 1.0
    if count > total:
        return 0.0
    log_p, log_q = math.log(chance), math.log1p(-chance)
    base = math.lgamma(total + 1)
    return min(1.0, sum(math.exp(base - math.lgamma(k + 1) - math.lgamma(total - k + 1)
                                 + k * log_p + (total - k) * log_q) for k in range(count, total + 1)))


def _series(book: Casebook, fields: Fields, first: str) -> dict[tuple[str, str, str], dict[str, int]]:
    """Counts per cell (category, place field, place key) per received month, from ``first``."""
    cells: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    since = first + "-01"
    for category, month, n in book.db.execute(
            "SELECT category, substr(received_on, 1, 7) AS m, count(*) FROM cases WHERE "
            "received_on >= ? AND category_valid = 1 GROUP BY category, m", (since,)):
        cells[(category, "", "")][month] = int(n)
    for field in fields.place_fields:
        for category, key, month, n in book.db.execute(
                "SELECT c.category, a.key, substr(c.received_on, 1, 7) AS m, count(*) FROM answers a "
                "JOIN cases c ON c.id = a.case_id WHERE a.field = ? AND c.received_on >= ? AND "
                "c.category_valid = 1 GROUP BY c.category, a.key, m", (field, since)):
            cells[(category, field, key)][month] = int(n)
    return cells


def find_spikes(book: Casebook, fields: Fields, today: dt.date) -> Result:
    """Every cell whose count in one of the last months is far above its own history."""
    current = today.strftime("%Y-%m")
    months = [month_add(current, -k) for k in range(TESTED_MONTHS - 1, -1, -1)]
    first = month_add(months[0], -BASELINE_MONTHS)
    start = book.db.execute("SELECT min(received_on) FROM cases").fetchone()[0]
    cells = _series(book, fields, first)
    candidates: list[tuple[tuple[str, str, str], str, int, float, float]] = []
    tested = 0
    for cell, counts in cells.items():
        for month in months:
            history_start = month_add(month, -BASELINE_MONTHS)
            # Only months the casebook could have reports for count as history.
            history = [month_add(history_start, k) for k in range(BASELINE_MONTHS)]
            history = [m for m in history if start and m >= start[:7]]
            if len(history) < 2:
                continue
            if not any(counts.get(m) for m in [*history, month]):
                continue
            tested += 1
            count = counts.get(month, 0)
            before = sum(counts.get(m, 0) for m in history)
            baseline = before / len(history)
            if count < MIN_COUNT or count < MIN_RATIO * max(baseline, MIN_RATE):
                continue
            p_value = binomial_tail(count, count + before, 1 / (len(history) + 1))
            candidates.append((cell, month, count, baseline, p_value))
    threshold = ALPHA / max(tested, 1)
    labels = _labels(book, [c[0] for c in candidates])
    spikes = [Spike(cell[0], cell[1], labels.get(cell, cell[2]), cell[2], month, count, round(baseline, 2), p)
              for cell, month, count, baseline, p in candidates if p < threshold]
    spikes.sort(key=lambda s: (s.p_value, s.month, s.category, s.field, s.key))
    return Result(spikes, tested, threshold, months)


def _labels(book: Casebook, cells: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """A place key's most common spelling, for the page."""
    out = {}
    for cell in cells:
        if cell[1]:
            row = book.db.execute("SELECT value, count(*) AS n FROM answers WHERE field = ? AND key = ? "
                                  "GROUP BY value ORDER BY n DESC LIMIT 1", (cell[1], cell[2])).fetchone()
            if row:
                out[cell] = str(row[0])
    return out
