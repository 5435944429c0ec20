# SPDX-License-Identifier: AGPL-3.0-or-later
"""Charts of the casebook (docs/investigators.md, "Charts"): the numbers, and each as an SVG
drawn on the workstation by pygal and as CSV.

Every chart is a :class:`Chart`: a title, column labels (months, weeks or buckets) and rows
(a series each), so the page can show the same numbers as a table, the CSV download carries them,
and :func:`svg` draws them. The SVG is an image with no script (pygal's small script element and
its comments are removed) and nothing from another origin: the page shows it with ``<img>``, so
even a label written by a stranger (a place) is only ever drawn as text.

CSV cells that a spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return) get a leading apostrophe: a place typed as ``=HYPERLINK(…)`` stays text.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass, field, replace
from typing import Any

from whistle.workstation.casebook import deadlines
from whistle.workstation.casebook.answers import Fields
from whistle.workstation.casebook.spikes import month_add
from whistle.workstation.casebook.store import Casebook

MONTHS_SHOWN = 24
WEEKS_SHOWN = 26
TOP_PLACES = 8
PERIODS = ("month", "week")
BREAKDOWNS = ("category", "place", "channel")
ACK_BUCKETS = (("0–2", 0, 2), ("3–5", 3, 5), ("6–7", 6, 7), ("8–14", 8, 14), ("15–30", 15, 30),
               ("> 30", 31, None))
FEEDBACK_BUCKETS = (("≤ 1", 0, 31), ("1–2", 32, 61), ("2–3", 62, 92), ("3–4", 93, 122),
                    ("> 4", 123, None))
AGE_BUCKETS = (("0–7", 0, 7), ("8–30", 8, 30), ("31–90", 31, 90), ("91–180", 91, 180),
               ("181–365", 181, 365), ("> 365", 366, None))
_FORMULA = re.compile(r"^[=+\-@\t\r]")


@dataclass
class Chart:
    """One chart's numbers."""

    id: str
    title: str
    columns: list[str]
    rows: list[tuple[str, list[int]]] = field(default_factory=list)
    kind: str = "stacked"  # stacked bars over time, or "bars" (buckets)
    note: str = ""
    # What the series are ("category", "place", "channel"; "" for the bars of one series).
    by: str = ""

    @property
    def total(self) -> int:
        return sum(sum(values) for _, values in self.rows)


def csv_cell(value: object) -> str:
    """A cell safe from spreadsheet formula injection."""
    text = str(value)
    return "'" + text if _FORMULA.match(text) else text


def to_csv(chart: Chart) -> str:
    """The chart's table as CSV (first column the series)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([csv_cell(c) for c in ["", *chart.columns]])
    for name, values in chart.rows:
        writer.writerow([csv_cell(name), *values])
    return out.getvalue()


# --- the numbers --------------------------------------------------------------------------------


def _periods(period: str, today: dt.date) -> tuple[list[str], str, str]:
    """The columns (months ``YYYY-MM`` or weeks by their Monday) ending with today's, the SQL
    expression that maps ``c.received_on`` onto them, and the first day shown."""
    if period == "week":
        monday = today - dt.timedelta(days=today.weekday())
        weeks = [(monday - dt.timedelta(weeks=k)).isoformat() for k in range(WEEKS_SHOWN - 1, -1, -1)]
        return weeks, "date(c.received_on, '-6 days', 'weekday 1')", weeks[0]
    current = today.strftime("%Y-%m")
    months = [month_add(current, -k) for k in range(MONTHS_SHOWN - 1, -1, -1)]
    return months, "substr(c.received_on, 1, 7)", months[0] + "-01"


# The numbers are computed without words (they are computed ahead, in the background, for any
# language): a chart's title and note are keys of the labels dict, its series the codes (a
# category, a channel, a folded place, or CASES), a column made of words a KEY-prefixed key;
# :func:`labelled` puts the words in.
KEY = "\x00"
CASES = KEY + "cases"


def reports_over_time(book: Casebook, fields: Fields, by: str, period: str, today: dt.date) -> Chart:
    """Reports received per month or week, one series per category, place or channel."""
    columns, bucket, since = _periods(period, today)
    index = {c: k for k, c in enumerate(columns)}
    if by == "place" and fields.place_fields:
        place = fields.place_fields[0]
        sql = (f"SELECT a.key, {bucket} AS p, count(*) FROM cases c JOIN answers a ON "  # noqa: S608 - fixed expressions  # nosec B608
               f"a.case_id = c.id AND a.field = ? WHERE c.received_on >= ? GROUP BY a.key, p")
        params: list[object] = [place, since]
    else:
        column = "c.channel" if by == "channel" else "c.category"
        sql = (f"SELECT {column}, {bucket} AS p, count(*) FROM cases c WHERE c.received_on >= ? "  # noqa: S608 - fixed expressions  # nosec B608
               f"GROUP BY {column}, p")
        params = [since]
    series: dict[str, list[int]] = {}
    for name, when, n in book.db.execute(sql, params):
        if when in index:
            series.setdefault(str(name), [0] * len(columns))[index[when]] += int(n)
    rows = sorted(series.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    if by == "place" and len(rows) > TOP_PLACES:
        rest = [sum(col) for col in zip(*(v for _, v in rows[TOP_PLACES:]), strict=True)]
        rows = rows[:TOP_PLACES] + [("\x00other", rest)]
    return Chart(f"reports-{by}-{period}", f"title_{by}_{period}", columns, rows, by=by)


def _bucketed(values: list[int], buckets: tuple[tuple[str, int, int | None], ...]) -> list[int]:
    counts = [0] * len(buckets)
    for v in values:
        for k, (_, lo, hi) in enumerate(buckets):
            if v >= lo and (hi is None or v <= hi):
                counts[k] += 1
                break
    return counts


def time_to_ack(book: Casebook, today: dt.date) -> Chart:
    """Days from receipt to acknowledgement, for the reports of the last 12 months; the cases
    still waiting counted apart (within the 7 days, or past them)."""
    since = (today - dt.timedelta(days=365)).isoformat()
    days, waiting_ok, waiting_late = [], 0, 0
    for received, ack_on, due in book.db.execute(
            "SELECT received_on, ack_on, ack_due FROM cases WHERE received_on >= ?", (since,)):
        if ack_on:
            days.append((deadlines.parse_day(ack_on) - deadlines.parse_day(received)).days)
        elif due < today.isoformat():
            waiting_late += 1
        else:
            waiting_ok += 1
    counts = _bucketed(days, ACK_BUCKETS)
    columns = [b[0] for b in ACK_BUCKETS] + [KEY + "waiting", KEY + "waiting_late"]
    return Chart("ack", "title_ack", columns, [(CASES, counts + [waiting_ok, waiting_late])],
                 kind="bars", note="note_ack")


def time_to_feedback(book: Casebook, today: dt.date) -> Chart:
    """Months from receipt to feedback, for the reports of the last 18 months; waiting cases
    apart (within the 3 months, or past them)."""
    since = (today - dt.timedelta(days=548)).isoformat()
    days, waiting_ok, waiting_late = [], 0, 0
    for received, feedback_on, due in book.db.execute(
            "SELECT received_on, feedback_on, feedback_due FROM cases WHERE received_on >= ?", (since,)):
        if feedback_on:
            days.append((deadlines.parse_day(feedback_on) - deadlines.parse_day(received)).days)
        elif due < today.isoformat():
            waiting_late += 1
        else:
            waiting_ok += 1
    counts = _bucketed(days, FEEDBACK_BUCKETS)
    columns = [b[0] for b in FEEDBACK_BUCKETS] + [KEY + "waiting", KEY + "waiting_late"]
    return Chart("feedback", "title_feedback", columns, [(CASES, counts + [waiting_ok, waiting_late])],
                 kind="bars", note="note_feedback")


def open_by_age(book: Casebook, today: dt.date) -> Chart:
    """Cases not closed on the server, by days since receipt."""
    ages = [(today - deadlines.parse_day(r[0])).days for r in book.db.execute(
        "SELECT received_on FROM cases WHERE status != 'closed'")]
    return Chart("open", "title_open", [b[0] for b in AGE_BUCKETS],
                 [(CASES, _bucketed(ages, AGE_BUCKETS))], kind="bars", note="note_open")


CHART_IDS = ("reports-category", "reports-place", "reports-channel", "ack", "feedback", "open")


def numbers(book: Casebook, fields: Fields, chart_id: str, period: str, today: dt.date) -> Chart:
    """One chart's numbers, without words, by its id (``reports-category`` … ``open``); only the
    ``reports-`` charts depend on the period."""
    if chart_id.startswith("reports-"):
        return reports_over_time(book, fields, chart_id.split("-", 1)[1], period, today)
    if chart_id == "ack":
        return time_to_ack(book, today)
    if chart_id == "feedback":
        return time_to_feedback(book, today)
    return open_by_age(book, today)


def labelled(chart: Chart, labels: dict[str, Any]) -> Chart:
    """The chart with its words: title and note from ``labels``, the series named by
    ``labels[chart.by]`` (a function of the code), the columns and series made of words too."""
    def word(text: str) -> str:
        return str(labels.get(text[len(KEY):], text)) if text.startswith(KEY) else text

    name_of = labels.get(chart.by, word) if chart.by else word
    return replace(chart, title=str(labels[chart.title]), note=str(labels[chart.note]) if chart.note else "",
                   columns=[word(c) for c in chart.columns],
                   rows=[(str(name_of(n)), v) for n, v in chart.rows])


def build(book: Casebook, fields: Fields, chart_id: str, period: str, today: dt.date,
          labels: dict[str, Any]) -> Chart:
    """One chart by its id, with its words."""
    return labelled(numbers(book, fields, chart_id, period, today), labels)


# --- drawing --------------------------------------------------------------------------------------

_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)


def svg(chart: Chart, width: int = 900, height: int = 360) -> bytes:
    """The chart drawn by pygal as a standalone SVG without script."""
    import pygal
    from pygal.style import Style

    style = Style(background="white", plot_background="white", foreground="#222",
                  foreground_strong="#111", foreground_subtle="#ccc", font_family="sans-serif",
                  colors=("#1f5fa8", "#d9822b", "#3a9a5b", "#b33a3a", "#7a4fa8", "#6b6b6b",
                          "#c7a12f", "#2b9ab0", "#a85f8f"))
    config = dict(js=[], disable_xml_declaration=True, width=width, height=height, style=style,
                  show_legend=len(chart.rows) > 1, legend_at_bottom=True, truncate_legend=40,
                  x_label_rotation=45 if len(chart.columns) > 8 else 0, print_values=False,
                  show_minor_x_labels=True, title=chart.title, no_data_text="0")
    drawing = pygal.StackedBar(**config) if chart.kind == "stacked" else pygal.Bar(**config)
    drawing.x_labels = chart.columns
    if len(chart.columns) > 12:
        drawing.x_labels_major_every = max(1, len(chart.columns) // 12)
        drawing.show_minor_x_labels = False
    for name, values in chart.rows:
        drawing.add(name[:60], values)
    text = drawing.render(is_unicode=True)
    text = _COMMENT.sub("", _SCRIPT.sub("", text))
    return text.encode("utf-8")
