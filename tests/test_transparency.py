# SPDX-License-Identifier: AGPL-3.0-or-later
"""The transparency file (docs/protocol.md section 10) and the public page that shows it.

The reader refuses whatever the format does not allow (text beyond the documented codes, counts
below the threshold, dates finer than a month, a lone suppressed count); an administrator's
upload of such a file changes nothing; the page shows the figures in both languages as SVG and
tables, in real Chromium, and never a suppressed count.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from support import Account, LiveServer, investigator_login, page_text

from whistle.core.enums import DEFAULT_CATEGORIES
from whistle.core.transparency import OUTCOMES, TransparencyError, parse_transparency
from whistle.server import transparency as server_transparency
from whistle.server.models import AuditEntry

CATEGORIES = [code for code, _ in DEFAULT_CATEGORIES]
PROVINCES = ["guayas", "pichincha", "azuay"]
MONTHS = ["2025-11", "2025-12", "2026-01"]
THRESHOLD = 5
# Shown counts are distinctive numbers, so a test can tell each one on the page.
REPORTS = {
    ("2025-11", "poor_service"): 41, ("2025-11", "medication"): 57, ("2025-11", "corruption"): 23,
    ("2025-12", "poor_service"): 38, ("2025-12", "medication"): 62, ("2025-12", "irregularities"): 11,
    ("2026-01", "poor_service"): 44, ("2026-01", "medication"): 71, ("2026-01", "corruption"): 19,
}


def suppressed(row: dict[str, Any]) -> dict[str, Any]:
    return row | {"count": None, "suppressed": True}


def valid_doc(*, places: bool = True) -> dict[str, Any]:
    """A complete, valid file: every cell of the grid, secondary suppression respected."""
    series: list[dict[str, Any]] = []
    for month in MONTHS:
        shown = [(c, REPORTS[(month, c)]) for c in CATEGORIES if (month, c) in REPORTS]
        for code in CATEGORIES:
            row = {"kind": "reports", "month": month, "category": code}
            count = REPORTS.get((month, code))
            series.append(row | {"count": count} if count else suppressed(row))
        total = sum(n for _, n in shown) + 3  # the suppressed cells hold 3 between them
        for measure, count in (("received", total), ("ack_due", total), ("ack_in_time", total - 7),
                               ("feedback_due", total - 20 if month != "2026-01" else 0),
                               ("feedback_in_time", total - 31 if month != "2026-01" else 0)):
            row = {"kind": "timeliness", "month": month, "measure": measure}
            series.append(row | {"count": count} if count >= THRESHOLD else suppressed(row))
    for outcome, count in zip(OUTCOMES, (27, 13, 0, 9, 2, 6), strict=True):
        row = {"kind": "closed", "outcome": outcome}
        series.append(row | {"count": count} if count >= THRESHOLD else suppressed(row))
    if places:
        from whistle.core.questionnaire import load_questionnaire

        province = load_questionnaire(None).question("province")
        assert province is not None
        for option in province.options:
            row = {"kind": "places", "level": "province", "place": option.code}
            count = {"guayas": 88, "pichincha": 97, "azuay": 14}.get(option.code)
            series.append(row | {"count": count} if count else suppressed(row))
    return {"format": "whistle-transparency", "v": 1, "period": {"from": MONTHS[0], "to": MONTHS[-1]},
            "threshold": THRESHOLD, "published_on": "2026-02", "series": series}


def encode(doc: object) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def parse(raw: bytes):  # type: ignore[no-untyped-def]
    from whistle.core.questionnaire import load_questionnaire

    province = load_questionnaire(None).question("province")
    assert province is not None
    return parse_transparency(raw, categories=CATEGORIES, place_level="province",
                              place_codes=[o.code for o in province.options], current_month="2026-03")


def shown_counts(doc: dict[str, Any]) -> set[int]:
    return {row["count"] for row in doc["series"] if row["count"] is not None}


# --- The reader -------------------------------------------------------------------------------


def test_valid_file_is_read() -> None:
    t = parse(encode(valid_doc()))
    assert t.months == tuple(MONTHS) and t.threshold == THRESHOLD
    assert t.count("reports", "2025-12", "medication") == 62
    assert t.count("reports", "2025-12", "corruption") is None
    assert t.categories == tuple(CATEGORIES)
    assert t.count("places", "province", "pichincha") == 97


def _mutate(path: list[object], value: object) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return apply


DELETE = object()


def _row(kind: str, **match: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def find(doc: dict[str, Any]) -> dict[str, Any]:
        return next(r for r in doc["series"] if r["kind"] == kind
                    and all(r.get(k) == v for k, v in match.items()))
    return find


def _edit_row(row_kind: str, match: dict[str, str], **changes: object) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        row = _row(row_kind, **match)(doc)
        for key, value in changes.items():
            if value is DELETE:
                del row[key]
            else:
                row[key] = value
    return apply


MED_DEC = {"month": "2025-12", "category": "medication"}
HOSTILE: dict[str, Callable[[dict[str, Any]], None]] = {
    "extra top-level text": _mutate(["note"], "Informe del Hospital X"),
    "wrong format": _mutate(["format"], "whistle-replies"),
    "v as float": _mutate(["v"], 1.0),
    "v as bool": _mutate(["v"], True),
    "day in period": _mutate(["period", "from"], "2025-11-01"),
    "day in published_on": _mutate(["published_on"], "2026-02-03"),
    "timestamp in published_on": _mutate(["published_on"], "2026-02-03T10:00:00Z"),
    "month 13": _mutate(["period", "to"], "2026-13"),
    "period backwards": _mutate(["period", "from"], "2026-02"),
    "published in the future": _mutate(["published_on"], "2026-09"),
    "threshold 1": _mutate(["threshold"], 1),
    "threshold as text": _mutate(["threshold"], "5"),
    "count below threshold": _edit_row("reports", MED_DEC, count=4),
    "zero count shown": _edit_row("reports", MED_DEC, count=0),
    "count as float": _edit_row("reports", MED_DEC, count=62.0),
    "count as text": _edit_row("reports", MED_DEC, count="62"),
    "count as bool": _edit_row("reports", MED_DEC, count=True),
    "suppressed with a count": _edit_row("reports", MED_DEC, suppressed=True),
    "suppressed false": _edit_row("reports", MED_DEC, count=None, suppressed=False),
    "null without suppressed": _edit_row("reports", MED_DEC, count=None),
    "text in a row": _edit_row("reports", MED_DEC, note="la doctora García pidió dinero"),
    "free-text category": _edit_row("reports", MED_DEC, category="Hospital Carlos Andrade Marín"),
    "unknown category": _edit_row("reports", MED_DEC, category="fraud"),
    "day in a row's month": _edit_row("reports", MED_DEC, month="2025-12-05"),
    "month outside the period": _edit_row("reports", MED_DEC, month="2024-12"),
    "unknown kind": _edit_row("reports", MED_DEC, kind="comments"),
    "unknown measure": _edit_row("timeliness", {"month": "2025-12", "measure": "ack_due"},
                                 measure="median_days"),
    "unknown outcome": _edit_row("closed", {"outcome": "substantiated"}, outcome="fired"),
    "facility level place": _edit_row("places", {"place": "guayas"}, level="facility"),
    "free-text place": _edit_row("places", {"place": "guayas"}, place="Hospital Los Ceibos"),
    "missing grid cell": lambda doc: doc["series"].remove(_row("reports", **MED_DEC)(doc)),
    "duplicate row": lambda doc: doc["series"].append(dict(_row("reports", **MED_DEC)(doc))),
    "lone suppressed count": _edit_row("reports", {"month": "2025-12", "category": "corruption"},
                                       count=5, suppressed=DELETE),
    "shown counts exceed total": _edit_row("reports", MED_DEC, count=6200),
    "in time exceeds due": _edit_row("timeliness", {"month": "2025-11", "measure": "ack_in_time"},
                                     count=10_000),
    "missing outcome": lambda doc: doc["series"].remove(_row("closed", outcome="duplicate")(doc)),
    "series not a list": _mutate(["series"], {"reports": []}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_is_refused_with_one_line(name: str) -> None:
    doc = valid_doc()
    HOSTILE[name](doc)
    with pytest.raises(TransparencyError) as info:
        parse(encode(doc))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("raw", [
    b"", b"[]", b"\xff\xfe", b'{"format": "whistle-transparency", "format": "x"}',
    b'{"v": NaN}', b"[" * 100_000, b" " * (1024 * 1024 + 1),
])
def test_garbage_is_refused(raw: bytes) -> None:
    with pytest.raises(TransparencyError):
        parse(raw)


def test_places_are_refused_when_the_deployment_publishes_none() -> None:
    with pytest.raises(TransparencyError, match="level 'province' is not one this server publishes"):
        parse_transparency(encode(valid_doc()), categories=CATEGORIES, current_month="2026-03")
    parse_transparency(encode(valid_doc(places=False)), categories=CATEGORIES, current_month="2026-03")


# --- Upload and page --------------------------------------------------------------------------


@pytest.fixture
def admin_client(app: Flask, admin: Account) -> FlaskClient:
    client = app.test_client()
    assert investigator_login(client, admin).status_code == 303
    return client


def upload(client: FlaskClient, raw: bytes):  # type: ignore[no-untyped-def]
    page = client.get("/investigator/admin/transparency").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token
    return client.post("/investigator/admin/transparency", data={
        "csrf_token": token.group(1), "figures": (io.BytesIO(raw), "figures.json")},
        content_type="multipart/form-data")


def audit_actions(app: Flask) -> list[str]:
    with app.extensions["whistle"].sessions() as db:
        return [e.action for e in db.scalars(select(AuditEntry))]


def test_page_without_figures(client: FlaskClient) -> None:
    resp = client.get("/transparency")
    assert resp.status_code == 200
    assert "has not published any figures yet" in resp.get_data(as_text=True)


def test_upload_needs_an_administrator(app: Flask, investigator: Account) -> None:
    client = app.test_client()
    assert client.get("/investigator/admin/transparency").status_code in (302, 303, 401, 403)
    assert investigator_login(client, investigator).status_code == 303
    assert client.get("/investigator/admin/transparency").status_code == 403


def test_upload_publishes_and_hostile_upload_changes_nothing(
    app: Flask, admin_client: FlaskClient, client: FlaskClient
) -> None:
    good = encode(valid_doc())
    resp = upload(admin_client, good)
    assert resp.status_code == 303, resp.get_data(as_text=True)
    assert "transparency_upload" in audit_actions(app)
    stored = server_transparency.path_of(app.extensions["whistle"].config)
    assert stored.read_bytes() == good
    assert "62" in client.get("/transparency").get_data(as_text=True)
    for name in ("text in a row", "count below threshold", "day in published_on", "lone suppressed count"):
        doc = valid_doc()
        HOSTILE[name](doc)
        resp = upload(admin_client, encode(doc))
        assert resp.status_code == 400, name
        html = resp.get_data(as_text=True)
        # The investigator pages are in Spanish by default.
        assert "El archivo fue rechazado y las cifras publicadas no cambiaron." in html
        assert stored.read_bytes() == good, name
    assert audit_actions(app).count("transparency_upload") == 1
    assert list(stored.parent.glob(".transparency.json.*")) == []  # no temporary file left over


def test_a_file_broken_on_disk_is_not_shown(app: Flask, client: FlaskClient) -> None:
    stored = server_transparency.path_of(app.extensions["whistle"].config)
    doc = valid_doc()
    HOSTILE["count below threshold"](doc)
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(encode(doc))
    html = client.get("/transparencia").get_data(as_text=True)
    assert "62" not in page_text(html)


def _publish(app: Flask, doc: dict[str, Any]) -> None:
    server_transparency.accept(app.extensions["whistle"].config, encode(doc))


@pytest.mark.parametrize(("path", "lang", "texts"), [
    ("/transparencia", "es", ["noviembre de 2025", "enero de 2026", "Medicamentos no entregados",
                              "Pichincha"]),
    ("/transparency", "en", ["November 2025", "January 2026", "Medication not delivered",
                             "fewer than 5", "Share of reports acknowledged within 7 days",
                             "Substantiated", "Pichincha"]),
])
def test_page_in_both_languages(app: Flask, client: FlaskClient, path: str, lang: str,
                                texts: list[str]) -> None:
    _publish(app, valid_doc())
    resp = client.get(path)
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert f'<html lang="{lang}">' in html
    text = " ".join(page_text(html).split())
    for expected in texts:
        assert expected in text, expected
    assert html.count("<svg") >= len(CATEGORIES) + 3
    assert "<script" not in html
    assert 'id="reports-table"' in html and 'id="places-table"' in html


def test_language_menu_goes_to_the_other_address(client: FlaskClient) -> None:
    html = client.get("/transparencia").get_data(as_text=True)
    assert 'href="?lang=en"' in html
    resp = client.get("/transparencia?lang=en")
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/transparency")
    resp = client.get("/transparency?lang=es")
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/transparencia")


def test_no_suppressed_count_is_ever_shown(app: Flask, client: FlaskClient) -> None:
    doc = valid_doc()
    _publish(app, doc)
    html = client.get("/transparency").get_data(as_text=True)
    allowed = shown_counts(doc)
    # Table cells: a shown count, a share, a dash, or "fewer than 5" — nothing else.
    for cell in re.findall(r"<td[^>]*>([^<]*)</td>", html):
        cell = cell.strip()
        if cell.isdigit():
            assert int(cell) in allowed, cell
        else:
            assert cell in ("fewer than 5", "—") or re.fullmatch(r"\d{1,3}\s?%", cell), cell
    # Charts: a suppressed count is a hollow mark, never a bar or a number.
    for svg in re.findall(r"<svg.*?</svg>", html, flags=re.DOTALL):
        for title in re.findall(r"<title>([^<]*)</title>", svg):
            # Without years, shares and the threshold, only shown counts may be left.
            text = re.sub(r"\b20\d\d\b|\d+ ?%|fewer than 5|a count below 5", "", title)
            for number in re.findall(r"\d+", text):
                assert int(number) in allowed, (title, number)
        for label in re.findall(r'fill="#222222">([\d.]+)</text>', svg):
            assert int(label) in allowed, label
    # Every suppressed row of the file is drawn as a suppressed mark or written "fewer than 5".
    suppressed_rows = sum(1 for r in doc["series"] if r["count"] is None)
    assert html.count("fewer than 5") >= suppressed_rows
    assert html.count('class="suppressed"') >= suppressed_rows


def test_live_timeliness_is_not_invented(app: Flask, client: FlaskClient) -> None:
    """A share is shown only where both of its counts are (January's answers are not due)."""
    _publish(app, valid_doc())
    html = client.get("/transparency").get_data(as_text=True)
    rows = re.findall(r"<tr><th scope=\"row\">Jan 2026</th>(.*?)</tr>", html)
    timeliness = [r for r in rows if r.count("<td") == 7]
    assert timeliness, rows
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", timeliness[0])
    assert cells[-1] == "—" and cells[-2] == "fewer than 5" and cells[-3] == "fewer than 5"


def test_server_timeliness_from_its_own_records(app: Flask, client: FlaskClient) -> None:
    """The server's own figures: shares only, from the days it recorded, hidden below the
    threshold."""
    import datetime as dt

    from support import post_form

    from whistle.server.models import Report
    from whistle.server.transparency import live_timeliness, months_until

    for n in range(6):
        assert post_form(client, f"Denuncia {n}", []).status_code == 200
    state = app.extensions["whistle"]
    with state.sessions.begin() as db:
        reports = list(db.scalars(select(Report)))
        for report in reports[:5]:
            report.acknowledged_on = report.received_on + dt.timedelta(days=2)
        received = reports[0].received_on
    later = received + dt.timedelta(days=200)
    month = f"{received.year:04d}-{received.month:02d}"
    (row,) = live_timeliness(state, (month,), 5, today=later)
    assert row.ack == pytest.approx(5 / 6) and row.feedback == 0.0
    (row,) = live_timeliness(state, (month,), 7, today=later + dt.timedelta(days=1))
    assert row.ack is None and row.feedback is None  # 6 due: below a threshold of 7
    (row,) = live_timeliness(state, (month,), 5, today=received)
    assert row.ack is None and row.feedback is None  # nothing due yet
    assert months_until(3, dt.date(2026, 1, 15)) == ("2025-11", "2025-12", "2026-01")
    html = client.get("/transparency").get_data(as_text=True)
    assert 'id="live-table"' in html and "<script" not in html


# --- Real Chromium ----------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize(("path", "lang", "heading"), [
    ("/transparencia", "es", "Medicamentos no entregados"),
    ("/transparency", "en", "Medication not delivered"),
])
def test_page_renders_in_chromium(live_server: LiveServer, tmp_path: Path, path: str, lang: str,
                                  heading: str) -> None:
    from selenium.webdriver.common.by import By
    from support import make_driver

    server_transparency.accept(live_server.app_config, encode(valid_doc()))
    driver = make_driver(tmp_path / lang, user_agent="Mozilla/5.0 (transparency test)", javascript=False)
    try:
        driver.set_window_size(1200, 900)
        driver.get(live_server.url + path)
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang
        assert heading in driver.find_element(By.TAG_NAME, "main").text
        charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
        assert len(charts) >= len(CATEGORIES) + 3
        for chart in charts:  # drawn: each SVG has a size and its bars are laid out
            assert chart.size["width"] > 100 and chart.size["height"] > 50
        bars = driver.find_elements(By.CSS_SELECTOR, "svg.chart rect")
        assert len(bars) >= len(REPORTS) and all(b.size["height"] > 0 for b in bars[:5])
        tables = driver.find_elements(By.CSS_SELECTOR, "table.figures")
        assert len(tables) == 5 and all(t.is_displayed() for t in tables)
        # The page's CSP blocked nothing (no script, no inline style in the SVG).
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                  and "favicon.ico" not in e["message"]]
        assert errors == [], errors
        driver.set_window_size(1200, int(driver.execute_script("return document.body.scrollHeight")))
        driver.save_screenshot(str(tmp_path / f"transparency-{lang}.png"))
        if os.environ.get("WHISTLE_SCREENSHOT_DIR"):
            shutil.copy(tmp_path / f"transparency-{lang}.png", os.environ["WHISTLE_SCREENSHOT_DIR"])
    finally:
        driver.quit()
