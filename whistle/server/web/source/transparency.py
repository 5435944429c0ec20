# SPDX-License-Identifier: AGPL-3.0-or-later
"""The public transparency page: ``/transparencia`` in Spanish, ``/transparency`` in English.

It shows the figures the unit published (docs/protocol.md section 10; uploaded by an
administrator, whistle/server/transparency.py) as SVG charts drawn on the server and as tables —
no script. A suppressed count is never a number here: it is "fewer than N" (N the file's
threshold). Shares are shown only where both of their counts are.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from babel.dates import format_skeleton
from flask import redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import force_locale, format_percent, get_locale
from flask_babel import gettext as _
from markupsafe import Markup

from whistle.core.enums import LANGUAGE_NAMES, Language, Outcome
from whistle.core.transparency import OUTCOMES, Transparency
from whistle.server import svgcharts
from whistle.server.i18n import category_choices, labels
from whistle.server.state import get_state
from whistle.server.svgcharts import Bar
from whistle.server.transparency import live_timeliness, months_until, published
from whistle.server.web.source import bp

# The threshold of the server's own figures when no file was published (the workstation's default).
DEFAULT_THRESHOLD = 5
LIVE_MONTHS = 12
PAGES = {"es": "source.transparency_es", "en": "source.transparency_en"}


@dataclass(frozen=True)
class Cell:
    """A table cell: the number, or None for a suppressed count."""

    count: int | None


@dataclass(frozen=True)
class ShareRow:
    month: str
    received: Cell
    ack_due: Cell
    ack_in_time: Cell
    ack_share: str
    feedback_due: Cell
    feedback_in_time: Cell
    feedback_share: str


@bp.get("/transparencia")
def transparency_es() -> ResponseReturnValue:
    return _page("es")


@bp.get("/transparency")
def transparency_en() -> ResponseReturnValue:
    return _page("en")


def _month_date(month: str) -> dt.date:
    year, mon = month.split("-")
    return dt.date(int(year), int(mon), 1)


def _month(month: str, skeleton: str = "yMMMM") -> str:
    """A month as the page's language writes it ("noviembre de 2025", "Nov 2025")."""
    return format_skeleton(skeleton, _month_date(month), locale=get_locale())


def _share(part: int | None, whole: int | None) -> tuple[float | None, str]:
    if part is None or whole is None or whole == 0:
        return None, "—"
    return 100.0 * part / whole, format_percent(part / whole, "#0 %")


def _page(lang: str) -> ResponseReturnValue:
    wanted = request.args.get("lang")
    if wanted in PAGES and wanted != lang:
        # Each address is one language; the language menu's ?lang= goes to the other address
        # and, as on every page, makes that language the visitor's choice.
        session["lang"] = wanted
        return redirect(url_for(PAGES[wanted]), 303)
    other = "en" if lang == "es" else "es"
    with force_locale(lang):
        figures = published(get_state().config)
        context = _context(figures) if figures is not None else {}
        context |= _live_context(figures.threshold if figures else DEFAULT_THRESHOLD)
        return render_template(
            "transparency.html", figures=figures, **context,
            current_lang=lang, other_langs=[(other, LANGUAGE_NAMES[Language(other)])],
        )


def _live_context(threshold: int) -> dict[str, object]:
    """The server's own timeliness over the last 12 months (shares only)."""
    months = months_until(LIVE_MONTHS)
    rows = live_timeliness(get_state(), months, threshold)
    short = {m: _month(m, "yMMM") for m in months}
    not_shown = _("not shown (fewer than %(n)d reports due)", n=threshold)

    def text(value: float | None) -> str:
        return "—" if value is None else format_percent(value, "#0 %")

    table = [(short[r.month], text(r.ack), text(r.feedback)) for r in rows]
    return {
        "live_threshold": threshold,
        "live_table": table,
        "live_ack_chart": svgcharts.column_chart(
            [Bar(short[r.month], None if r.ack is None else 100 * r.ack,
                 f"{short[r.month]}: {text(r.ack)}") for r in rows],
            title=_("Acknowledged within 7 days, from this server's records"), chart_id="live-ack",
            percent=True, colour=svgcharts.COLOURS[2], suppressed_text=not_shown),
        "live_feedback_chart": svgcharts.column_chart(
            [Bar(short[r.month], None if r.feedback is None else 100 * r.feedback,
                 f"{short[r.month]}: {text(r.feedback)}") for r in rows],
            title=_("Answered within 3 months, from this server's records"), chart_id="live-feedback",
            percent=True, colour=svgcharts.COLOURS[0], suppressed_text=not_shown),
    }


def _context(t: Transparency) -> dict[str, object]:
    fewer = _("fewer than %(n)d", n=t.threshold)
    names = dict(category_choices())
    month_short = {m: _month(m, "yMMM") for m in t.months}
    charts: list[tuple[str, Markup]] = []
    for i, code in enumerate(t.categories):
        name = names.get(code, code)
        bars = [Bar(month_short[m], count, f"{month_short[m]}: {count}")
                if (count := t.count("reports", m, code)) is not None
                else Bar(month_short[m], None, "") for m in t.months]
        charts.append((name, svgcharts.column_chart(
            bars, title=_("Reports per month: %(category)s", category=name), chart_id=f"reports-{code}",
            colour=svgcharts.COLOURS[i % len(svgcharts.COLOURS)], suppressed_text=fewer)))
    reports_table = [(month_short[m], [Cell(t.count("reports", m, c)) for c in t.categories])
                     for m in t.months]
    timeliness: list[ShareRow] = []
    ack_bars: list[Bar] = []
    feedback_bars: list[Bar] = []
    for m in t.months:
        c = {measure: t.count("timeliness", m, measure) for measure in
                 ("received", "ack_due", "ack_in_time", "feedback_due", "feedback_in_time")}
        ack, ack_text = _share(c["ack_in_time"], c["ack_due"])
        feedback, feedback_text = _share(c["feedback_in_time"], c["feedback_due"])
        timeliness.append(ShareRow(month_short[m], Cell(c["received"]), Cell(c["ack_due"]),
                                   Cell(c["ack_in_time"]), ack_text, Cell(c["feedback_due"]),
                                   Cell(c["feedback_in_time"]), feedback_text))
        ack_bars.append(Bar(month_short[m], ack, f"{month_short[m]}: {ack_text}"))
        feedback_bars.append(Bar(month_short[m], feedback, f"{month_short[m]}: {feedback_text}"))
    not_shown = _("not shown (a count below %(n)d, or no case due yet)", n=t.threshold)
    outcome_names = labels(Outcome)
    closed = [(outcome_names[o], Cell(t.count("closed", o))) for o in OUTCOMES]
    questionnaire = get_state().config.questionnaire
    place_question = questionnaire.question(questionnaire.publish_place_field or "")
    places: list[tuple[str, Cell]] = []
    if place_question is not None and t.of("places"):
        level = questionnaire.publish_place_level or ""
        places = [(o.label(str(_lang())), Cell(t.count("places", level, o.code)))
                  for o in place_question.options]
        places.sort(key=lambda p: (p[1].count is None, -(p[1].count or 0), p[0]))
    return {
        "fewer": fewer,
        "period_from": _month(t.period_from),
        "period_to": _month(t.period_to),
        "published_on": _month(t.published_on),
        "category_names": [names.get(c, c) for c in t.categories],
        "category_charts": charts,
        "reports_table": reports_table,
        "timeliness": timeliness,
        "ack_chart": svgcharts.column_chart(
            ack_bars, title=_("Share of reports acknowledged within 7 days"), chart_id="ack-share",
            percent=True, colour=svgcharts.COLOURS[2], suppressed_text=not_shown),
        "feedback_chart": svgcharts.column_chart(
            feedback_bars, title=_("Share of reports answered within 3 months"),
            chart_id="feedback-share", percent=True, colour=svgcharts.COLOURS[0],
            suppressed_text=not_shown),
        "closed": closed,
        "closed_chart": svgcharts.bar_chart(
            [Bar(name, cell.count, f"{name}: {cell.count}") for name, cell in closed],
            title=_("Cases closed, by outcome"), chart_id="closed", suppressed_text=fewer),
        "places": places,
        "place_label": place_question.label(str(_lang())) if place_question else "",
        "places_chart": svgcharts.bar_chart(
            # Only the places with a count: the table lists the others, "fewer than N" each.
            [Bar(name, cell.count, f"{name}: {cell.count}") for name, cell in places
             if cell.count is not None],
            title=_("Reports by place"), chart_id="places", colour=svgcharts.COLOURS[1],
            suppressed_text=fewer) if any(cell.count is not None for _, cell in places) else None,
    }


def _lang() -> str:
    return str(get_locale())
