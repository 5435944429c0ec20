# SPDX-License-Identifier: AGPL-3.0-or-later
"""Screenshots of the source pages, for a reviewer to look at (issue 11).

Starts a throwaway instance (a temporary folder, a fresh unit key pair, low argon2 costs: the test
suite's helpers in tests/support.py), serves it with ``whistle run`` on loopback, and drives
Debian's headless Chromium (/usr/bin/chromium + /usr/bin/chromedriver through Selenium, as
tests/test_browser.py does; nothing is downloaded) with JavaScript on, in Spanish and English, at
1265 px (a laptop) and 390 px (a phone, emulated as one: 390 × 844 viewport, touch, mobile
layout). Each page is captured whole (beyond the viewport) as one PNG:

    start         /                       the start page
    submit        /submit                 the report form, once its script is ready
    receipt       /submit → send          the receipt with the passphrase (a real report filed
                                          through the page)
    followup      /followup               the follow-up login
    case          /followup → /case       the case page with one reply from the unit
    error         /no-such-page           the error page (404)

Files are named ``PAGE-LANG-WIDTH.png`` (``submit-es-390.png``). Usage, from the repository:

    .venv/bin/python scripts/screenshots.py [OUTPUT_FOLDER]     # default docs/screenshots/
    .venv/bin/python scripts/screenshots.py /tmp/shots --lang en --width 390 --page case

Nothing is kept: the instance and the browser profile are deleted at the end.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PAGES = ("start", "submit", "receipt", "followup", "case", "error", "transparency",
         "casebook-charts")
LANGS = ("es", "en")
WIDTHS = (1265, 390)
PHONE_HEIGHT, DESKTOP_HEIGHT = 844, 800
REPORT = {
    "es": "El jefe de compras del hospital pide un 10 % a los proveedores de insulina desde marzo.\n"
          "Lo vi en la reunión del 3 de junio.",
    "en": "The hospital's head of purchasing has been asking insulin suppliers for 10% since March.\n"
          "I saw it at the meeting on 3 June.",
}
REPLY = ("Gracias por su denuncia. ¿Puede indicarnos en qué planta ocurrió? / "
         "Thank you for your report. Can you tell us on which floor it happened?")


def make_instance(root: Path):  # type: ignore[no-untyped-def]
    """The test suite's instance (tests/conftest.py's ``environ`` and ``workstation``): keys,
    data folder, generous limits; returns (environ, app, workstation)."""
    from support import FAST_MEM, FAST_OPS, KEY_PASSPHRASE, Workstation, make_app

    from whistle.core.crypto import UnitKeyFile, UnitSecretKey, UnitSigningKey

    ws_root = root / "workstation"
    ws_root.mkdir()
    key, signing = UnitSecretKey.generate(), UnitSigningKey.generate()
    key_file = ws_root / "unit.key"
    key_file.write_text(UnitKeyFile(key, signing).to_encrypted_json(
        KEY_PASSPHRASE, opslimit=FAST_OPS, memlimit=FAST_MEM))
    pass_file = ws_root / "passphrase.txt"
    pass_file.write_text(KEY_PASSPHRASE + "\n")
    ws = Workstation(secret_key=key, key_file=key_file, passphrase_file=pass_file, root=ws_root,
                     signing_key=signing)
    keys = root / "keys"
    keys.mkdir()
    (keys / "unit.pub").write_text(key.public_key.to_file_text())
    (keys / "unit-sign.pub").write_text(signing.verify_key.to_file_text())
    environ = {"WHISTLE_DATA_DIR": str(root / "instance"), "WHISTLE_UNIT_KEY": str(keys / "unit.pub")}
    environ |= {f"WHISTLE_LIMIT_{name}": "10000 per minute" for name in (
        "SUBMIT_GLOBAL", "SUBMIT_SESSION", "LOGIN_GLOBAL", "LOGIN_SESSION", "MESSAGE_GLOBAL",
        "MESSAGE_SESSION")}
    return environ, make_app(environ, root), ws


def publish_figures(app, root: Path) -> None:  # type: ignore[no-untyped-def]
    """Publish transparency figures as the unit does: a generated casebook of 3,000 reports
    (tests/casebook_corpus.py), ``whistle casebook publish`` over it, and the upload an
    administrator makes (the server's own strict reader accepts it)."""
    import casebook_corpus

    from whistle.server import transparency as server_transparency
    from whistle.workstation.casebook import publish
    from whistle.workstation.casebook.answers import load_fields
    from whistle.workstation.casebook.store import Casebook, today

    folder = root / "casebook"
    with Casebook.open(folder) as book:
        if not book.db.execute("SELECT 1 FROM cases LIMIT 1").fetchone():
            casebook_corpus.fill(book, casebook_corpus.generate(3, 3000, campaigns=6, spam=2))
        start, to = publish.period_of(None, None, today())
        document = publish.transparency(book, load_fields(None), start=start, to=to, threshold=5,
                                        today=today())
    out = root / "transparency.json"
    publish.write(document, out)
    server_transparency.accept(app.extensions["whistle"].config, out.read_bytes())


def report_with_reply(app, ws) -> str:  # type: ignore[no-untyped-def]
    """File the instance's first report (the JavaScript-off form, Spanish) and answer it as the
    workstation does; return its receipt passphrase."""
    from support import file_report, reply

    phrase = file_report(app.test_client(), REPORT["es"])
    reply(app, ws, REPLY)
    return phrase


def start_server(environ: dict[str, str], root: Path) -> tuple[subprocess.Popen[bytes], str]:
    from support import free_port

    port = free_port()
    tmp_dir = root / "server-tmp"
    tmp_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHISTLE_")}
    env.update(environ, TMPDIR=str(tmp_dir), PYTHONUNBUFFERED="1")
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "whistle.cli", "run", "--port", str(port)],  # noqa: S603 - fixed argv
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/api/v1/unit-key", timeout=2):  # noqa: S310 - loopback
                return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start:\n"
                                   + (root / "server.log").read_text()[-3000:]) from None
            time.sleep(0.1)


def make_driver(profile: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars", "--force-color-profile=srgb",
                "--font-render-hinting=none", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def set_width(driver, width: int) -> None:  # type: ignore[no-untyped-def]
    phone = width < 600
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": PHONE_HEIGHT if phone else DESKTOP_HEIGHT,
        "deviceScaleFactor": 1, "mobile": phone})
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": phone})


def settle(driver, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    """Until the page's script is done starting (data-whistle-js past "loading", or no script),
    fonts are loaded, and nothing says "Opening…"/"Abriendo…" any more (sealed replies)."""
    from selenium.webdriver.support.ui import WebDriverWait

    def done(d) -> bool:  # type: ignore[no-untyped-def]
        return bool(d.execute_script("""
            if (document.readyState !== 'complete') return false;
            // submit.js says when it is ready (data-whistle-js); other scripts do not.
            var js = document.documentElement.dataset.whistleJs;
            var main = document.querySelector('script#whistle-js, script[src*="/submit.js"]');
            if (main && (js === undefined || js === 'loading')) return false;
            return !document.querySelector('.reply.sealed .reply-status');"""))

    try:
        WebDriverWait(driver, timeout).until(done)
    except Exception:  # noqa: BLE001 - a page that never settles is still captured, with a warning
        print(f"   warning: {driver.current_url} did not settle in {timeout:g} s", file=sys.stderr)
    driver.execute_script("return document.fonts ? document.fonts.ready : null")
    time.sleep(0.3)


def capture(driver, width: int, path: Path) -> int:  # type: ignore[no-untyped-def]
    """The whole page, beyond the viewport; returns the PNG's size in bytes."""
    driver.execute_script("window.scrollTo(0, 0)")
    height = int(driver.execute_script(
        "return Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight))"))
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "fromSurface": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    data = base64.b64decode(shot["data"])
    path.write_bytes(data)
    return len(data)


def file_through_page(driver, lang: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    select = Select(driver.find_element(By.NAME, "category"))
    values = [o.get_attribute("value") for o in select.options if o.get_attribute("value")]
    select.select_by_value(values[0])
    driver.find_element(By.NAME, "body").send_keys(REPORT[lang])
    driver.find_element(By.ID, "submit-button").click()
    WebDriverWait(driver, 120).until(ec.visibility_of_element_located((By.ID, "receipt-passphrase")))


def log_in(driver, phrase: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    field = driver.find_element(By.NAME, "passphrase")
    field.clear()
    field.send_keys(phrase)
    field.submit()
    WebDriverWait(driver, 120).until(lambda d: "/case" in d.current_url)


def shoot(base: str, phrase: str, out: Path, profile_root: Path, pages: list[str],
          langs: list[str], widths: list[int]) -> list[tuple[Path, int]]:
    written: list[tuple[Path, int]] = []
    for lang in langs:
        for width in widths:
            # A fresh browser per language and width: no session, cookie or cache carried over.
            driver = make_driver(profile_root / f"{lang}-{width}")
            try:
                set_width(driver, width)
                for page in pages:
                    path = out / f"{page}-{lang}-{width}.png"
                    if page == "start":
                        driver.get(f"{base}/?lang={lang}")
                    elif page in ("submit", "receipt"):
                        driver.get(f"{base}/submit?lang={lang}")
                        settle(driver)
                        if page == "receipt":
                            file_through_page(driver, lang)
                    elif page == "followup":
                        driver.get(f"{base}/followup?lang={lang}")
                    elif page == "case":
                        driver.get(f"{base}/followup?lang={lang}")
                        settle(driver)
                        log_in(driver, phrase)
                    elif page == "error":
                        driver.get(f"{base}/no-such-page?lang={lang}")
                    elif page == "transparency":
                        driver.get(f"{base}/{'transparencia' if lang == 'es' else 'transparency'}")
                    settle(driver)
                    size = capture(driver, width, path)
                    written.append((path, size))
                    print(f"   {path} ({size // 1024} KB)", flush=True)
                    if page == "case":
                        # Leave the case, so the next page starts logged out.
                        driver.delete_all_cookies()
            finally:
                driver.quit()
    return written


def shoot_casebook_charts(out: Path, root: Path, langs: list[str],
                          widths: list[int]) -> list[tuple[Path, int]]:
    """The offline casebook's charts page (issue 13), over a generated casebook of 3,000 reports
    (tests/casebook_corpus.py), served as ``whistle casebook serve`` does (its pages run no script)."""
    import secrets
    import threading

    import casebook_corpus
    from werkzeug.serving import make_server

    from whistle.workstation.casebook.store import Casebook
    from whistle.workstation.casebook.web import ServeState, create_app

    with Casebook.open(root / "casebook") as book:
        # The same generated casebook as the transparency figures (publish_figures), if made.
        if not book.db.execute("SELECT 1 FROM cases LIMIT 1").fetchone():
            casebook_corpus.fill(book, casebook_corpus.generate(3, 3000, campaigns=6, spam=2))
    state = ServeState(root=root / "casebook", host="127.0.0.1", port=0, token=None, signing_key=None,
                       run_id="screenshots")
    server = make_server("127.0.0.1", 0, create_app(state), threaded=True)
    state.port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    written: list[tuple[Path, int]] = []
    try:
        for lang in langs:
            for width in widths:
                driver = make_driver(root / "profiles" / f"casebook-{lang}-{width}")
                try:
                    set_width(driver, width)
                    state.token = secrets.token_urlsafe(16)  # a fresh one-time link per browser
                    driver.get(state.login_url())
                    driver.get(f"{state.origin}/charts?lang={lang}")
                    settle(driver)
                    path = out / f"casebook-charts-{lang}-{width}.png"
                    written.append((path, capture(driver, width, path)))
                    print(f"   {path} ({written[-1][1] // 1024} KB)", flush=True)
                finally:
                    driver.quit()
    finally:
        server.shutdown()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "docs" / "screenshots",
                        help="folder for the PNGs (default: docs/screenshots/)")
    parser.add_argument("--page", action="append", choices=PAGES, help="only these pages")
    parser.add_argument("--lang", action="append", choices=LANGS, help="only these languages")
    parser.add_argument("--width", action="append", type=int, help="only these widths")
    args = parser.parse_args()
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        print("needs Debian's chromium and chromium-driver (apt install chromium chromium-driver)",
              file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="whistle-screenshots-") as tmp:
        root = Path(tmp)
        environ, app, ws = make_instance(root)
        phrase = report_with_reply(app, ws)
        pages = args.page or list(PAGES)
        if "transparency" in pages:
            publish_figures(app, root)
        app.extensions["whistle"].engine.dispose()
        proc, base = start_server(environ, root)
        try:
            written = shoot(base, phrase, out, root / "profiles",
                            [p for p in pages if p != "casebook-charts"],
                            args.lang or list(LANGS), args.width or list(WIDTHS))
            if "casebook-charts" in pages:
                written += shoot_casebook_charts(out, root, args.lang or list(LANGS),
                                                 args.width or list(WIDTHS))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    total = sum(size for _, size in written)
    print(f"{len(written)} screenshots, {total // 1024} KB, in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
