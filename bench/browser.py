# SPDX-License-Identifier: AGPL-3.0-or-later
"""In-browser attachment encryption: whistleCrypto.encryptFile vs a raw libsodium.js push loop.

Headless Debian Chromium (/usr/bin/chromium + /usr/bin/chromedriver through Selenium; nothing is
downloaded) opens a page from a tiny local static server that loads the vendored libsodium.js
files, the libsodium-ready.js shim and whistle-crypto.js exactly as templates/submit.html does.
In the page, a 100 MiB Blob is built from random 64 KiB chunks; then, alternately in the same page:

- ``whistleCrypto.encryptFile(blob, key)`` (what the submit page runs on each attachment: slices
  the Blob, reads each slice, pushes it, returns a Blob of the ciphertext parts);
- the baseline: ``crypto_secretstream_xchacha20poly1305_push`` over the same 64 KiB chunks
  already in memory (same chunk cut, FINAL tag on an empty last chunk), ciphertext parts kept.

Then the same once more with WebAssembly deleted before any script runs (CDP
Page.addScriptToEvaluateOnNewDocument, as tests/test_browser.py does) — libsodium.js's pure
JavaScript fallback, Tor Browser's "Safer" level — for information.

    .venv/bin/python bench/browser.py [--size-mib 100] [--reps 3] [--purejs-size-mib 100]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Result, banner, emit, median, tempdir  # noqa: E402

TARGET = 0.7
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>whistle bench</title>
<script src="/static/vendor/libsodium/libsodium.js"></script>
<script src="/static/js/libsodium-ready.js"></script>
<script src="/static/vendor/libsodium/libsodium-wrappers.js"></script>
<script src="/static/js/whistle-crypto.js"></script>
</head><body>bench</body></html>
"""

# Runs in the page (execute_async_script): the last argument is Selenium's callback.
SETUP_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  await sodium.ready;
  const size = arguments[0], CH = 65536, DISTINCT = 16;
  const chunks = [];
  for (let i = 0; i < DISTINCT; i++) {
    const c = new Uint8Array(CH);
    crypto.getRandomValues(c);
    chunks.push(c);
  }
  const parts = [];
  for (let off = 0; off < size; off += CH) {
    parts.push(chunks[(off / CH) % DISTINCT].subarray(0, Math.min(CH, size - off)));
  }
  window.benchChunks = chunks;
  window.benchBlob = new Blob(parts);
  done({ok: true, size: window.benchBlob.size, wasm: typeof WebAssembly !== 'undefined',
        userAgent: navigator.userAgent});
})().catch(e => done({ok: false, error: String(e && e.stack || e)}));
"""

ENCRYPT_FILE_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  const blob = window.benchBlob;
  const key = whistleCrypto.newAttachmentKey();
  const t0 = performance.now();
  const out = await whistleCrypto.encryptFile(blob, key);
  const t1 = performance.now();
  if (out.size !== whistleCrypto.ciphertextSize(blob.size)) throw new Error('bad size ' + out.size);
  done({ok: true, ms: t1 - t0});
})().catch(e => done({ok: false, error: String(e && e.stack || e)}));
"""

RAW_PUSH_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  const s = sodium, size = window.benchBlob.size, CH = 65536, chunks = window.benchChunks;
  const key = s.crypto_secretstream_xchacha20poly1305_keygen();
  const t0 = performance.now();
  const st = s.crypto_secretstream_xchacha20poly1305_init_push(key);
  const parts = [st.header];
  let total = st.header.length;
  for (let off = 0; ; off += CH) {
    const end = Math.min(off + CH, size), final = end - off < CH;
    const chunk = chunks[(off / CH) % chunks.length].subarray(0, end - off);
    const tag = final ? s.crypto_secretstream_xchacha20poly1305_TAG_FINAL
      : s.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
    const c = s.crypto_secretstream_xchacha20poly1305_push(st.state, chunk, null, tag);
    parts.push(c);
    total += c.length;
    if (final) break;
  }
  const t1 = performance.now();
  if (total !== whistleCrypto.ciphertextSize(size)) throw new Error('bad size ' + total);
  done({ok: true, ms: t1 - t0});
})().catch(e => done({ok: false, error: String(e && e.stack || e)}));
"""

# For information: the same work as encryptFile, timed by part (Blob reads, pushes, wiping the
# plaintext, building the result Blob), reading arguments[0] bytes of the Blob at a time.
BREAKDOWN_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  const blob = window.benchBlob, s = sodium, CH = 65536, READ = arguments[0];
  const key = s.crypto_secretstream_xchacha20poly1305_keygen();
  const st = s.crypto_secretstream_xchacha20poly1305_init_push(key);
  const parts = [st.header];
  let read = 0, push = 0, wipe = 0, t;
  const T0 = performance.now();
  for (let off = 0; ; off += READ) {
    const end = Math.min(off + READ, blob.size);
    t = performance.now();
    const buf = new Uint8Array(await blob.slice(off, end).arrayBuffer());
    read += performance.now() - t;
    t = performance.now();
    for (let o = 0; o < buf.length; o += CH) {
      const e = Math.min(o + CH, buf.length);
      const final = off + e === blob.size && e - o < CH;
      parts.push(s.crypto_secretstream_xchacha20poly1305_push(st.state, buf.subarray(o, e), null,
        final ? 3 : 0));
    }
    push += performance.now() - t;
    t = performance.now();
    s.memzero(buf);
    wipe += performance.now() - t;
    if (end === blob.size) break;
  }
  if (blob.size % CH === 0) {
    parts.push(s.crypto_secretstream_xchacha20poly1305_push(st.state, new Uint8Array(0), null, 3));
  }
  t = performance.now();
  const out = new Blob(parts);
  const make = performance.now() - t;
  if (out.size !== whistleCrypto.ciphertextSize(blob.size)) throw new Error('bad size ' + out.size);
  done({ok: true, total: performance.now() - T0, read: read, push: push, wipe: wipe, blob: make});
})().catch(e => done({ok: false, error: String(e && e.stack || e)}));
"""


class Handler(SimpleHTTPRequestHandler):
    """/bench.html from memory, /static/… from whistle/static; no logging."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/bench.html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)
            return
        if not self.path.startswith("/static/"):
            self.send_error(404)
            return
        self.path = self.path[len("/static"):]
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


def serve() -> tuple[ThreadingHTTPServer, str]:
    handler = partial(Handler, directory=str(REPO / "whistle" / "static"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def make_driver(profile: Path, *, wasm: bool):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    if not wasm:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                               {"source": "delete globalThis.WebAssembly;"})
    driver.set_script_timeout(900)
    return driver


def run(driver, script: str, *args: object) -> dict:  # type: ignore[no-untyped-def, type-arg]
    result = driver.execute_async_script(script, *args)
    if not result.get("ok"):
        raise RuntimeError(result.get("error"))
    return result  # type: ignore[no-any-return]


def measure(url: str, profile: Path, *, wasm: bool, size: int,
            reps: int) -> tuple[list[float], list[float], dict]:  # type: ignore[type-arg]
    driver = make_driver(profile, wasm=wasm)
    try:
        driver.get(url + "/bench.html")
        # Warm-up on a small Blob (JIT, WebAssembly tier-up), not counted.
        info = run(driver, SETUP_JS, 8 * 1024 * 1024)
        assert info["wasm"] == wasm, info
        run(driver, RAW_PUSH_JS)
        run(driver, ENCRYPT_FILE_JS)
        info = run(driver, SETUP_JS, size)
        app, raw = [], []
        for rep in range(reps):
            raw.append(run(driver, RAW_PUSH_JS)["ms"] / 1000)
            app.append(run(driver, ENCRYPT_FILE_JS)["ms"] / 1000)
            print(f"  {'wasm' if wasm else 'pure JS'} rep {rep + 1}: raw push {raw[-1]:.2f} s, "
                  f"encryptFile {app[-1]:.2f} s")
        parts = {}
        for read in (65536, 1024 * 1024):
            r = run(driver, BREAKDOWN_JS, read)
            parts[f"{read // 1024} KiB reads"] = {k: round(r[k] / 1000, 3) for k in
                                                  ("total", "read", "push", "wipe", "blob")}
        info["breakdown"] = parts
        print(f"  {'wasm' if wasm else 'pure JS'} breakdown, seconds: {parts}")
        return app, raw, info
    finally:
        driver.quit()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--purejs-size-mib", type=int, default=100)
    ap.add_argument("--purejs-reps", type=int, default=1)
    args = ap.parse_args()
    banner("browser")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        print("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
              "chromium-driver); nothing is downloaded.")
        return 2
    server, url = serve()
    try:
        with tempdir("whistle-bench-browser-") as root:
            size = args.size_mib * 1024 * 1024
            app, raw, info = measure(url, root / "wasm", wasm=True, size=size, reps=args.reps)
            print(f"  browser: {info['userAgent']}")
            pj_size = args.purejs_size_mib * 1024 * 1024
            pj_app, pj_raw, pj_info = measure(url, root / "purejs", wasm=False, size=pj_size,
                                        reps=args.purejs_reps)
    finally:
        server.shutdown()

    mb = size / 1e6
    app_tp, raw_tp = mb / median(app), mb / median(raw)
    pj_mb = pj_size / 1e6
    pj_app_tp, pj_raw_tp = pj_mb / median(pj_app), pj_mb / median(pj_raw)
    ratio = app_tp / raw_tp
    emit(Result(
        benchmark="browser", metric=f"whistleCrypto.encryptFile, {args.size_mib} MiB Blob, "
                                    "headless Chromium, WebAssembly",
        value=app_tp, unit="MB/s", baseline="raw libsodium.js secretstream push loop, same chunks",
        baseline_value=raw_tp, ratio=ratio, target=f">= {TARGET}", passed=ratio >= TARGET,
        raw={"encryptFile seconds": [round(x, 3) for x in app],
             "raw push seconds": [round(x, 3) for x in raw],
             f"pure JS (no WebAssembly), {args.purejs_size_mib} MiB: encryptFile MB/s":
                 round(pj_app_tp, 1),
             "pure JS: raw push MB/s": round(pj_raw_tp, 1),
             "pure JS: ratio": round(pj_app_tp / pj_raw_tp, 3),
             "pure JS: encryptFile seconds": [round(x, 2) for x in pj_app],
             "pure JS: raw push seconds": [round(x, 2) for x in pj_raw],
             "breakdown, WebAssembly (s)": info["breakdown"],
             "breakdown, pure JS (s)": pj_info["breakdown"]},
        note=f"pure JS (WebAssembly deleted, Tor Browser 'Safer'): encryptFile {pj_app_tp:.1f} MB/s "
             f"vs raw {pj_raw_tp:.1f} MB/s, for information"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
