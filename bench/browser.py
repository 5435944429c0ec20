# SPDX-License-Identifier: AGPL-3.0-or-later
"""In-browser attachment encryption in the Web Worker: whistleCrypto.encryptFile vs a raw
libsodium.js push loop, both in the same worker.

Headless Debian Chromium (/usr/bin/chromium + /usr/bin/chromedriver through Selenium; nothing is
downloaded) opens a page from a tiny local static server; the page starts a dedicated worker that
imports the vendored sumo libsodium.js files, the libsodium-ready.js shim and whistle-crypto.js in
one importScripts call, exactly as js/crypto-worker.js does. In the worker, a 100 MiB Blob is built
from random 64 KiB chunks; then, alternately in the same worker:

- ``whistleCrypto.encryptFile(blob, key)`` (what js/crypto-worker.js runs on each attachment:
  reads the Blob 1 MiB at a time with FileReaderSync, pushes each 64 KiB chunk through the
  module's heap, returns a Blob of the ciphertext parts);
- the baseline: ``sodium.crypto_secretstream_xchacha20poly1305_push`` over the same 64 KiB chunks
  already in memory (same chunk cut, FINAL tag on an empty last chunk), ciphertext parts kept.

Then the same once more without WebAssembly (``--js-flags=--jitless``: Chromium 156 ignores
``--noexpose_wasm``; jitless removes WebAssembly from pages and workers and turns the JIT off, as
Tor Browser's "Safer" level does) — libsodium.js's pure-JavaScript fallback, for information.

    .venv/bin/python bench/browser.py [--size-mib 100] [--reps 3] [--purejs-size-mib 16]
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
NO_WASM_FLAGS = ["--js-flags=--jitless"]

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>whistle bench</title>
<script src="/bench-page.js"></script>
</head><body>bench</body></html>
"""

# The page: one worker, and a promise-returning call into it for Selenium.
PAGE_JS = b"""
var benchWorker = new Worker('/bench-worker.js');
var benchNext = 1, benchPending = {};
benchWorker.onmessage = function (e) {
  var p = benchPending[e.data.id]; delete benchPending[e.data.id]; p(e.data.result);
};
benchWorker.onerror = function (e) {
  Object.keys(benchPending).forEach(function (id) { benchPending[id]({ok: false, error: e.message}); });
};
function bench(op, arg) {
  return new Promise(function (resolve) {
    var id = benchNext++; benchPending[id] = resolve; benchWorker.postMessage({id: id, op: op, arg: arg});
  });
}
"""

# The worker: the same scripts, in the same order and call, as js/crypto-worker.js.
WORKER_JS = b"""
importScripts('/static/vendor/libsodium-sumo/libsodium-sumo.js', '/static/js/libsodium-ready.js',
              '/static/vendor/libsodium-sumo/libsodium-wrappers.js', '/static/js/whistle-crypto.js');
var ready = self.sodium.ready;
var blob = null, chunks = null;
var ops = {
  setup: async function (size) {
    var CH = 65536, DISTINCT = 16;
    chunks = [];
    for (var i = 0; i < DISTINCT; i++) {
      var c = new Uint8Array(CH); crypto.getRandomValues(c); chunks.push(c);
    }
    var parts = [];
    for (var off = 0; off < size; off += CH) {
      parts.push(chunks[(off / CH) % DISTINCT].subarray(0, Math.min(CH, size - off)));
    }
    blob = new Blob(parts);
    return {ok: true, size: blob.size, wasm: typeof WebAssembly === 'object', userAgent: navigator.userAgent};
  },
  encryptFile: async function () {
    var key = whistleCrypto.newAttachmentKey();
    var t0 = performance.now();
    var out = await whistleCrypto.encryptFile(blob, key);
    var t1 = performance.now();
    if (out.size !== whistleCrypto.ciphertextSize(blob.size)) throw new Error('bad size ' + out.size);
    return {ok: true, ms: t1 - t0};
  },
  raw: async function () {
    var s = self.sodium, size = blob.size, CH = 65536;
    var key = s.crypto_secretstream_xchacha20poly1305_keygen();
    var t0 = performance.now();
    var st = s.crypto_secretstream_xchacha20poly1305_init_push(key);
    var parts = [st.header], total = st.header.length;
    for (var off = 0; ; off += CH) {
      var end = Math.min(off + CH, size), final = end - off < CH;
      var chunk = chunks[(off / CH) % chunks.length].subarray(0, end - off);
      var tag = final ? s.crypto_secretstream_xchacha20poly1305_TAG_FINAL
        : s.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
      var c = s.crypto_secretstream_xchacha20poly1305_push(st.state, chunk, null, tag);
      parts.push(c); total += c.length;
      if (final) break;
    }
    var t1 = performance.now();
    if (total !== whistleCrypto.ciphertextSize(size)) throw new Error('bad size ' + total);
    return {ok: true, ms: t1 - t0};
  }
};
onmessage = function (e) {
  ready.then(function () { return ops[e.data.op](e.data.arg); }).then(function (r) {
    postMessage({id: e.data.id, result: r});
  }, function (err) {
    postMessage({id: e.data.id, result: {ok: false, error: String(err && err.stack || err)}});
  });
};
"""

CALL_JS = """
const done = arguments[arguments.length - 1];
bench(arguments[0], arguments[1]).then(done, e => done({ok: false, error: String(e)}));
"""


class Handler(SimpleHTTPRequestHandler):
    """/bench.html and the bench scripts from memory, /static/… from whistle/static; no logging."""

    MEMORY = {"/bench.html": (PAGE, "text/html; charset=utf-8"),
              "/bench-page.js": (PAGE_JS, "text/javascript"),
              "/bench-worker.js": (WORKER_JS, "text/javascript")}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path in self.MEMORY:
            body, kind = self.MEMORY[self.path]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if not self.path.startswith("/static/"):
            self.send_error(404)
            return
        self.path = self.path[len("/static"):]
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


def serve() -> tuple[ThreadingHTTPServer, str]:
    """The static server for whistle/static (and the bench pages), on a free loopback port."""
    handler = partial(Handler, directory=str(REPO / "whistle" / "static"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def make_driver(profile: Path, *, wasm: bool):  # type: ignore[no-untyped-def]
    """Headless Chromium; without WebAssembly (pages and workers) when ``wasm`` is false."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                *([] if wasm else NO_WASM_FLAGS)):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(1800)
    return driver


def run(driver, op: str, arg: object = None) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """One operation in the bench worker; raise on its error."""
    result = driver.execute_async_script(CALL_JS, op, arg)
    if not result.get("ok"):
        raise RuntimeError(result.get("error"))
    return result  # type: ignore[no-any-return]


def measure(url: str, profile: Path, *, wasm: bool, size: int,
            reps: int) -> tuple[list[float], list[float], dict]:  # type: ignore[type-arg]
    driver = make_driver(profile, wasm=wasm)
    label = "wasm" if wasm else "pure JS"
    try:
        driver.get(url + "/bench.html")
        # Warm-up on a small Blob (JIT, WebAssembly tier-up), not counted.
        info = run(driver, "setup", 8 * 1024 * 1024)
        assert info["wasm"] == wasm, info
        run(driver, "raw")
        run(driver, "encryptFile")
        info = run(driver, "setup", size)
        app, raw = [], []
        for rep in range(reps):
            raw.append(run(driver, "raw")["ms"] / 1000)
            app.append(run(driver, "encryptFile")["ms"] / 1000)
            print(f"  {label} rep {rep + 1}: raw push {raw[-1]:.2f} s, encryptFile {app[-1]:.2f} s")
        return app, raw, info
    finally:
        driver.quit()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--purejs-size-mib", type=int, default=16)
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
            pj_app, pj_raw, _ = measure(url, root / "purejs", wasm=False, size=pj_size,
                                        reps=args.purejs_reps)
    finally:
        server.shutdown()

    mb = size / 1e6
    app_tp, raw_tp = mb / median(app), mb / median(raw)
    pj_mb = pj_size / 1e6
    pj_app_tp, pj_raw_tp = pj_mb / median(pj_app), pj_mb / median(pj_raw)
    ratio = app_tp / raw_tp
    emit(Result(
        benchmark="browser", metric=f"whistleCrypto.encryptFile in the Web Worker, {args.size_mib} "
                                    "MiB Blob, headless Chromium, WebAssembly",
        value=app_tp, unit="MB/s",
        baseline="raw libsodium.js secretstream push loop, same chunks, same worker",
        baseline_value=raw_tp, ratio=ratio, target=f">= {TARGET}", passed=ratio >= TARGET,
        raw={"encryptFile seconds": [round(x, 3) for x in app],
             "raw push seconds": [round(x, 3) for x in raw],
             f"pure JS (no WebAssembly, jitless), {args.purejs_size_mib} MiB: encryptFile MB/s":
                 round(pj_app_tp, 1),
             "pure JS: raw push MB/s": round(pj_raw_tp, 1),
             "pure JS: ratio": round(pj_app_tp / pj_raw_tp, 3),
             "pure JS: encryptFile seconds": [round(x, 2) for x in pj_app],
             "pure JS: raw push seconds": [round(x, 2) for x in pj_raw]},
        note=f"pure JS (no WebAssembly, no JIT: Tor Browser 'Safer'): encryptFile "
             f"{pj_app_tp:.1f} MB/s vs raw {pj_raw_tp:.1f} MB/s, for information"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
