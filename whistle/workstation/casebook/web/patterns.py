# SPDX-License-Identifier: AGPL-3.0-or-later
"""The casebook's pattern pages: groups of similar reports, spikes, charts (SVG and CSV), and
the structured-answer filters the inbox and the search share.

scikit-learn, SciPy and pygal (requirements-casebook.txt) are imported only when a page needs
them: without them the pages say what to install, and the rest of the casebook works.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app, render_template, request
from flask.typing import ResponseReturnValue
from flask_babel import gettext

from whistle.workstation.casebook import answers, charts, similar, similar_read, spikes
from whistle.workstation.casebook.web import book, state
from whistle.workstation.casebook.web.precompute import Precomputer, Stamp, stamp_of

bp = Blueprint("patterns", __name__)

GROUPS_PER_PAGE = 25
# The SVG is an image document: its own inline style is all it may use (no script runs in an
# image, and the policy allows nothing else, nothing from another origin).
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"
# How soon a page whose numbers are being computed asks the browser to load it again (the
# Refresh header works without script).
RELOAD_SECONDS = 3


def precomputer() -> Precomputer:
    """The running casebook's background computation of charts and spikes (precompute.py)."""
    found: Precomputer = current_app.extensions["casebook_precompute"]
    return found


def cached(key: tuple[Any, ...], make: Any) -> Any:
    """``make()`` once per state of this casebook (never another casebook's value)."""
    return precomputer().memo(stamp_of(book()), key, make)


def _computing(html: str) -> Response:
    """A page whose numbers are still being computed: shown at once, reloaded shortly."""
    response = Response(html)
    response.headers["Refresh"] = str(RELOAD_SECONDS)
    return response


def _analysis_ready() -> bool:
    try:
        import pygal  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def ensure_index() -> bool:
    """Index what was imported while the casebook was being served; False without scikit-learn."""
    if not _analysis_ready():
        return False
    cb = book()
    if similar.needs_refresh(cb):
        similar.refresh(cb, state().fields)
        precomputer().kick()
    return True


def _globals(setup: Any) -> None:
    """Template globals (functions called while a page renders: imported macros see them)."""

    def answer_filters() -> list[dict[str, Any]]:
        fields = state().fields
        lang = _lang()
        out = []
        for field in fields.place_fields:
            choices = cached(("choices", field), lambda f=field: answers.choices(book(), f))
            out.append({"id": field, "label": fields.label(field, lang),
                        "choices": [(key, fields.answer_label(field, value, lang), n)
                                    for key, value, n in choices]})
        return out

    def answer_label(field: str, value: str) -> str:
        return state().fields.answer_label(field, value, _lang())

    def field_label(field: str) -> str:
        return state().fields.label(field, _lang())

    def month_field() -> str:
        return state().fields.month_field

    setup.app.jinja_env.globals.update(answer_filters=answer_filters, answer_label=answer_label,
                                       field_label=field_label, month_field=month_field)


bp.record_once(_globals)


def _lang() -> str:
    from flask_babel import get_locale

    return str(get_locale() or "es")


# --- similar reports and groups -----------------------------------------------------------------


@bp.get("/groups")
def groups() -> str:
    """Groups of similar reports, largest first: patterns and floods of near-identical texts."""
    ready = ensure_index()
    kind = request.args.get("kind", "")
    try:
        page = max(1, min(int(request.args.get("page", "1")), 100_000))
    except ValueError:
        page = 1
    rows, total = similar_read.groups(book(), kind, page, GROUPS_PER_PAGE) if ready else ([], 0)
    return render_template("casebook/groups.html", rows=rows, total=total, page=page,
                           pages=max(1, -(-total // GROUPS_PER_PAGE)), kind=kind, ready=ready,
                           math=similar_read.describe_math(), min_group=similar_read.MIN_GROUP_SHOWN,
                           place_field=(state().fields.place_fields or ("",))[-1])


@bp.get("/groups/<int:group_id>")
def group(group_id: int) -> str:
    """One group: its reports, newest first."""
    ensure_index()
    row = book().db.execute("SELECT * FROM sim_groups WHERE id = ?", (group_id,)).fetchone()
    if row is None:
        abort(404)
    return render_template("casebook/group.html", group=row, members=similar_read.members(book(), group_id),
                           math=similar_read.describe_math(),
                           place_field=(state().fields.place_fields or ("",))[-1])


def similar_for_case(case_id: str) -> dict[str, Any]:
    """What the case page shows about similar reports (its group and nearest reports)."""
    if not ensure_index():
        return {"ready": False, "rows": [], "group": None}
    return {"ready": True, "rows": similar_read.similar_to(book(), case_id),
            "group": similar_read.group_of(book(), case_id), "math": similar_read.describe_math()}


# --- spikes -------------------------------------------------------------------------------------


@bp.get("/spikes")
def spikes_page() -> ResponseReturnValue:
    """Cells whose recent count is far above their own history, with the test in plain words;
    while they are being computed, a page that says so."""
    result = precomputer().get(book(), ("spikes",))
    html = render_template("casebook/spikes.html", result=result, s=spikes,
                           month_end=lambda m: spikes.month_add(m, 1) + "-01")
    return html if result is not None else _computing(html)


# --- charts -------------------------------------------------------------------------------------


def _labels() -> dict[str, Any]:
    from whistle.core.enums import Channel
    from whistle.workstation.casebook.web.labels import category_label, enum_label

    fields = state().fields
    place = fields.place_fields[0] if fields.place_fields else ""
    place_values = dict((k, v) for k, v, _ in cached(("choices", place),
                                                     lambda: answers.choices(book(), place))) if place else {}

    def place_label(key: str) -> str:
        if key == "\x00other":
            return str(gettext("Other places"))
        return fields.answer_label(place, place_values.get(key, key), _lang())

    return {
        "category": category_label, "channel": lambda v: enum_label(v, Channel), "place": place_label,
        "title_category_month": gettext("Reports per month, by category"),
        "title_category_week": gettext("Reports per week, by category"),
        "title_place_month": gettext("Reports per month, by %(place)s", place=fields.label(place, _lang())),
        "title_place_week": gettext("Reports per week, by %(place)s", place=fields.label(place, _lang())),
        "title_channel_month": gettext("Reports per month, by channel"),
        "title_channel_week": gettext("Reports per week, by channel"),
        "title_ack": gettext("Days to acknowledgement (deadline: 7 days)"),
        "title_feedback": gettext("Months to feedback (deadline: 3 months)"),
        "title_open": gettext("Open cases by age in days"),
        "note_ack": gettext("Reports received in the last 12 months. Acknowledged within 0 to 7 "
                            "days is on time."),
        "note_feedback": gettext("Reports received in the last 18 months. Feedback within 3 months "
                                 "is on time (counted here from the day received)."),
        "note_open": gettext("Cases not closed on the server at the last import."),
        "waiting": gettext("waiting, in time"), "waiting_late": gettext("waiting, overdue"),
        "cases": gettext("Cases"),
    }


def _chart(chart_id: str, period: str) -> tuple[Stamp, charts.Chart] | None:
    """One chart with its words and the stamp of the casebook state it shows, or None while its
    numbers are being computed."""
    if chart_id not in charts.CHART_IDS:
        abort(404)
    period = period if period in charts.PERIODS else "month"
    found = precomputer().lookup(book(), ("chart", chart_id, period))
    return None if found is None else (found[0], charts.labelled(found[1], _labels()))


def _not_yet() -> Response:
    response = Response(str(gettext("The charts are being computed: reload the page in a moment.")) + "\n",
                        status=503, mimetype="text/plain")
    response.headers["Retry-After"] = str(RELOAD_SECONDS)
    return response


@bp.get("/charts")
def charts_page() -> ResponseReturnValue:
    """Every chart as an image, with its numbers as a table and a CSV link; while the numbers are
    being computed, a page that says so."""
    period = request.args.get("period", "month")
    period = period if period in charts.PERIODS else "month"
    found = [_chart(chart_id, period) for chart_id in charts.CHART_IDS]
    computing = any(chart is None for chart in found)
    shown = [] if computing else [chart for _, chart in filter(None, found)]
    html = render_template("casebook/charts.html", charts=shown, period=period,
                           ids=charts.CHART_IDS, ready=_analysis_ready(), computing=computing)
    return _computing(html) if computing else html


@bp.get("/charts/<chart_id>.svg")
def chart_svg(chart_id: str) -> ResponseReturnValue:
    """One chart drawn as SVG (an image: no script, nothing from elsewhere)."""
    if not _analysis_ready():
        abort(404)
    period = request.args.get("period", "month")
    found = _chart(chart_id, period)
    if found is None:
        return _not_yet()
    stamp, chart = found
    data = precomputer().memo(stamp, ("svg", chart_id, period, _lang()), lambda: charts.svg(chart))
    response = Response(data, mimetype="image/svg+xml")
    response.headers["Content-Security-Policy"] = SVG_CSP
    return response


@bp.get("/charts/<chart_id>.csv")
def chart_csv(chart_id: str) -> ResponseReturnValue:
    """One chart's numbers as CSV (a download; formula-like cells neutralised)."""
    period = request.args.get("period", "month")
    found = _chart(chart_id, period)
    if found is None:
        return _not_yet()
    chart = found[1]
    response = Response("\ufeff" + charts.to_csv(chart), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{chart.id}.csv"'
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return response
