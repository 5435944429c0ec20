# SPDX-License-Identifier: AGPL-3.0-or-later
"""The structured questions on the submission page (whistle/server/web/source/questions.py):
WHISTLE_QUESTIONNAIRE refused at start with one line, the JavaScript-off form in both languages,
answers validated on the server and sealed as the envelope's ``fields`` — only the chosen
category's, never anywhere but inside the sealed envelope."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from support import Workstation, make_app, page_text, post_form

from whistle.core.crypto import open_envelope
from whistle.server.blobstore import read_bytes
from whistle.server.config import ConfigError, load_config
from whistle.server.models import Item


def stored_envelopes(app: Flask, workstation: Workstation) -> list:  # type: ignore[type-arg]
    with app.extensions["whistle"].sessions() as db:
        return [open_envelope(read_bytes(db, item.envelope_blob_id), workstation.secret_key)
                for item in db.scalars(select(Item))]


def test_default_questionnaire_is_loaded(app: Flask) -> None:
    q = app.extensions["whistle"].config.questionnaire
    assert q.place_fields == ("province", "facility")


@pytest.mark.parametrize(("text", "fragment"), [
    ("format = 7\n", "format = 1 is required"),
    ("format = 1\n[[question]]\nid = \"x\"\ntype = \"text\"\ncategories = [\"nope\"]\n"
     "label = { es = \"X\", en = \"X\" }\n", "'nope' is not one of the deployment's categories"),
])
def test_bad_questionnaire_refuses_to_start_with_one_line(
    environ: dict[str, str], tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "questions.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(environ | {"WHISTLE_QUESTIONNAIRE": str(path)}, cwd=tmp_path)
    assert str(info.value).startswith("WHISTLE_QUESTIONNAIRE: questionnaire ")
    assert fragment in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(environ | {"WHISTLE_QUESTIONNAIRE": "absent.toml"}, cwd=tmp_path)


def test_bad_questionnaire_refuses_to_start_the_process(environ: dict[str, str], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "questions.toml"
    path.write_text("format = 1\n[[question]]\nid = \"Bad\"\n", encoding="utf-8")
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", "import wsgi"], cwd=repo, capture_output=True, text=True, timeout=60,
        env=os.environ | environ | {"WHISTLE_QUESTIONNAIRE": str(path)}, check=False,
    )
    assert proc.returncode != 0
    assert "WHISTLE_QUESTIONNAIRE: questionnaire" in proc.stderr
    assert "id must match" in proc.stderr


@pytest.mark.parametrize(("lang", "heading", "only", "province"), [
    ("es", "Más detalles (opcional)", "Solo para: Medicamentos no entregados", "Provincia donde ocurrió"),
    ("en", "More details (optional)", "Only for: Medication not delivered", "Province where it happened"),
])
def test_form_shows_the_questions_in_both_languages(
    client: FlaskClient, lang: str, heading: str, only: str, province: str
) -> None:
    html = client.get(f"/submit?lang={lang}").get_data(as_text=True)
    text = " ".join(page_text(html).split())
    assert province in text
    assert 'name="q_province"' in html and 'name="q_facility"' in html and 'name="q_month"' in html
    assert 'name="q_medication"' in html and 'name="q_money_demanded"' in html
    assert '<option value="pichincha">Pichincha</option>' in html
    assert re.search(r'<datalist id="q_facility-list"><option value="Hospital de Especialidades '
                     r"Carlos Andrade Marín \(Quito\)\">", html)
    assert 'data-categories="medication"' in html
    assert 'data-categories="irregularities corruption"' in html
    if lang == "es":  # the Spanish catalogue may lag behind while the project is being built
        assert province in text
    else:
        assert heading in text and only in text
    # The questions follow the free text: it stays the heart of the report.
    assert html.index('name="body"') < html.index('name="q_province"')
    assert "<script>" not in html


def test_form_answers_are_sealed_as_fields(
    app: Flask, client: FlaskClient, workstation: Workstation
) -> None:
    resp = post_form(client, "No había metformina.", [], category="medication",
                     q_province="pichincha", q_facility=" Hospital General Quito Sur ",
                     q_month="2026-01", q_medication="Metformina 850 mg", q_money_demanded="yes")
    assert resp.status_code == 200, resp.get_data(as_text=True)[:2000]
    (envelope,) = stored_envelopes(app, workstation)
    # The chosen category's answers, trimmed, in questionnaire order; the answer to a question
    # of other categories (money demanded: corruption, irregularities) is not kept.
    assert list(envelope.fields) == [
        ("province", "pichincha"), ("facility", "Hospital General Quito Sur"),
        ("month", "2026-01"), ("medication", "Metformina 850 mg"),
    ]
    assert envelope.body == "No había metformina."


def test_form_without_answers_has_no_fields(
    app: Flask, client: FlaskClient, workstation: Workstation
) -> None:
    resp = post_form(client, "Sin detalles.", [], category="other", q_province="", q_month="")
    assert resp.status_code == 200
    (envelope,) = stored_envelopes(app, workstation)
    assert envelope.fields == () and envelope.answers == {}
    assert envelope.version == 2


@pytest.mark.parametrize(("field", "value"), [
    ("q_province", "atlantis"),
    ("q_month", "2026-14"),
    ("q_month", "2026-01-15"),
    ("q_facility", "x" * 201),
    ("q_money_demanded", "maybe"),
])
def test_bad_answer_shows_the_form_again_and_files_nothing(
    app: Flask, client: FlaskClient, workstation: Workstation, field: str, value: str
) -> None:
    resp = post_form(client, "Texto que no se pierde.", [], category="corruption",
                     follow=False, **{field: value, "q_province": "guayas"} if field != "q_province"
                     else {field: value})
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert "Texto que no se pierde." in html  # the source's text is kept
    assert 'aria-invalid="true"' in html
    assert stored_envelopes(app, workstation) == []
    if field != "q_province":  # the other answers are kept too
        assert '<option value="guayas" selected>' in html


def test_answers_are_never_in_the_database_in_clear(
    app: Flask, client: FlaskClient, config: object
) -> None:
    marker = "Hospital Marcador Único 4711"
    assert post_form(client, "x", [], category="medication", q_facility=marker).status_code == 200
    database = Path(app.extensions["whistle"].config.data_dir)
    for path in database.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path


def test_deployment_questionnaire_replaces_the_default(
    environ: dict[str, str], tmp_path: Path, workstation: Workstation
) -> None:
    path = tmp_path / "q.toml"
    path.write_text("""format = 1
[[question]]
id = "office"
type = "choice"
role = "place"
level = "province"
categories = ["corruption"]
label = { es = "Oficina", en = "Office" }
options = [ { code = "north", label = { es = "Norte", en = "North" } } ]
""", encoding="utf-8")
    app = make_app(environ | {"WHISTLE_QUESTIONNAIRE": str(path)}, tmp_path)
    client = app.test_client()
    html = client.get("/submit?lang=en").get_data(as_text=True)
    assert 'name="q_office"' in html and 'name="q_province"' not in html
    assert post_form(client, "x", [], category="corruption", q_office="north").status_code == 200
    (envelope,) = stored_envelopes(app, workstation)
    assert envelope.answers == {"office": "north"}


# --- Real Chromium: the answers are sealed with JavaScript on and off --------------------------


def _live_envelopes(live_server, workstation: Workstation) -> list:  # type: ignore[no-untyped-def,type-arg]
    from whistle.server.db import make_engine, make_sessionmaker

    engine = make_engine(live_server.app_config.database_url)
    try:
        with make_sessionmaker(engine)() as db:
            return [(item.channel, open_envelope(read_bytes(db, item.envelope_blob_id),
                                                 workstation.secret_key))
                    for item in db.scalars(select(Item))]
    finally:
        engine.dispose()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_browser_answers_travel_sealed(live_server, workstation: Workstation, tmp_path: Path,  # type: ignore[no-untyped-def]
                                       javascript: bool) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait
    from support import make_driver

    driver = make_driver(tmp_path, user_agent="Mozilla/5.0 (questions test)", javascript=javascript)
    try:
        driver.get(live_server.url + "/submit?lang=en")
        wait = WebDriverWait(driver, 90)
        if javascript:
            wait.until(lambda d: d.execute_script("return document.documentElement.dataset.whistleJs")
                       in ("ready", "error"))
            # With script, a category's own questions appear only once it is chosen.
            assert not driver.find_element(By.NAME, "q_medication").is_displayed()
        else:
            assert driver.find_element(By.NAME, "q_medication").is_displayed()
        Select(driver.find_element(By.NAME, "category")).select_by_value("medication")
        assert driver.find_element(By.NAME, "q_medication").is_displayed()
        if javascript:
            assert not driver.find_element(By.NAME, "q_money_demanded").is_displayed()
        else:  # shown, under its heading; its answer is not kept for this category
            Select(driver.find_element(By.NAME, "q_money_demanded")).select_by_value("yes")
        driver.find_element(By.NAME, "body").send_keys("No entregan insulina.")
        Select(driver.find_element(By.NAME, "q_province")).select_by_value("guayas")
        driver.find_element(By.NAME, "q_facility").send_keys("Hospital General Milagro")
        driver.execute_script("arguments[0].value = '2026-01'", driver.find_element(By.NAME, "q_month"))
        driver.find_element(By.NAME, "q_medication").send_keys("Insulina NPH")
        driver.find_element(By.ID, "submit-button").click()
        wait.until(ec.visibility_of_element_located((By.ID, "receipt-passphrase")))
    finally:
        driver.quit()
    ((channel, envelope),) = _live_envelopes(live_server, workstation)
    assert channel == ("browser" if javascript else "server-form")
    assert envelope.fields == (("province", "guayas"), ("facility", "Hospital General Milagro"),
                               ("month", "2026-01"), ("medication", "Insulina NPH"))
