# SPDX-License-Identifier: AGPL-3.0-or-later
"""The whole round trip in a real headless Chromium (Debian's chromium and chromedriver): a source
files a report, the server exports it, the casebook imports it, the investigator reads, searches
and replies in the casebook's pages, ``casebook replies`` writes the replies file, the server
imports it, and the source reads the reply.

The source's side uses the JavaScript-off path (the form, the server sealing in memory): the
casebook's part is the same whichever path filed the report, and that path is the one every
browser has. The casebook's pages have no script at all; they are driven with JavaScript off too.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import LiveServer, Workstation, make_driver, stop_process

from whistle import cli
from whistle.core.replies import read_replies_file
from whistle.server.casework import import_replies
from whistle.server.db import make_engine, make_sessionmaker
from whistle.server.export import export_bundle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

@pytest.fixture
def drivers(tmp_path: Path) -> Iterator[list]:  # type: ignore[type-arg]
    made: list = []  # type: ignore[type-arg]
    yield made
    for driver in made:
        driver.quit()


def test_casebook_browser_round_trip(live_server: LiveServer, workstation: Workstation,
                                     tmp_path: Path, drivers: list) -> None:  # type: ignore[type-arg]
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    tag = secrets.token_hex(4)
    source = make_driver(tmp_path / "source", user_agent="Mozilla/5.0 whistle-casebook-source",
                         javascript=False)
    drivers.append(source)
    # A page read inside a wait may be replaced by the next one as it is read (a click does not
    # wait for the navigation it starts): read again.
    stale = (StaleElementReferenceException,)
    wait = WebDriverWait(source, 60, ignored_exceptions=stale)
    # 1. The source files a report (JavaScript off: the form).
    source.get(live_server.url + "/submit")
    Select(source.find_element(By.NAME, "category")).select_by_value("medication")
    source.find_element(By.NAME, "body").send_keys(
        f"En la farmacia del Hospital del Niño no entregan insulina desde marzo. Caso {tag}.")
    source.find_element(By.ID, "submit-button").click()
    # Read inside the wait: the form's answer may redirect once before the receipt is shown.
    phrase = wait.until(lambda d: d.find_element(By.ID, "receipt-passphrase").text)
    assert len(phrase.split()) >= 7

    # 2. The server exports; the casebook imports.
    engine = make_engine(live_server.app_config.database_url)
    bundle = tmp_path / "bundle.zip"
    export_bundle(make_sessionmaker(engine), bundle, unit_fingerprint="test")
    book = tmp_path / "casebook"
    keyargs = ["--key", str(workstation.key_file), "--passphrase-file", str(workstation.passphrase_file)]
    assert cli.main(["casebook", "import", str(bundle), *keyargs, "--casebook", str(book)]) == 0

    # 3. The investigator reads, searches and replies in the casebook's pages.
    log = tmp_path / "serve.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHISTLE_")} | {"PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "whistle.cli", "casebook", "serve", *keyargs,
                                 "--casebook", str(book)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        link = ""
        deadline = time.monotonic() + 30
        while not link:
            found = re.search(r"http://127\.0\.0\.1:\d+/login\?token=\S+", log.read_text())
            link = found.group(0) if found else ""
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        unit = make_driver(tmp_path / "unit", user_agent="Mozilla/5.0 whistle-casebook",
                           javascript=False)
        drivers.append(unit)
        unit.get(link)
        assert unit.find_element(By.TAG_NAME, "h1").text == "Casos"
        row = unit.find_element(By.CSS_SELECTOR, "table.cases tbody tr")
        assert "Medicamentos no entregados" in row.text and "Formulario sin JavaScript" in row.text
        # Search without accents or capitals, then open the case from the result.
        unit.find_element(By.CSS_SELECTOR, "nav.casebook a[href='/search']").click()
        box = unit.find_element(By.NAME, "q")
        box.send_keys("NINO insulina")
        box.submit()
        marks = [m.text for m in unit.find_elements(By.CSS_SELECTOR, "p.snippet mark")]
        assert "Niño" in marks and "insulina" in marks
        unit.find_element(By.CSS_SELECTOR, "ol.results a").click()
        WebDriverWait(unit, 30, ignored_exceptions=stale).until(
            lambda d: f"Caso {tag}." in d.find_element(By.CSS_SELECTOR, "ol.conversation").text)
        unit.find_element(By.ID, "reply-body").send_keys(f"Recibimos su denuncia {tag}. Estamos revisando.")
        unit.find_element(By.CSS_SELECTOR, "form.reply button[type=submit]").click()
        WebDriverWait(unit, 30, ignored_exceptions=stale).until(
            lambda d: any(s in d.find_element(By.TAG_NAME, "main").text
                          for s in ("Reply 1 sealed and signed", "Respuesta 1 sellada")))
        assert unit.find_elements(By.CSS_SELECTOR, "li.entry.reply")
    finally:
        stop_process(proc)

    # 4. Carried back: the replies file, imported on the server.
    replies = tmp_path / "usb" / "replies.json"
    replies.parent.mkdir()
    assert cli.main(["casebook", "replies", "--out", str(replies), "--casebook", str(book)]) == 0
    with make_sessionmaker(engine).begin() as db:
        assert import_replies(db, read_replies_file(replies), "alice",
                              workstation.signing_key.verify_key) == 1
    engine.dispose()

    # 5. The source comes back and reads the reply.
    source.get(live_server.url + "/followup")
    source.find_element(By.NAME, "passphrase").send_keys(phrase)
    source.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(lambda d: f"Recibimos su denuncia {tag}. Estamos revisando." in d.page_source)
