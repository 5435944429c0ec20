# SPDX-License-Identifier: AGPL-3.0-or-later
"""A real headless Chromium files reports against a real server; the unit decrypts them.

Debian's /usr/bin/chromium driven by /usr/bin/chromedriver through Selenium; nothing downloads a
browser. Without them the tests skip, unless WHISTLE_REQUIRE_BROWSER=1 (set by .ci/run), where a
missing browser is a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from support import LiveServer, Workstation, find_needles, make_driver, report_folders

from whistle.server.db import make_engine, make_sessionmaker
from whistle.server.export import export_bundle
from whistle.server.models import Report
from whistle.workstation.decrypt import decrypt_bundle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

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
    wait.until(lambda d: len(code.text.split()) == 8)  # Spanish: 8 words (protocol.md section 4)
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
    assert "Category: Medication not delivered" in text
    assert "Channel: Browser (encrypted in the browser" in text
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
    """The page scripts know no route and no static path: the script element's data- attributes
    (url_for) give the API addresses and the worker's script URLs. A proof of work fetched through
    data-pow-url solves in the worker; without an address it is refused (the request then goes
    without one, as with JavaScript off) instead of guessing a path. No page loads libsodium."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver = make_driver(tmp_path, user_agent=canary["ua"])
    driver_factory.append(driver)
    driver.get(live_server.url + "/submit")
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.documentElement.dataset.whistleJs") == "ready")
    urls = driver.execute_script(
        "var d = document.getElementById('whistle-js').dataset;"
        "return [d.unitKeyUrl, d.paramsUrl, d.powUrl, d.loginUrl, d.worker, d.sodium, d.wrappers,"
        "        document.getElementById('submit-form').dataset.uploadUrl];")
    assert urls[:4] == ["/api/v1/unit-key", "/api/v1/params", "/api/v1/pow", "/api/v1/login"]
    assert urls[4].startswith("/static/js/crypto-worker") and "libsodium-sumo" in urls[5]
    assert urls[7] == "/api/v1/reports"
    scripts = driver.execute_script(
        "return Array.from(document.scripts).map(function (s) { return s.src; });")
    assert not [src for src in scripts if "libsodium" in src], scripts
    assert driver.execute_script("return typeof window.sodium") == "undefined"
    driver.set_script_timeout(60)
    token, refused = driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "var url = document.getElementById('whistle-js').dataset.powUrl;"
        "whistlePage.proofOfWork('submit', url).then(function (t) {"
        "  var old = document.getElementById('whistle-js').dataset.powUrl;"
        "  document.getElementById('whistle-js').dataset.powUrl = '';"
        "  whistlePage.proofOfWork('submit', '').then(function () { done([t, false]); },"
        "                                           function () { done([t, true]); });"
        "}, function (err) { done(['error: ' + err, false]); });")
    assert token.count(".") == 1 and token.rsplit(".", 1)[1].isdigit(), token
    assert refused


# The two screens of issue 11: a laptop browser window and a phone.
VIEWPORTS = {"desktop": (1265, 757), "phone": (390, 844)}


def _set_viewport(driver, size: str) -> None:  # type: ignore[no-untyped-def]
    """The page's viewport exactly ``size`` (CSS pixels), a touch phone's for "phone"."""
    width, height = VIEWPORTS[size]
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": size == "phone"})


def _in_viewport(driver, element_id: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return driver.execute_script(  # type: ignore[no-any-return]
        "var r = document.getElementById(arguments[0]).getBoundingClientRect();"
        "return {top: r.top, bottom: r.bottom, height: r.height, view: window.innerHeight};",
        element_id)


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_browser_upload_progress_in_view_with_bytes_and_time_left(
    live_server: LiveServer, tmp_path: Path, canary: dict[str, str], driver_factory: list,  # type: ignore[type-arg]
    size: str
) -> None:
    """While a report with a 4 MB file goes up a throttled link, the status and the bar are inside
    the viewport (not below the fold, under the button), and the status says how many bytes have
    been sent of how many, then how long is left."""
    import re

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    driver = make_driver(tmp_path, user_agent=canary["ua"])
    driver_factory.append(driver)
    _set_viewport(driver, size)
    attach = tmp_path / "grabacion.bin"
    attach.write_bytes(os.urandom(4_000_000))
    driver.get(live_server.url + "/submit?lang=en")
    wait = WebDriverWait(driver, 30, poll_frequency=0.05)
    wait.until(lambda d: d.execute_script("return document.documentElement.dataset.whistleJs") == "ready")
    Select(driver.find_element(By.NAME, "category")).select_by_value("medication")
    driver.find_element(By.NAME, "body").send_keys("Faltan medicamentos desde marzo.")
    driver.find_element(By.NAME, "attachments").send_keys(str(attach))
    # 1.5 MB/s up: the upload takes about three seconds, long enough to watch.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": 50_000_000,
        "uploadThroughput": 1_500_000})
    driver.find_element(By.ID, "submit-button").click()

    status = driver.find_element(By.ID, "js-status")
    uploading = status.get_attribute("data-msg-uploading")
    left = str(status.get_attribute("data-msg-left")).split("{left}")[0]
    sent = re.compile(r"(\d+\.\d) MB of (\d+\.\d) MB")

    def sending(d) -> bool:  # type: ignore[no-untyped-def]
        text = status.text
        match = sent.search(text)
        return bool(text.startswith(uploading) and match and 0 < float(match.group(1)) < 4.0)

    wait.until(sending)
    for element in ("js-status", "upload-progress"):
        box = _in_viewport(driver, element)
        assert box["height"] > 0 and box["top"] >= 0 and box["bottom"] <= box["view"], (element, box)
    assert driver.find_element(By.ID, "upload-progress").is_displayed()
    match = sent.search(status.text)
    assert match and 4.0 <= float(match.group(2)) < 4.2  # the ciphertext: 4 MB and a little
    wait.until(lambda d: left in status.text and sending(d))
    assert re.search(r"\d+ (s|min)", status.text.split(left, 1)[1])
    box = _in_viewport(driver, "js-status")
    assert box["top"] >= 0 and box["bottom"] <= box["view"], box


def _seven_average_words_px(driver) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(the width of seven words of average length in the passphrase box's own font, the width
    inside the box): the English list's words average seven letters, the Spanish list's six."""
    from whistle.core.passphrase import wordlist

    words = wordlist("en")
    average = round(sum(map(len, words)) / len(words))
    sample = " ".join([w for w in words if len(w) == average][:7])
    return driver.execute_script(  # type: ignore[no-any-return]
        "var box = document.querySelector('input[name=passphrase]');"
        "var style = getComputedStyle(box);"
        "var ctx = document.createElement('canvas').getContext('2d');"
        "ctx.font = style.font;"
        "var inner = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);"
        "return [ctx.measureText(arguments[0]).width, inner];", sample)


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_browser_followup_passphrase_box_fits_seven_words_and_shows_them(
    live_server: LiveServer, tmp_path: Path, canary: dict[str, str], driver_factory: list,  # type: ignore[type-arg]
    size: str
) -> None:
    """On a laptop the box holds seven average words on one line; on a phone it takes the whole
    width of the form (seven words cannot fit 350 px at a readable size). What is typed shows,
    and "7 words" is said next to the box."""
    from selenium.webdriver.common.by import By

    driver = make_driver(tmp_path, user_agent=canary["ua"])
    driver_factory.append(driver)
    _set_viewport(driver, size)
    driver.get(live_server.url + "/followup?lang=en")
    box = driver.find_element(By.NAME, "passphrase")
    box.send_keys("ventana perro casa")
    assert box.get_attribute("type") == "text"
    assert driver.execute_script(
        "return getComputedStyle(arguments[0]).webkitTextSecurity", box) in ("none", None)
    assert box.get_attribute("value") == "ventana perro casa"
    hint = driver.find_element(By.ID, "passphrase-hint")
    assert hint.text.startswith("7 words") and hint.is_displayed()
    needed, inner = _seven_average_words_px(driver)
    form_width = driver.execute_script(
        "return arguments[0].form.getBoundingClientRect().width;", box)
    if size == "desktop":
        assert inner >= needed, (inner, needed)
    else:
        assert box.rect["width"] >= form_width - 1, (box.rect, form_width)
        assert box.rect["x"] + box.rect["width"] <= VIEWPORTS["phone"][0]


def test_browser_followup_hide_control_works_without_javascript(
    live_server: LiveServer, tmp_path: Path, canary: dict[str, str], driver_factory: list  # type: ignore[type-arg]
) -> None:
    """The hide control is a checkbox and CSS: with JavaScript off, ticking it masks what is typed
    and unticking shows it again, and the form still logs in (here: refuses) as typed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = make_driver(tmp_path, user_agent=canary["ua"], javascript=False)
    driver_factory.append(driver)
    driver.get(live_server.url + "/followup?lang=en")
    box = driver.find_element(By.NAME, "passphrase")
    box.send_keys("uno dos tres")
    masked = "return getComputedStyle(arguments[0]).webkitTextSecurity"
    assert driver.execute_script(masked, box) in ("none", None)
    driver.find_element(By.CSS_SELECTOR, "label[for=hide-passphrase]").click()
    assert driver.find_element(By.ID, "hide-passphrase").is_selected()
    assert driver.execute_script(masked, box) == "disc"
    assert box.get_attribute("value") == "uno dos tres"
    driver.find_element(By.CSS_SELECTOR, "label[for=hide-passphrase]").click()
    assert driver.execute_script(masked, box) in ("none", None)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    # The click starts the navigation; the answer arrives a moment later.
    WebDriverWait(driver, 30, poll_frequency=0.05).until(
        lambda d: "You typed 3 words. A receipt passphrase has 7 words" in d.page_source)


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_browser_followup_wrong_passphrase_counts_words_and_keeps_form_in_backoff(
    live_server: LiveServer, tmp_path: Path, canary: dict[str, str], driver_factory: list,  # type: ignore[type-arg]
    javascript: bool
) -> None:
    """Too few words: told how many were typed. Seven wrong words: the one generic message; once
    the backoff starts, the form stays on the page with the wait in words, never a bare error
    page with a link home. With JavaScript the page derives and asks /api/v1/login, and shows the
    same messages without leaving the page."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = make_driver(tmp_path, user_agent=canary["ua"], javascript=javascript)
    driver_factory.append(driver)
    driver.get(live_server.url + "/followup?lang=en")
    # Polling during a navigation can hit a document that is going away: retry, don't fail.
    wait = WebDriverWait(driver, 60, poll_frequency=0.05, ignored_exceptions=(WebDriverException,))
    if javascript:
        _wait_js(driver)

    def attempt(typed: str) -> str:
        box = driver.find_element(By.NAME, "passphrase")
        box.clear()
        box.send_keys(typed)
        if javascript:
            driver.execute_script("var s = document.getElementById('js-status');"
                                  "s.textContent = ''; s.dataset.state = '';")
            driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
            wait.until(lambda d: d.execute_script(
                "return document.getElementById('js-status').dataset.state === 'error'"))
            assert driver.current_url.endswith("/followup?lang=en")
            return str(driver.find_element(By.TAG_NAME, "main").text)
        # Mark this document, so the wait below can tell the next page from this one.
        driver.execute_script("document.documentElement.dataset.old = '1'")
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait.until(lambda d: d.execute_script(
            "return document.readyState === 'complete' && document.documentElement.dataset.old !== '1'"))
        return str(driver.find_element(By.TAG_NAME, "main").text)

    text = attempt("ventana perro casa sol")
    assert "You typed 4 words. A receipt passphrase has 7 words" in text
    for _ in range(3):
        text = attempt("ventana perro casa sol luna mar rio")
        assert "That passphrase does not match any report." in text and "You typed" not in text
    text = attempt("ventana perro casa sol luna mar rio")  # the 4th failure starts the backoff
    assert "Please wait 1 second and try again." in text
    text = attempt("ventana perro casa sol luna mar rio")
    assert "Too many wrong passphrases. Please wait" in text
    assert driver.find_element(By.NAME, "passphrase").is_displayed()
    assert not driver.find_elements(By.PARTIAL_LINK_TEXT, "Back to the start page")


def test_browser_case_list_usable_on_a_phone(live_server: LiveServer, driver_factory: list,  # type: ignore[type-arg]
                                             tmp_path: Path) -> None:
    """The case list at 390×844 in Spanish: the page is no wider than the screen (the table
    scrolls in its own box), the case id stays in view when that box is scrolled to its right
    end, and no date breaks over two lines ("2026-12-" / "01")."""
    import datetime as dt

    import pyotp

    from whistle.server.accounts import create_investigator

    engine = make_engine(live_server.app_config.database_url)
    with make_sessionmaker(engine).begin() as db:
        for n in range(3):
            day = dt.date(2026, 12, 1) - dt.timedelta(days=40 * n)
            db.add(Report(id=secrets.token_hex(8), received_on=day, updated_on=day, status="received",
                          channel="server-form", login_hash=secrets.token_bytes(32),
                          source_public_key=secrets.token_bytes(32), new_messages=n))
        account = create_investigator(db, "marta")
    engine.dispose()

    driver = make_driver(tmp_path, user_agent="Mozilla/5.0 (Linux; Android 14) phone")
    driver_factory.append(driver)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    from selenium.webdriver.common.by import By

    driver.get(live_server.url + "/investigator/login?lang=es")
    driver.find_element(By.NAME, "name").send_keys("marta")
    driver.find_element(By.NAME, "password").send_keys(account.password)
    driver.find_element(By.NAME, "code").send_keys(pyotp.TOTP(account.totp_secret).now())
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    driver.get(live_server.url + "/investigator/")
    assert driver.find_element(By.CSS_SELECTOR, "html").get_attribute("lang") == "es"
    assert len(driver.find_elements(By.CSS_SELECTOR, "table.cases tbody tr td.case")) == 3

    widths = driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth];")
    assert widths[1] == 390 and widths[0] <= widths[1], widths
    # Scrolled to the far right of its box, the case id is still on the screen, at the left.
    seen = driver.execute_script("""
        const box = document.querySelector('.table-scroll');
        box.scrollLeft = box.scrollWidth;
        const cell = document.querySelector('tbody td.case').getBoundingClientRect();
        const id = document.querySelector('tbody td.case code').getBoundingClientRect();
        return {scrolled: box.scrollLeft, left: cell.left, right: id.right,
                box: box.getBoundingClientRect().left};""")
    assert seen["scrolled"] > 0, "the table fits; nothing to scroll"
    assert abs(seen["left"] - seen["box"]) < 1 and seen["right"] <= 390, seen
    # Each date one line: one client rect per inline <time>, and as tall as one line of text.
    lines = driver.execute_script("""
        return [...document.querySelectorAll('table.cases time.date')].map(t => {
            const rects = t.getClientRects();
            return [t.textContent, rects.length, rects[0].height,
                    parseFloat(getComputedStyle(t).fontSize)];});""")
    assert len(lines) >= 6
    for text, rects, height, font in lines:
        assert rects == 1 and height < 2 * font, (text, rects, height)


# --- Issue 11: the source's submission flow ------------------------------------------------------

BLANK_BODY = "   \n  \n\t \n "


def _wait_js(driver) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.documentElement.dataset.whistleJs") == "ready")


def test_browser_without_javascript_receipt_reload_and_back_never_file_again(
    live_server: LiveServer, tmp_path: Path, canary: dict[str, str], driver_factory: list  # type: ignore[type-arg]
) -> None:
    """Item 1: a reload of the receipt says it was already shown and files nothing; Back shows an
    empty form, never the report's text."""
    from selenium.webdriver.common.by import By

    driver = make_driver(tmp_path, user_agent=canary["ua"], javascript=False)
    driver_factory.append(driver)
    attach, _ = _file_to_attach(tmp_path, canary)
    phrase = _fill_and_send(driver, live_server, canary, attach, wait_for_js=False)
    driver.refresh()
    assert len(_channels(live_server)) == 1
    assert driver.find_elements(By.ID, "receipt-gone")
    assert phrase not in driver.page_source and not driver.find_elements(By.ID, "receipt-passphrase")
    assert "/receipt" in driver.current_url and phrase not in driver.current_url
    driver.back()
    body = driver.find_element(By.NAME, "body")
    assert body.get_attribute("value") == "" and canary["body"] not in driver.page_source
    assert len(_channels(live_server)) == 1


def test_browser_javascript_refuses_a_blank_report_like_the_form(
    live_server: LiveServer, tmp_path: Path, canary: dict[str, str], driver_factory: list  # type: ignore[type-arg]
) -> None:
    """Item 2: a report of spaces and line breaks is refused before sealing, with the message the
    JavaScript-off form gives; nothing is stored and no passphrase is issued."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    for javascript in (True, False):
        driver = make_driver(tmp_path / str(javascript), user_agent=canary["ua"], javascript=javascript)
        driver_factory.append(driver)
        driver.get(live_server.url + "/submit")
        if javascript:
            _wait_js(driver)
        Select(driver.find_element(By.NAME, "category")).select_by_value("corruption")
        driver.find_element(By.NAME, "body").send_keys(BLANK_BODY)
        driver.find_element(By.ID, "submit-button").click()
        # The page may be replaced while it is read (JavaScript off: the post's answer arrives).
        WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: "Por favor, describa lo que pasó." in d.find_element(By.TAG_NAME, "main").text)
        assert not driver.find_elements(By.CSS_SELECTOR, "#receipt:not([hidden])")
    assert _channels(live_server) == []


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_browser_receipt_language_switch_keeps_the_passphrase(
    live_server: LiveServer, tmp_path: Path, canary: dict[str, str], driver_factory: list,  # type: ignore[type-arg]
    javascript: bool
) -> None:
    """Item 6: the receipt's language link shows the same receipt in English; after that, a reload
    says it was already shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = make_driver(tmp_path, user_agent=canary["ua"], javascript=javascript)
    driver_factory.append(driver)
    attach, _ = _file_to_attach(tmp_path, canary)
    phrase = _fill_and_send(driver, live_server, canary, attach, wait_for_js=javascript)
    driver.find_element(By.CSS_SELECTOR, "nav.lang a[hreflang=en]").click()
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.documentElement.lang") == "en")
    assert driver.find_element(By.ID, "receipt-passphrase").text == phrase
    assert driver.find_element(By.ID, "receipt-title").text == "Your report was received"
    assert phrase not in driver.current_url
    driver.refresh()
    assert driver.find_elements(By.ID, "receipt-gone") and phrase not in driver.page_source
    assert len(_channels(live_server)) == 1


def test_browser_javascript_receipt_is_its_own_page_state(
    live_server: LiveServer, tmp_path: Path, canary: dict[str, str], driver_factory: list  # type: ignore[type-arg]
) -> None:
    """Item 8: once the script shows the receipt, the tab title and the only visible heading are the
    receipt's, not the form's."""
    from selenium.webdriver.common.by import By

    driver = make_driver(tmp_path, user_agent=canary["ua"])
    driver_factory.append(driver)
    attach, _ = _file_to_attach(tmp_path, canary)
    _fill_and_send(driver, live_server, canary, attach, wait_for_js=True)
    headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h1") if h.is_displayed()]
    assert headings == [driver.find_element(By.ID, "receipt-title").text]
    assert "Presentar una denuncia" not in driver.title
    assert driver.title.startswith(headings[0] + " — ")
