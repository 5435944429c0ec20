# SPDX-License-Identifier: AGPL-3.0-or-later
"""Protocol v2: the JavaScript path (the browser derives) against the server-derived path.

With JavaScript on, the browser runs argon2id and sends the login key's hash and its public key
(filing) or the login key (logging in); the server runs no argon2 at all. With JavaScript off the
server derives as before. This benchmark starts the production server (deploy/gunicorn.conf.py,
2 workers, Redis), and in one run floods each path from a separate load-generator process:

- submissions: ``POST /api/v1/reports`` (v2: sealed envelope prepared beforehand, a fresh random
  login hash per request, as browsers would send) against ``GET /submit`` + ``POST /submit`` (the
  JavaScript-off form: the server draws a passphrase, derives, seals the text in memory);
- logins: ``POST /api/v1/login`` with the login key of a stored report against ``GET /followup`` +
  ``POST /followup`` with its passphrase (the server derives).

It reports each ratio (targets: submissions >= 20x, logins >= 100x) and the CPU milliseconds the
workers spend per JavaScript-path submission (target: at most 2/3 of Hush Line's 34 ms).

    .venv/bin/python bench/protocol_v2.py [--backend sqlite|postgresql|all] [--concurrency 8]
                                          [--warmup 5] [--duration 20]

Needs Redis on loopback (``bash .ci/services``). Rate ceilings are raised for the run so that the
server, not the configured limits, is measured.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Result,
    banner,
    cookie_from,
    emit,
    get_csrf,
    make_instance,
    median,
    percentile,
    postgres_database,
    postgres_url,
    redis_url,
    start_gunicorn,
    tempdir,
)
from submissions import Sampler  # noqa: E402

HUSHLINE_CPU_MS = 34.0  # the low end of Hush Line's 34-43 ms per anonymous submission
TARGETS = {"submit": 20.0, "login": 100.0}
RAISED = {
    f"WHISTLE_LIMIT_{p}_{w}": "1000000 per minute"
    for p in ("SUBMIT", "LOGIN") for w in ("GLOBAL", "SESSION", "CAPACITY")
}
SCENARIOS = ("js_submit", "form_submit", "js_login", "form_login")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = "----whistlebench" + secrets.token_hex(8)
    out = b""
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode()
    for name, data in files.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{name}.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def form_tokens(html: str) -> tuple[str, str]:
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'<meta name="csrf-token" content="([^"]+)"', html)
    once = re.search(r'name="once" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="once"[^>]*value="([^"]+)"', html)
    if not csrf:
        raise RuntimeError("no csrf token in the form")
    return csrf.group(1), once.group(1) if once else ""


class Client:
    """One keep-alive connection with its own session cookie."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)
        self.cookie = ""

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
        h = dict(headers or {})
        if self.cookie:
            h["Cookie"] = self.cookie
        self.conn.request(method, path, body=body, headers=h)
        resp = self.conn.getresponse()
        data = resp.read()
        self.cookie = cookie_from(resp, self.cookie)
        if resp.will_close:
            self.conn.close()
        return resp.status, data, resp


# --- One request of each scenario: returns True when it did what a source wanted -------------


def js_submit(c: Client, state: dict[str, object]) -> bool:
    if "csrf" not in state:
        state["csrf"], c.cookie = get_csrf(c.conn, "/submit")
    body, ctype = multipart(
        {"login_hash": b64(secrets.token_bytes(32)), "source_public_key": b64(secrets.token_bytes(32))},
        {"report": state["envelope"]})  # type: ignore[dict-item]
    status, _, _ = c.request("POST", "/api/v1/reports", body, {
        "Content-Type": ctype, "X-CSRFToken": str(state["csrf"])})
    return status == 201


def form_submit(c: Client, state: dict[str, object]) -> bool:
    status, html, _ = c.request("GET", "/submit")
    csrf, once = form_tokens(html.decode())
    body, ctype = multipart({"csrf_token": csrf, "once": once, "category": "corruption",
                             "body": "Informe de prueba: " + "x" * 200}, {})
    status, _, _ = c.request("POST", "/submit", body, {"Content-Type": ctype})
    return status == 303


def js_login(c: Client, state: dict[str, object]) -> bool:
    keys: list[str] = state["login_keys"]  # type: ignore[assignment]
    if "csrf" not in state:
        state["csrf"], c.cookie = get_csrf(c.conn, "/followup")
    state["n"] = int(state.get("n", 0)) + 1  # type: ignore[call-overload]
    key = keys[int(state["n"]) % len(keys)]  # type: ignore[call-overload]
    status, data, _ = c.request("POST", "/api/v1/login", urllib.parse.urlencode(
        {"login_key": key}).encode(), {"Content-Type": "application/x-www-form-urlencoded",
                                       "X-CSRFToken": str(state["csrf"])})
    if status != 200:
        return False
    # The session is replaced at login: the answer carries the new session's token; a client
    # that does not find it there reads it from a page, as the browser's script does.
    token = json.loads(data).get("csrf_token")
    if token:
        state["csrf"] = token
    else:
        state["csrf"], c.cookie = get_csrf_keep(c, "/followup")
    return True


def get_csrf_keep(c: Client, path: str) -> tuple[str, str]:
    status, html, _ = c.request("GET", path)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', html.decode())
    if not token:
        raise RuntimeError(f"no csrf token on {path} ({status})")
    return token.group(1), c.cookie


def form_login(c: Client, state: dict[str, object]) -> bool:
    phrases: list[str] = state["passphrases"]  # type: ignore[assignment]
    state["n"] = int(state.get("n", 0)) + 1  # type: ignore[call-overload]
    _, html, _ = c.request("GET", "/followup")
    csrf, _ = form_tokens(html.decode())
    body = urllib.parse.urlencode({"csrf_token": csrf,
                                   "passphrase": phrases[int(state["n"]) % len(phrases)]}).encode()  # type: ignore[call-overload]
    status, _, _ = c.request("POST", "/followup", body,
                             {"Content-Type": "application/x-www-form-urlencoded"})
    return status == 302


def loadgen(spec: dict[str, object], concurrency: int, warmup: float, duration: float) -> dict[str, object]:
    scenario = {"js_submit": js_submit, "form_submit": form_submit, "js_login": js_login,
                "form_login": form_login}[str(spec["scenario"])]
    start = time.monotonic()
    stop_at = start + warmup + duration
    lock = threading.Lock()
    done: list[tuple[float, float, bool]] = []
    errors: list[str] = []

    def run(index: int) -> None:
        client: Client | None = None
        state: dict[str, object] = {}
        state.update(spec.get("state", {}))  # type: ignore[call-overload]
        if "envelope" in state:
            state["envelope"] = base64.b64decode(str(state["envelope"]))
        state["n"] = index * 1000
        while time.monotonic() < stop_at:
            try:
                if client is None:
                    client = Client(str(spec["url"]))
                    state.pop("csrf", None)
                t0 = time.monotonic()
                ok = scenario(client, state)
                t1 = time.monotonic()
                with lock:
                    done.append((t1 - start, t1 - t0, ok))
            except (OSError, http.client.HTTPException, RuntimeError) as exc:
                with lock:
                    if len(errors) < 10:
                        errors.append(f"{type(exc).__name__}: {exc}")
                client = None

    threads = [threading.Thread(target=run, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    window = [(lat, ok) for end, lat, ok in done if warmup <= end < warmup + duration]
    good = [lat for lat, ok in window if ok]
    return {"start": start, "ok": len(good), "failed": len(window) - len(good),
            "p50": median(good) if good else None, "p95": percentile(good, 95) if good else None,
            "errors": errors}


# --- Setup: reports whose login keys / passphrases the login scenarios use --------------------


def file_js_reports(url: str, envelope: bytes, params: object, n: int) -> list[str]:
    """File ``n`` reports on the JavaScript path with login keys we keep (no derivation needed:
    the server only sees the hash of a random login key, as from a browser)."""
    c = Client(url)
    csrf, c.cookie = get_csrf(c.conn, "/submit")
    keys = []
    for _ in range(n):
        login_key = secrets.token_bytes(32)
        body, ctype = multipart({"login_hash": b64(hashlib.sha256(login_key).digest()),
                                 "source_public_key": b64(secrets.token_bytes(32))},
                                {"report": envelope})
        status, data, _ = c.request("POST", "/api/v1/reports", body,
                                    {"Content-Type": ctype, "X-CSRFToken": csrf})
        if status != 201:
            raise RuntimeError(f"setup report refused: {status} {data[:200]!r}")
        keys.append(b64(login_key))
    return keys


def file_form_reports(url: str, n: int) -> list[str]:
    """File ``n`` reports on the JavaScript-off path and read their passphrases from /receipt."""
    phrases = []
    for _ in range(n):
        c = Client(url)
        if not form_submit(c, {}):
            raise RuntimeError("setup form submission refused")
        _, html, _ = c.request("GET", "/receipt")
        found = re.search(r'id="receipt-passphrase"[^>]*>([^<]+)<', html.decode())
        if not found:
            raise RuntimeError("no passphrase on the receipt page")
        phrases.append(found.group(1).strip())
    return phrases


def run_scenario(url: str, scenario: str, state: dict[str, object], workers: list[int],
                 args: argparse.Namespace) -> tuple[dict[str, object], float]:
    spec = json.dumps({"url": url, "scenario": scenario, "state": state})
    gen = subprocess.Popen([sys.executable, __file__, "--loadgen", spec, "--concurrency",
                            str(args.concurrency), "--warmup", str(args.warmup), "--duration",
                            str(args.duration)], stdout=subprocess.PIPE, text=True)
    sampler = Sampler({"workers": workers, "loadgen": [gen.pid]})
    sampler.sample()
    sampler.start()
    out, _ = gen.communicate()
    sampler.halt.set()
    sampler.join()
    if gen.returncode != 0:
        raise RuntimeError(f"load generator failed for {scenario}")
    load = json.loads(out)
    w0 = float(load["start"]) + args.warmup
    used, _, _, _ = sampler.between(w0, w0 + args.duration)
    rate = int(load["ok"]) / args.duration
    cpu_ms = 1000 * used["workers"] / int(load["ok"]) if load["ok"] else float("nan")
    print(f"{scenario}: {rate:.1f}/s ok, {load['failed']} failed, p50 {load['p50']}, "
          f"p95 {load['p95']}, worker CPU {cpu_ms:.1f} ms per request; errors {load['errors'][:2]}")
    load["cpu_ms"] = cpu_ms
    load["worker_cores"] = used["workers"] / args.duration
    load["loadgen_cores"] = used["loadgen"] / args.duration
    return load, rate


def fsync_rate(folder: Path, seconds: float = 3.0) -> float:
    """Appends of 1 KiB each followed by fsync, per second, on the disk the database is on: what a
    database that makes every commit durable (SQLite with synchronous=FULL) is bound by when
    commits cannot share a flush."""
    path = folder / "fsync-probe.bin"
    n = 0
    with path.open("ab") as fh:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            fh.write(secrets.token_bytes(1024))
            fh.flush()
            os.fsync(fh.fileno())
            n += 1
    path.unlink()
    return n / seconds


def measure_backend(name: str, database_url: str | None, redis: str, args: argparse.Namespace
                    ) -> None:
    from whistle.core.crypto import Binding, Envelope, seal_envelope

    with tempdir("whistle-bench-v2-") as root:
        extra = RAISED | {"WHISTLE_RATELIMIT_STORAGE": redis}
        inst = make_instance(root, database_url=database_url, extra=extra)
        pub = inst.secret_key.public_key  # type: ignore[attr-defined]
        envelope = seal_envelope(Envelope(
            kind="report", category="corruption", body="Informe de prueba: " + "x" * 200,
            binding=Binding(case_tag=secrets.token_bytes(16), seq=1,
                            source_public_key=secrets.token_bytes(32))), pub)
        fsyncs = fsync_rate(root)
        print(f"[{name}] raw disk: {fsyncs:.0f} appends+fsync per second")
        server = start_gunicorn(inst.environ, root, workers=2)
        try:
            workers = server.workers()
            login_keys = file_js_reports(server.url, envelope, None, 200)
            passphrases = file_form_reports(server.url, 8)
            results = {}
            rates = {}
            for scenario, state in (
                    ("js_submit", {"envelope": b64(envelope)}),
                    ("form_submit", {}),
                    ("js_login", {"login_keys": login_keys}),
                    ("form_login", {"passphrases": passphrases})):
                results[scenario], rates[scenario] = run_scenario(server.url, scenario, state,
                                                                  workers, args)
        finally:
            server.stop()

    note = (f"{name}; 2 gunicorn workers, Redis; ceilings raised for the run; the load generator "
            f"runs on the same 2 cores; raw disk {fsyncs:.0f} fsync/s in this run")
    for purpose in ("submit", "login"):
        js, form = rates[f"js_{purpose}"], rates[f"form_{purpose}"]
        ratio = js / form if form else float("inf")
        emit(Result(
            benchmark="protocol_v2", metric=f"{purpose}s/s, JavaScript path (browser derives), {name}",
            value=js, unit="/s", baseline=f"{purpose}s/s, server-derived path, same run",
            baseline_value=form, ratio=ratio, target=f">= {TARGETS[purpose]:.0f}",
            passed=ratio >= TARGETS[purpose],
            raw={k: {kk: vv for kk, vv in v.items() if kk != "start"} for k, v in results.items()
                 if k.endswith(purpose)} | {"raw disk fsync/s": round(fsyncs)}, note=note))
    cpu = float(results["js_submit"]["cpu_ms"])  # type: ignore[arg-type]
    target = HUSHLINE_CPU_MS * 2 / 3
    emit(Result(
        benchmark="protocol_v2", metric=f"worker CPU ms per JavaScript-path submission, {name}",
        value=cpu, unit="ms", baseline="Hush Line, 34-43 ms (low end)", baseline_value=HUSHLINE_CPU_MS,
        ratio=cpu / HUSHLINE_CPU_MS, target=f"<= {target:.1f} ms (2/3)", passed=cpu <= target,
        raw={"server-derived submission CPU ms": results["form_submit"]["cpu_ms"],
             "JS login CPU ms": results["js_login"]["cpu_ms"],
             "server-derived login CPU ms": results["form_login"]["cpu_ms"]}, note=note))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="all")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--loadgen", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.loadgen:
        print(json.dumps(loadgen(json.loads(args.loadgen), args.concurrency, args.warmup,
                                 args.duration)))
        return 0

    banner("protocol_v2")
    redis = redis_url()
    if redis is None:
        print("Redis is not running on loopback: run `bash .ci/services` first.")
        return 2
    backends: list[tuple[str, str | None]] = []
    if args.backend in ("sqlite", "all"):
        backends.append(("SQLite", None))
    if args.backend in ("postgresql", "all"):
        pg = postgres_url()
        if pg is None:
            print("PostgreSQL is not answering: measuring SQLite only")
        else:
            backends.append(("PostgreSQL", pg))
    for name, admin in backends:
        if admin is None:
            measure_backend(name, None, redis, args)
        else:
            with postgres_database(admin) as url:
                measure_backend(name, url, redis, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
