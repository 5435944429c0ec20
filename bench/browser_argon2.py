# SPDX-License-Identifier: AGPL-3.0-or-later
"""In-browser argon2id at the production costs, in the real worker (js/crypto-worker.js).

Protocol v2 derives the source's keys in the browser: one argon2id (t=3, 64 MiB by default, the
instance's costs) when a report is filed and at every login. This measures how long the source
waits, in headless Debian Chromium, with WebAssembly and without it (``--js-flags=--jitless``:
no WebAssembly in pages or workers and no JavaScript JIT, as Tor Browser's "Safer" level; Chromium
156 ignores ``--noexpose_wasm``). The page starts js/crypto-worker.js exactly as the source pages
do (script addresses passed in ``init``) and asks it to ``derive``; the time is taken in the page,
so it includes the messages to and from the worker. The worker's own estimate (from its
calibration, which the page shows as progress) is printed beside the real time.

The baseline is the server's own derivation (argon2-cffi, ``whistle.core.passphrase.derive``) at
the same costs on the same machine: what the server-derived path spends per login.

    .venv/bin/python bench/browser_argon2.py [--reps 3] [--t 3] [--m-mib 64] [--purejs-reps 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Result, banner, emit, median, tempdir  # noqa: E402
from browser import CHROMEDRIVER, CHROMIUM, Handler, make_driver, serve  # noqa: E402

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>whistle argon2 bench</title>
<script src="/argon2-page.js"></script></head><body>bench</body></html>
"""

PAGE_JS = b"""
var w = new Worker('/static/js/crypto-worker.js'), nextId = 1, waiting = {};
w.onmessage = function (e) {
  if (e.data.type === 'progress') return;
  var p = waiting[e.data.id]; delete waiting[e.data.id]; p(e.data);
};
function call(op, args) {
  return new Promise(function (resolve) {
    var id = nextId++; waiting[id] = resolve; w.postMessage({id: id, op: op, args: args});
  });
}
var initInfo = call('init', {urls: {
  sodium: '/static/vendor/libsodium-sumo/libsodium-sumo.js', ready: '/static/js/libsodium-ready.js',
  wrappers: '/static/vendor/libsodium-sumo/libsodium-wrappers.js',
  crypto: '/static/js/whistle-crypto.js', pow: '/static/js/pow.js'}});
"""

# Started with execute_script and polled: without WebAssembly and JIT one derivation takes longer
# than Selenium's two-minute HTTP timeout.
DERIVE_JS = """
window.benchAnswer = null;
const done = (answer) => { window.benchAnswer = answer; };
const [t, m] = [arguments[0], arguments[1]];
initInfo.then(async (init) => {
  if (init.type !== 'result') { done({ok: false, error: JSON.stringify(init.error)}); return; }
  const cal = init.result.calibration;
  const t0 = performance.now();
  const r = await call('derive', {typed: 'ventana perro casa sol luna mar rio', argon2: {
    alg: 'argon2id13', salt: 'c2FsdHNhbHRzYWx0c2FsdA==', opslimit: t, memlimit: m, bytes: 64}});
  const ms = performance.now() - t0;
  if (r.type !== 'result') { done({ok: false, error: JSON.stringify(r.error), ms: ms}); return; }
  done({ok: true, ms: ms, wasm: init.result.wasm,
        estimate: cal.ms * (t * m) / (cal.opslimit * cal.memlimit), userAgent: navigator.userAgent});
});
"""

Handler.MEMORY["/argon2.html"] = (PAGE, "text/html; charset=utf-8")
Handler.MEMORY["/argon2-page.js"] = (PAGE_JS, "text/javascript")


def browser_times(url: str, profile: Path, *, wasm: bool, t: int, m: int,
                  reps: int) -> tuple[list[float], list[float], dict]:  # type: ignore[type-arg]
    """(real seconds, estimated seconds, last answer) of ``reps`` derivations in one page."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver = make_driver(profile, wasm=wasm)
    try:
        driver.get(url + "/argon2.html")
        real: list[float] = []
        estimated: list[float] = []
        answer: dict = {}  # type: ignore[type-arg]
        for rep in range(reps):
            driver.execute_script(DERIVE_JS, t, m)
            answer = WebDriverWait(driver, 1800, poll_frequency=0.2).until(
                lambda d: d.execute_script("return window.benchAnswer"))
            if not answer.get("ok"):
                print(f"  {'wasm' if wasm else 'pure JS'}: derivation failed: {answer}")
                return real, estimated, answer
            assert answer["wasm"] == wasm, answer
            real.append(answer["ms"] / 1000)
            estimated.append(answer["estimate"] / 1000)
            print(f"  {'wasm' if wasm else 'pure JS'} rep {rep + 1}: {real[-1]:.2f} s "
                  f"(the page's estimate: {estimated[-1]:.2f} s)")
        return real, estimated, answer
    finally:
        driver.quit()


def server_times(t: int, m_kib: int, reps: int) -> list[float]:
    """The server's derivation (argon2-cffi) at the same costs."""
    from whistle.core.passphrase import Argon2Params, derive

    params = Argon2Params(salt=os.urandom(16), time_cost=t, memory_cost_kib=m_kib)
    out = []
    for _ in range(reps):
        started = time.perf_counter()
        derive("ventana perro casa sol luna mar rio", params)
        out.append(time.perf_counter() - started)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--purejs-reps", type=int, default=1)
    ap.add_argument("--t", type=int, default=3)
    ap.add_argument("--m-mib", type=int, default=64)
    args = ap.parse_args()
    banner("browser_argon2")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        print("Debian's chromium and chromium-driver are not installed; nothing is downloaded.")
        return 2
    m = args.m_mib * 1024 * 1024
    server, url = serve()
    try:
        with tempdir("whistle-bench-argon2-") as root:
            wasm, wasm_est, info = browser_times(url, root / "wasm", wasm=True, t=args.t, m=m,
                                                 reps=args.reps)
            pure, pure_est, pure_info = browser_times(url, root / "purejs", wasm=False, t=args.t,
                                                      m=m, reps=args.purejs_reps)
    finally:
        server.shutdown()
    native = server_times(args.t, args.m_mib * 1024, args.reps)
    if not wasm:
        print("the WebAssembly derivation failed")
        return 1
    ratio = median(native) / median(wasm)
    emit(Result(
        benchmark="browser_argon2",
        metric=f"argon2id t={args.t}, {args.m_mib} MiB in js/crypto-worker.js, headless Chromium, "
               "WebAssembly",
        value=median(wasm), unit="s", baseline="the server's argon2-cffi derivation, same costs",
        baseline_value=median(native), ratio=ratio, target="reported", passed=True,
        raw={"WebAssembly seconds": [round(x, 3) for x in wasm],
             "WebAssembly, the page's estimate (s)": [round(x, 3) for x in wasm_est],
             "no WebAssembly (jitless) seconds": [round(x, 2) for x in pure] or
                 f"failed: {pure_info.get('error')}",
             "no WebAssembly, the page's estimate (s)": [round(x, 2) for x in pure_est],
             "server argon2-cffi seconds": [round(x, 3) for x in native],
             "browser": info.get("userAgent", "")},
        note="ratio = server time / browser time (below 1: the browser is slower). Without "
             "WebAssembly the page derives with libsodium's pure-JavaScript fallback when its "
             "estimate is at most 30 s (submit.js MAX_DERIVATION_MS), otherwise (as here, no JIT "
             "either) it takes the server path and says so; the time above is what that "
             "fallback would have cost."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
