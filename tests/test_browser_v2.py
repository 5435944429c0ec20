# SPDX-License-Identifier: AGPL-3.0-or-later
"""Protocol v2 in a real headless Chromium: the browser derives the source's keys itself.

The app runs in this process behind a WSGI middleware that records every request the browser
sends (method, path, query, headers, body), so the tests can show what the server was given: on
the JavaScript path never the passphrase, the source's secret key or the seed half of the
derivation, in any encoding. Debian's chromium and chromedriver, as in test_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from argon2.low_level import Type, hash_secret_raw
from flask import Flask
from sqlalchemy import select
from support import Workstation, make_driver, report_folders

from whistle.core.passphrase import Argon2Params, derive, normalise
from whistle.server.export import export_bundle
from whistle.server.models import Item, Report
from whistle.server.state import get_state
from whistle.workstation.decrypt import decrypt_bundle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def blob(self) -> bytes:
        """Everything the request carried, as one byte string to search."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return f"{self.method} {self.path}?{self.query}\n{head}\n\n".encode("utf-8", "replace") + self.body


@dataclass
class Recorder:
    """WSGI middleware: keeps every request, then hands the app an identical one."""

    app: Callable[..., Any]
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        headers = {k[5:].replace("_", "-").title(): str(v) for k, v in environ.items()
                   if k.startswith("HTTP_")}
        with self.lock:
            self.requests.append(Recorded(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                                          environ.get("QUERY_STRING", ""), headers, body))
        return self.app(environ, start_response)

    def posts(self, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST" and r.path == path]


@dataclass
class Served:
    url: str
    app: Flask
    recorder: Recorder


@pytest.fixture
def served(app: Flask) -> Iterator[Served]:
    from werkzeug.serving import make_server

    recorder = Recorder(app.wsgi_app)
    app.wsgi_app = recorder  # type: ignore[method-assign]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_port}", app, recorder)
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def served_production_costs(environ: dict[str, str], tmp_path: Path) -> Iterator[Served]:
    """The app at the production argon2 costs (t=3, 64 MiB), behind the same recorder."""
    from werkzeug.serving import make_server

    from whistle import create_app
    from whistle.server.config import load_config
    from whistle.server.instance import load_or_create_secrets

    cfg = load_config(environ, cwd=tmp_path)
    load_or_create_secrets(cfg)
    app = create_app(cfg)
    recorder = Recorder(app.wsgi_app)
    app.wsgi_app = recorder  # type: ignore[method-assign]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_port}", app, recorder)
    finally:
        server.shutdown()
        thread.join(10)
        app.extensions["whistle"].engine.dispose()


@pytest.fixture
def drivers() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for driver in made:
        driver.quit()


def _wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 60) -> Any:
    from selenium.common.exceptions import (
        StaleElementReferenceException,
        TimeoutException,
        WebDriverException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException, WebDriverException)
                             ).until(condition)
    except TimeoutException as exc:
        raise AssertionError(_page_state(driver)) from exc


def _page_state(driver: Any) -> str:
    """What a failing wait saw: the address, the script's state, the status box, the console."""
    try:
        state = driver.execute_script(
            "var s = document.getElementById('js-status');"
            "return [location.href, JSON.stringify(document.documentElement.dataset),"
            "        s ? s.textContent : null, document.querySelector('main').innerText.slice(0, 800)];")
        logs = [e.get("message", "") for e in driver.get_log("browser")]
    except Exception as exc:  # noqa: BLE001 - a diagnostic, never the failure itself
        return f"(page state unavailable: {exc})"
    return "\n".join([*map(str, state), *logs[-20:]])


def _js(driver: Any, name: str) -> Any:
    return driver.execute_script(f"return document.documentElement.dataset.{name}")


def _argon2(app: Flask) -> Argon2Params:
    with app.app_context():
        return get_state().secrets.argon2


def _derived(app: Flask, phrase: str) -> bytes:
    params = _argon2(app)
    return hash_secret_raw(secret=normalise(phrase).encode(), salt=params.salt,
                           time_cost=params.time_cost, memory_cost=params.memory_cost_kib,
                           parallelism=1, hash_len=64, type=Type.ID)


def _encodings(raw: bytes) -> list[bytes]:
    """raw bytes, hex (both cases), standard and URL-safe base64 (with and without padding), and
    those as a form field would carry them (percent-encoded)."""
    forms = [raw.hex().encode(), raw.hex().upper().encode(), base64.b64encode(raw),
             base64.urlsafe_b64encode(raw), base64.b64encode(raw).rstrip(b"="),
             base64.urlsafe_b64encode(raw).rstrip(b"=")]
    forms += [urllib.parse.quote(f.decode(), safe="").encode() for f in forms]
    return [raw, *forms]


def _file(tmp_path: Path, name: str, marker: str, size: int) -> tuple[Path, bytes]:
    path = tmp_path / "uploads" / name
    path.parent.mkdir(exist_ok=True)
    data = (marker.encode() + os.urandom(1000)) * (size // (len(marker) + 1000) + 1)
    path.write_bytes(data[:size])
    return path, data[:size]


def _file_report(driver: Any, url: str, body: str, attach: Path | None, *, lang: str = "es") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    driver.get(f"{url}/submit?lang={lang}")
    _wait(driver, lambda d: _js(d, "whistleJs") in ("ready", "fallback"))
    Select(driver.find_element(By.NAME, "category")).select_by_value("medication")
    driver.find_element(By.NAME, "body").send_keys(body)
    if attach is not None:
        driver.find_element(By.NAME, "attachments").send_keys(str(attach))
    driver.find_element(By.ID, "submit-button").click()


def _receipt_phrase(driver: Any, words: int) -> str:
    from selenium.webdriver.common.by import By

    def phrase(d: Any) -> str | None:
        found = d.find_elements(By.ID, "receipt-passphrase")
        text = found[0].text if found and found[0].is_displayed() else ""
        return text if len(text.split()) == words else None

    return str(_wait(driver, phrase, 120))


def _decrypt(app: Flask, ws: Workstation, tmp_path: Path, name: str) -> Path:
    with app.app_context():
        sessions = get_state().sessions
    bundle = tmp_path / f"{name}.zip"
    export_bundle(sessions, bundle, unit_fingerprint="test", include_all=True)
    decrypt_bundle(bundle, ws.secret_key, tmp_path / name)
    (folder,) = report_folders(tmp_path / name)
    return folder


def _report(app: Flask) -> Report:
    with app.app_context(), get_state().sessions() as db:
        (report,) = db.scalars(select(Report)).all()
        db.expunge(report)
        return report


def _assert_secrets_never_sent(recorder: Recorder, phrase: str, raw: bytes, secret_key: bytes) -> None:
    """No request of the browser's carries the passphrase (as issued, as typed, normalised), the
    seed half of the derivation, or the source's secret key, in any encoding."""
    needles: dict[str, list[bytes]] = {
        "passphrase": [phrase.encode(), normalise(phrase).encode(), phrase.upper().encode(),
                       urllib.parse.quote_plus(phrase).encode(),
                       urllib.parse.quote(phrase).encode()],
        "seed (derived bytes 32-63)": _encodings(raw[32:]),
        "source secret key": _encodings(secret_key),
    }
    with recorder.lock:
        requests = list(recorder.requests)
    assert requests, "the recorder saw nothing"
    hits = [f"{label} in {r.method} {r.path}" for r in requests for label, forms in needles.items()
            if any(form in r.blob() for form in forms)]
    assert hits == []


def test_v2_javascript_path_report_login_reply_message(
    served: Served, workstation: Workstation, tmp_path: Path, drivers: list[Any]
) -> None:
    """File a report with a file, log in with the receipt, read the unit's signed reply (and see a
    forged one withheld), send a message with a file; reload the case and open it with the
    passphrase box. The server never gets the passphrase, the seed or the secret key."""
    from selenium.webdriver.common.by import By

    from whistle.core.crypto import UnitPublicKey
    from whistle.core.replies import seal_reply
    from whistle.server.casework import import_replies

    app, url = served.app, served.url
    driver = make_driver(tmp_path, user_agent="Mozilla/5.0 whistle-v2-test")
    drivers.append(driver)
    marker = f"CANARY-V2-{secrets.token_hex(6)}"
    attach, data = _file(tmp_path, "acta ñ.pdf", marker + "-FILE", 200_000)
    started = time.monotonic()
    _file_report(driver, url, f"Faltan medicamentos. {marker}", attach)
    with app.app_context():
        from whistle.core.passphrase import word_count

        words = word_count("es")
    phrase = _receipt_phrase(driver, words)
    filed_s = time.monotonic() - started
    assert _js(driver, "whistleJs") == "ready"
    # The receipt is its own page state, and a reload says it was shown.
    assert driver.current_url.endswith("/receipt")
    assert driver.find_element(By.ID, "receipt-title").is_displayed()
    assert not driver.find_element(By.ID, "submit-form").is_displayed()

    keys = derive(phrase, _argon2(app))
    raw = _derived(app, phrase)
    report = _report(app)
    assert report.channel == "browser"
    assert report.login_hash == keys.login_hash == hashlib.sha256(raw[:32]).digest()
    assert report.source_public_key == keys.public_key_bytes
    (post,) = served.recorder.posts("/api/v1/reports")
    assert base64.b64encode(keys.login_hash) in post.body  # the recorder does see the fields

    folder = _decrypt(app, workstation, tmp_path, "out1")
    assert marker in (folder / "report.txt").read_text(encoding="utf-8")
    assert (folder / "attachments" / attach.name).read_bytes() == data

    # The unit answers (sealed to the key inside the report, with its case tag), and someone
    # with an investigator account plants a signed reply with a wrong case tag.
    reply_marker = f"CANARY-REPLY-{secrets.token_hex(6)}"
    forged_marker = f"CANARY-FORGED-{secrets.token_hex(6)}"
    recipient = UnitPublicKey(report.source_public_key)
    with app.app_context(), get_state().sessions.begin() as db:
        good = seal_reply(f"Gracias. {reply_marker}", report.id, recipient, workstation.signing_key,
                          case_tag=keys.case_tag, seq=1)
        forged = seal_reply(f"Falso. {forged_marker}", report.id, recipient, workstation.signing_key,
                            case_tag=secrets.token_bytes(16), seq=2)
        import_replies(db, [good, forged], "alice", workstation.signing_key.verify_key)

    # Log in, typed sloppily: the page derives, sends only the login key, swaps in the case.
    driver.get(url + "/followup")
    _wait(driver, lambda d: _js(d, "whistleJs") == "ready")
    driver.find_element(By.NAME, "passphrase").send_keys("  " + phrase.upper().replace(" ", " , ") + " ")
    started = time.monotonic()
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    _wait(driver, lambda d: _js(d, "whistleCase") == "open")
    login_s = time.monotonic() - started
    assert driver.current_url.endswith("/case")
    text = driver.find_element(By.TAG_NAME, "main").text
    assert reply_marker in text and forged_marker not in text
    assert len(driver.find_elements(By.CSS_SELECTOR, ".conversation .entry.withheld")) == 1
    assert "/api/v1/login" in [r.path for r in served.recorder.posts("/api/v1/login")]
    assert not served.recorder.posts("/followup")

    # A message with a file, sealed in the browser with the case's next number.
    answer = f"CANARY-ANSWER-{secrets.token_hex(6)}"
    answer_file, answer_data = _file(tmp_path, "factura.txt", answer + "-FILE", 70_000)
    driver.find_element(By.NAME, "body").send_keys(f"Fue el lunes. {answer}")
    driver.find_element(By.NAME, "attachments").send_keys(str(answer_file))
    driver.find_element(By.ID, "submit-button").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".conversation .entry.message"))
    _wait(driver, lambda d: _js(d, "whistleCase") == "open" and reply_marker in
          d.find_element(By.TAG_NAME, "main").text)
    with app.app_context(), get_state().sessions() as db:
        message = db.scalars(select(Item).where(Item.kind == "message")).one()
        assert message.channel == "browser"
    (sent,) = served.recorder.posts("/api/v1/messages")
    assert b'name="seq"\r\n\r\n2\r\n' in sent.body
    folder = _decrypt(app, workstation, tmp_path, "out2")
    (msg_file,) = folder.glob("message-*.txt")
    assert f"Fue el lunes. {answer}" in msg_file.read_text(encoding="utf-8")
    assert (folder / "attachments" / answer_file.name).read_bytes() == answer_data

    # A reload has no keys: the replies stay sealed until the passphrase is typed in the box.
    driver.refresh()
    _wait(driver, lambda d: _js(d, "whistleCase") == "locked")
    assert reply_marker not in driver.find_element(By.TAG_NAME, "main").text
    box = driver.find_element(By.ID, "unlock-passphrase")
    box.send_keys("otra cosa que no es")
    driver.find_element(By.CSS_SELECTOR, "#unlock-form button").click()
    no_match = driver.find_element(By.ID, "whistle-js").get_attribute("data-msg-no-match")
    _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#unlock-form .unlock-status").text
          == no_match)
    box.clear()
    box.send_keys(phrase)
    driver.find_element(By.CSS_SELECTOR, "#unlock-form button").click()
    _wait(driver, lambda d: _js(d, "whistleCase") == "open")
    assert reply_marker in driver.find_element(By.TAG_NAME, "main").text

    _assert_secrets_never_sent(served.recorder, phrase, raw, bytes(keys.secret_key.nacl_key))
    params = _argon2(app)
    print(f"\nJS path at the fixture costs (t={params.time_cost}, m={params.memory_cost_kib} KiB): "
          f"report filed in {filed_s:.2f} s, login to open replies in {login_s:.2f} s")


def _worker_timing(driver: Any, opslimit: int, memlimit: int) -> dict[str, Any]:
    """One derivation in the page's own worker, timed in the page."""
    driver.set_script_timeout(300)
    return driver.execute_async_script(  # type: ignore[no-any-return]
        "var done = arguments[arguments.length - 1];"
        "var t0 = performance.now();"
        "whistlePage.call('derive', {typed: 'uno dos tres', argon2: {alg: 'argon2id13',"
        "  salt: 'AAAAAAAAAAAAAAAAAAAAAA==', opslimit: arguments[0], memlimit: arguments[1], bytes: 64}})"
        ".then(function () { done({ok: true, ms: performance.now() - t0, info: whistlePage.info()}); },"
        "      function (e) { done({ok: false, error: String(e && e.message || e)}); });",
        opslimit, memlimit)


def test_v2_without_webassembly_files_the_report_either_way(
    served: Served, workstation: Workstation, tmp_path: Path, drivers: list[Any]
) -> None:
    """No WebAssembly in the page or its worker: the worker derives with libsodium's pure-JavaScript
    fallback (or, if that fails, the page posts the form and says so); the report is filed.

    Chromium 156 ignores `--js-flags=--noexpose_wasm` (WebAssembly stays defined, checked);
    `--jitless` removes WebAssembly everywhere, workers included, and turns off the JavaScript JIT
    too, which is what Tor Browser's "Safer" level does."""
    driver = make_driver(tmp_path, user_agent="Mozilla/5.0 whistle-v2-nowasm",
                         extra_args=["--js-flags=--jitless"])
    drivers.append(driver)
    marker = f"CANARY-NOWASM-{secrets.token_hex(6)}"
    attach, data = _file(tmp_path, "foto.jpg", marker, 100_000)
    _file_report(driver, served.url, f"Sin WebAssembly. {marker}", attach, lang="en")
    assert driver.execute_script("return typeof WebAssembly") == "undefined"
    phrase = _receipt_phrase(driver, 7)
    report = _report(served.app)
    if report.channel == "browser":
        assert _js(driver, "whistleJs") == "ready"
        info = driver.execute_script("return whistlePage.info()")
        assert info["wasm"] is False
        _assert_secrets_never_sent(served.recorder, phrase, _derived(served.app, phrase),
                                   bytes(derive(phrase, _argon2(served.app)).secret_key.nacl_key))
        params = _argon2(served.app)
        timing = _worker_timing(driver, params.time_cost, params.memory_cost_kib * 1024)
        assert timing["ok"], timing
        print(f"\nno WebAssembly, fixture costs: argon2id in the worker {timing['ms']:.0f} ms")
    else:
        assert report.channel == "server-form"
        assert "did not encrypt it itself" in driver.page_source
    folder = _decrypt(served.app, workstation, tmp_path, "out")
    assert marker in (folder / "report.txt").read_text(encoding="utf-8")
    assert (folder / "attachments" / attach.name).read_bytes() == data


def test_v2_no_worker_falls_back_to_the_server_and_says_so(
    served: Served, workstation: Workstation, tmp_path: Path, drivers: list[Any]
) -> None:
    """A browser where the worker cannot start: the page says so and posts the ordinary form; the
    server derives and seals; the receipt page says where it was encrypted."""
    from selenium.webdriver.common.by import By

    driver = make_driver(tmp_path, user_agent="Mozilla/5.0 whistle-v2-noworker")
    drivers.append(driver)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                           {"source": "delete globalThis.Worker;"})
    marker = f"CANARY-NOWORKER-{secrets.token_hex(6)}"
    _file_report(driver, served.url, f"Sin worker. {marker}", None, lang="en")
    _wait(driver, lambda d: "could not make your keys itself" in
          d.find_element(By.ID, "js-status").text)
    phrase = _receipt_phrase(driver, 7)
    assert _report(served.app).channel == "server-form"
    assert "did not encrypt it itself" in driver.find_element(By.TAG_NAME, "main").text
    folder = _decrypt(served.app, workstation, tmp_path, "out")
    assert marker in (folder / "report.txt").read_text(encoding="utf-8")
    assert phrase


def test_v2_argon2_time_at_fixture_costs(served: Served, tmp_path: Path, drivers: list[Any]) -> None:
    """The in-browser argon2id time at the fixture's costs, with WebAssembly (recorded; the
    production costs are measured by bench/browser_argon2.py)."""
    driver = make_driver(tmp_path, user_agent="Mozilla/5.0 whistle-v2-timing")
    drivers.append(driver)
    driver.get(served.url + "/submit")
    _wait(driver, lambda d: _js(d, "whistleJs") == "ready")
    params = _argon2(served.app)
    timing = _worker_timing(driver, params.time_cost, params.memory_cost_kib * 1024)
    assert timing["ok"], timing
    assert timing["info"]["wasm"] is True
    print(f"\nWebAssembly, fixture costs (t={params.time_cost}, m={params.memory_cost_kib} KiB): "
          f"argon2id in the worker {timing['ms']:.0f} ms")


def test_v2_too_slow_without_webassembly_at_production_costs_uses_the_server(
    served_production_costs: Served, workstation: Workstation, tmp_path: Path, drivers: list[Any]
) -> None:
    """At the production costs (t=3, 64 MiB) without WebAssembly and JIT the worker's estimate is
    about two minutes (bench/browser_argon2.py): the page does not make the source wait, it posts
    the form (the server derives) and says so. With WebAssembly the same costs take well under a
    second in the worker."""
    from selenium.webdriver.common.by import By

    served = served_production_costs
    params = _argon2(served.app)
    assert (params.time_cost, params.memory_cost_kib) == (3, 64 * 1024)
    driver = make_driver(tmp_path / "jitless", user_agent="Mozilla/5.0 whistle-v2-slow",
                         extra_args=["--js-flags=--jitless"])
    drivers.append(driver)
    marker = f"CANARY-SLOW-{secrets.token_hex(6)}"
    _file_report(driver, served.url, f"Dispositivo lento. {marker}", None, lang="en")
    _wait(driver, lambda d: "could not make your keys itself" in
          d.find_element(By.ID, "js-status").text, 120)
    _receipt_phrase(driver, 7)
    assert _report(served.app).channel == "server-form"
    assert "did not encrypt it itself" in driver.find_element(By.TAG_NAME, "main").text
    folder = _decrypt(served.app, workstation, tmp_path, "out")
    assert marker in (folder / "report.txt").read_text(encoding="utf-8")

    fast = make_driver(tmp_path / "wasm", user_agent="Mozilla/5.0 whistle-v2-fast")
    drivers.append(fast)
    fast.get(served.url + "/submit")
    _wait(fast, lambda d: _js(d, "whistleJs") == "ready")
    timing = _worker_timing(fast, 3, 64 * 1024 * 1024)
    assert timing["ok"] and timing["info"]["wasm"] is True, timing
    print(f"\nWebAssembly, production costs: argon2id in the worker {timing['ms']:.0f} ms")
