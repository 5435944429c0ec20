# SPDX-License-Identifier: AGPL-3.0-or-later
"""A real headless Chromium files reports against a real server; the unit decrypts them.

Debian's /usr/bin/chromium driven by /usr/bin/chromedriver through Selenium; nothing downloads a
browser. Without them the tests skip, unless WHISTLE_REQUIRE_BROWSER=1 (set by .ci/run), where a
missing browser is a failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from support import LiveServer, Workstation, find_needles, report_folders

from whistle.server.db import make_engine, make_sessionmaker
from whistle.server.export import export_bundle
from whistle.server.models import Report
from whistle.workstation.decrypt import decrypt_bundle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser_or_skip() -> None:
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    message = "Debian's chromium and chromium-driver are not installed"
    if os.environ.get("WHISTLE_REQUIRE_BROWSER") == "1":
        pytest.fail(message + " (WHISTLE_REQUIRE_BROWSER=1)")
    pytest.skip(message)


def make_driver(tmp_path: Path, *, user_agent: str, javascript: bool = True, wasm: bool = True):  # type: ignore[no-untyped-def]
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome-profile'}",
                f"--user-agent={user_agent}"):
        options.add_argument(arg)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    if not wasm:
        # What Tor Browser's "Safer" level does: no WebAssembly, so libsodium.js must fall back
        # to pure JavaScript. Removed before any page script runs.
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                               {"source": "delete globalThis.WebAssembly;"})
    return driver


@pytest.fixture
def canary() -> dict[str, str]:
    tag = secrets.token_hex(6)
    return {"body": f"CANARY-BROWSER-BODY-{tag}", "file": f"CANARY-BROWSER-FILE-{tag}",
            "ua": f"Mozilla/5.0 CANARY-UA-{tag}"}


def _file_to_attach(tmp_path: Path, canary: dict[str, str]) -> tuple[Path, bytes]:
    path = tmp_path / "uploads" / "acta de entrega ñ.pdf"
    path.parent.mkdir()
    data = (canary["file"].encode() + os.urandom(1000)) * 150  # ~155 KB: three stream chunks
    path.write_bytes(data)
    return path, data


def _fill_and_send(driver, live_server: LiveServer, canary: dict[str, str], attach: Path,  # type: ignore[no-untyped-def]
                   *, wait_for_js: bool) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(live_server.url + "/submit")
    wait = WebDriverWait(driver, 60)
    if wait_for_js:
        wait.until(lambda d: d.execute_script("return document.documentElement.dataset.whistleJs")
                   in ("ready", "error"))
        assert driver.execute_script("return document.documentElement.dataset.whistleJs") == "ready"
    Select(driver.find_element(By.NAME, "category")).select_by_value("medication")
    driver.find_element(By.NAME, "body").send_keys(
        f"No entregan insulina en la farmacia del hospital.\nSegunda línea. {canary['body']}")
    driver.find_element(By.NAME, "attachments").send_keys(str(attach))
    driver.find_element(By.ID, "submit-button").click()
    code = wait.until(ec.visibility_of_element_located((By.ID, "receipt-passphrase")))
    wait.until(lambda d: len(code.text.split()) == 7)
    return str(code.text)


def _export_and_decrypt(live_server: LiveServer, ws: Workstation, tmp_path: Path) -> list[Path]:
    engine = make_engine(live_server.app_config.database_url)
    bundle = tmp_path / "bundle.zip"
    export_bundle(make_sessionmaker(engine), bundle, unit_fingerprint="test")
    engine.dispose()
    decrypt_bundle(bundle, ws.secret_key, tmp_path / "out")
    return report_folders(tmp_path / "out")


def _channels(live_server: LiveServer) -> list[str]:
    engine = make_engine(live_server.app_config.database_url)
    with make_sessionmaker(engine)() as session:
        result = list(session.scalars(select(Report.channel)))
    engine.dispose()
    return result


@pytest.fixture
def driver_factory(tmp_path: Path) -> Iterator[list]:  # type: ignore[type-arg]
    drivers: list = []  # type: ignore[type-arg]
    yield drivers
    for driver in drivers:
        driver.quit()


@pytest.mark.parametrize("wasm", [True, False], ids=["webassembly", "pure-js"])
def test_browser_encrypts_report_and_unit_decrypts_it(
    live_server: LiveServer, workstation: Workstation, tmp_path: Path, canary: dict[str, str],
    driver_factory: list, wasm: bool  # type: ignore[type-arg]
) -> None:
    driver = make_driver(tmp_path, user_agent=canary["ua"], wasm=wasm)
    driver_factory.append(driver)
    attach, data = _file_to_attach(tmp_path, canary)
    phrase = _fill_and_send(driver, live_server, canary, attach, wait_for_js=True)
    assert not driver.find_element("id", "submit-form").is_displayed()
    has_wasm = driver.execute_script("return typeof WebAssembly") != "undefined"
    assert has_wasm == wasm

    assert _channels(live_server) == ["browser"]
    (folder,) = _export_and_decrypt(live_server, workstation, tmp_path)
    text = (folder / "report.txt").read_text(encoding="utf-8")
    assert "Category: medication" in text and "Channel: Browser (encrypted in the browser" in text
    assert f"No entregan insulina en la farmacia del hospital.\nSegunda línea. {canary['body']}" in text
    assert (folder / "attachments" / attach.name).read_bytes() == data

    needles = {"report text": canary["body"].encode(), "file": canary["file"].encode(),
               "User-Agent": canary["ua"].encode(), "passphrase": phrase.encode(),
               "file name": attach.name.encode()}
    assert find_needles(live_server.written_files(), needles) == []


def test_browser_without_javascript_server_seals_report(
    live_server: LiveServer, workstation: Workstation, tmp_path: Path, canary: dict[str, str],
    driver_factory: list  # type: ignore[type-arg]
) -> None:
    driver = make_driver(tmp_path, user_agent=canary["ua"], javascript=False)
    driver_factory.append(driver)
    attach, data = _file_to_attach(tmp_path, canary)
    phrase = _fill_and_send(driver, live_server, canary, attach, wait_for_js=False)

    assert _channels(live_server) == ["server-form"]
    (folder,) = _export_and_decrypt(live_server, workstation, tmp_path)
    text = (folder / "report.txt").read_text(encoding="utf-8")
    assert "Channel: Form without JavaScript (encrypted in server memory" in text
    # The form path normalises CRLF to LF, as the browser's script does.
    assert f"No entregan insulina en la farmacia del hospital.\nSegunda línea. {canary['body']}" in text
    assert (folder / "attachments" / attach.name).read_bytes() == data

    needles = {"report text": canary["body"].encode(), "file": canary["file"].encode(),
               "User-Agent": canary["ua"].encode(), "passphrase": phrase.encode()}
    assert find_needles(live_server.written_files(), needles) == []


def test_browser_followup_roundtrip_reply_and_answer(
    live_server: LiveServer, workstation: Workstation, tmp_path: Path, canary: dict[str, str],
    driver_factory: list  # type: ignore[type-arg]
) -> None:
    """File a report, get a reply from the unit, read it in the browser, answer with a file."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from whistle.core.crypto import UnitPublicKey
    from whistle.core.replies import seal_reply
    from whistle.server.casework import import_replies

    driver = make_driver(tmp_path, user_agent=canary["ua"])
    driver_factory.append(driver)
    attach, _ = _file_to_attach(tmp_path, canary)
    phrase = _fill_and_send(driver, live_server, canary, attach, wait_for_js=True)

    # The unit reads the report offline and seals a reply to the source's key from the bundle.
    (folder,) = _export_and_decrypt(live_server, workstation, tmp_path)
    reply_canary = f"CANARY-REPLY-{secrets.token_hex(6)}"
    engine = make_engine(live_server.app_config.database_url)
    with make_sessionmaker(engine).begin() as db:
        report = db.get(Report, folder.name)
        assert report is not None
        sealed = seal_reply(f"Gracias por su denuncia. {reply_canary}", report.id,
                            UnitPublicKey(report.source_public_key), workstation.signing_key)
        import_replies(db, [sealed], "alice", workstation.signing_key.verify_key)
    engine.dispose()

    # The source comes back, with the passphrase typed sloppily, and reads the reply.
    driver.get(live_server.url + "/followup")
    driver.find_element(By.NAME, "passphrase").send_keys("  " + phrase.upper() + " ")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: reply_canary in d.page_source)
    wait.until(lambda d: d.execute_script("return document.documentElement.dataset.whistleJs") == "ready")

    # ... and answers, with a file, encrypted in the browser.
    answer_canary = f"CANARY-ANSWER-{secrets.token_hex(6)}"
    answer_file = tmp_path / "uploads" / "factura.txt"
    answer_file.write_bytes(answer_canary.encode() * 3000)
    driver.find_element(By.NAME, "body").send_keys(f"Fue el lunes. {answer_canary}")
    driver.find_element(By.NAME, "attachments").send_keys(str(answer_file))
    driver.find_element(By.ID, "submit-button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".conversation .entry.message"))

    engine = make_engine(live_server.app_config.database_url)
    with make_sessionmaker(engine)() as db:
        from whistle.server.models import Item

        message = db.scalars(select(Item).where(Item.kind == "message")).one()
        assert message.channel == "browser"
    engine.dispose()
    out = tmp_path / "out2"
    bundle = tmp_path / "bundle2.zip"
    engine = make_engine(live_server.app_config.database_url)
    export_bundle(make_sessionmaker(engine), bundle, unit_fingerprint="test")
    engine.dispose()
    decrypt_bundle(bundle, workstation.secret_key, out)
    (folder2,) = report_folders(out)
    (msg_file,) = folder2.glob("message-*.txt")
    assert f"Fue el lunes. {answer_canary}" in msg_file.read_text(encoding="utf-8")
    assert (folder2 / "attachments" / "factura.txt").read_bytes() == answer_file.read_bytes()

    needles = {"reply": reply_canary.encode(), "answer": answer_canary.encode(),
               "passphrase": phrase.encode(), "User-Agent": canary["ua"].encode()}
    assert find_needles(live_server.written_files(), needles) == []


def test_browser_page_scripts_take_api_addresses_from_the_page(
    live_server: LiveServer, tmp_path: Path, canary: dict[str, str], driver_factory: list  # type: ignore[type-arg]
) -> None:
    """submit.js and pow.js know no route: the form's data- attributes (url_for) give them. A proof
    of work fetched through the form's data-pow-url solves; without an address pow.js refuses
    (the form then posts without one, as with JavaScript off) instead of guessing a path."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver = make_driver(tmp_path, user_agent=canary["ua"])
    driver_factory.append(driver)
    driver.get(live_server.url + "/submit")
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.documentElement.dataset.whistleJs") == "ready")
    urls = driver.execute_script(
        "var f = document.getElementById('submit-form');"
        "return [f.dataset.unitKeyUrl, f.dataset.uploadUrl, f.dataset.powUrl];")
    assert urls == ["/api/v1/unit-key", "/api/v1/reports", "/api/v1/pow"]
    driver.set_script_timeout(60)
    token, refused = driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "var url = document.getElementById('submit-form').dataset.powUrl;"
        "window.whistlePow.token('submit', url).then(function (t) {"
        "  window.whistlePow.token('submit', '').then(function () { done([t, false]); },"
        "                                          function () { done([t, true]); });"
        "}, function (err) { done(['error: ' + err, false]); });")
    assert token.count(".") == 1 and token.rsplit(".", 1)[1].isdigit(), token
    assert refused
