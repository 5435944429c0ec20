# SPDX-License-Identifier: AGPL-3.0-or-later
"""Security headers on every response: a strict CSP, no referrer leaks, no caching of source pages."""

from __future__ import annotations

from flask import Flask, Response, request
from flask.typing import ResponseReturnValue

from whistle.core.webpolicy import csp, headers

CSP = csp(
    # 'wasm-unsafe-eval' lets libsodium.js compile its WebAssembly; no inline script, no eval.
    "script-src 'self' 'wasm-unsafe-eval'",
    "connect-src 'self'",
    # js/crypto-worker.js, a dedicated Web Worker from 'self' (its own response carries this CSP).
    "worker-src 'self'",
)

HEADERS = headers(CSP)


def is_tor2web() -> bool:
    """Tor2web proxies announce themselves; through one, the proxy's operator sees everything."""
    return "X-Tor2web" in request.headers  # Werkzeug header lookups ignore case


def init_app(app: Flask) -> None:
    @app.before_request
    def _refuse_tor2web() -> ResponseReturnValue | None:
        if is_tor2web():
            from flask import render_template
            from flask_babel import gettext as _

            message = _("You are using a Tor2web proxy, which can see everything you send. "
                        "Please use Tor Browser to reach this site directly.")
            return render_template("error.html", code=403, message=message), 403
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        # A view may mark public data the same for every visitor (the word lists and derivation
        # parameters, web/source/api.py) as cacheable; nothing else is kept.
        public = response.status_code == 200 and response.headers.get(
            "Cache-Control", "").startswith("public,")
        if not public and not (request.endpoint == "static" and response.status_code in (200, 304)):
            # A shared or seized computer's browser cache must not keep a receipt or a report.
            # Static files carry their own caching headers (static_files.py); their errors not.
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        response.headers.pop("Server", None)
        return response
