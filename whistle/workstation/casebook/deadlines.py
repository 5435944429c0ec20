# SPDX-License-Identifier: AGPL-3.0-or-later
"""The two deadlines of every case (after the EU whistleblowing directive, art. 9):

- **acknowledgement**: a first reply within 7 days of the day the report was received;
- **feedback**: a reply that tells the source what is being done, within 3 months of the
  acknowledgement, or, when none was sent in time, of the end of the 7 days.

A reply written in the casebook is the acknowledgement when it is the case's first, and counts as
feedback when the investigator marks it so (the reply form proposes "feedback" for every reply
after the first). Dates are days (``YYYY-MM-DD``), as the server records them. The due dates and
the days they were met are columns of ``cases`` so the inbox can filter and sort on them in SQL.
"""

from __future__ import annotations

import calendar
import datetime as dt
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ACK_DAYS = 7
FEEDBACK_MONTHS = 3
# "Due soon" warnings: how many days ahead of each deadline the inbox starts to flag it.
ACK_SOON_DAYS = 2
FEEDBACK_SOON_DAYS = 14

PURPOSES = ("acknowledgement", "feedback", "other")


def parse_day(text: str) -> dt.date:
    """A ``YYYY-MM-DD`` day."""
    return dt.date.fromisoformat(text)


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus calendar months, the day clipped to the month's last (31 Jan + 1 → 28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1]))


def ack_due(received_on: str) -> str:
    """The acknowledgement deadline of a report received on ``received_on``."""
    return (parse_day(received_on) + dt.timedelta(days=ACK_DAYS)).isoformat()


def feedback_due(received_on: str, ack_on: str | None) -> str:
    """The feedback deadline: 3 months from an acknowledgement sent in time, else from the end of
    the acknowledgement period."""
    due = ack_due(received_on)
    start = ack_on if ack_on is not None and ack_on <= due else due
    return add_months(parse_day(start), FEEDBACK_MONTHS).isoformat()


@dataclass(frozen=True)
class Deadline:
    """One deadline of a case as a page shows it."""

    due: str
    met_on: str | None
    overdue: bool
    soon: bool
    # Met, but after the due day.
    late: bool
    # Days until the deadline (negative when past); None once met.
    days_left: int | None = None


def deadline(due: str, met_on: str | None, today: dt.date, soon_days: int) -> Deadline:
    """The state of a deadline ``due`` met on ``met_on`` (or not yet), seen on ``today``."""
    due_day = parse_day(due)
    if met_on is not None:
        return Deadline(due, met_on, overdue=False, soon=False, late=met_on > due)
    left = (due_day - today).days
    return Deadline(due, None, overdue=left < 0, soon=0 <= left <= soon_days, late=False,
                    days_left=left)


def ack_deadline(row: Mapping[str, Any] | sqlite3.Row, today: dt.date) -> Deadline:
    """The acknowledgement deadline of a ``cases`` row (a mapping with ``ack_due`` and ``ack_on``)."""
    return deadline(str(row["ack_due"]), _opt(row["ack_on"]), today, ACK_SOON_DAYS)


def feedback_deadline(row: Mapping[str, Any] | sqlite3.Row, today: dt.date) -> Deadline:
    """The feedback deadline of a ``cases`` row (``feedback_due``, ``feedback_on``)."""
    return deadline(str(row["feedback_due"]), _opt(row["feedback_on"]), today, FEEDBACK_SOON_DAYS)


def overdue_sql(today: str, alias: str = "") -> tuple[str, tuple[str, str]]:
    """A WHERE clause (and its parameters) selecting the cases with a deadline past and unmet;
    ``alias`` is the cases table's alias in the query ("c." for ``cases c``)."""
    a = alias
    return (f"(({a}ack_on IS NULL AND {a}ack_due < ?) OR ({a}feedback_on IS NULL AND {a}feedback_due < ?))",
            (today, today))


def _opt(value: object) -> str | None:
    return None if value is None else str(value)
