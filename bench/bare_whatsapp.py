# SPDX-License-Identifier: AGPL-3.0-or-later
"""The baseline for bench/whatsapp.py: a WSGI app that reads a webhook body and checks its
``X-Hub-Signature-256`` (HMAC-SHA256 under the app secret, constant-time compare), nothing more.

Served by the same gunicorn settings as the bridge (deploy/gunicorn-whatsapp.conf.py):

    gunicorn -c deploy/gunicorn-whatsapp.conf.py --pythonpath bench bare_whatsapp:app
"""

from __future__ import annotations

import hashlib
import hmac
import os

SECRET = os.environ.get("WHISTLE_WHATSAPP_APP_SECRET", "").encode()


def app(environ, start_response):  # type: ignore[no-untyped-def]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    given = environ.get("HTTP_X_HUB_SIGNATURE_256", "")
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    ok = environ["REQUEST_METHOD"] == "GET" or hmac.compare_digest(given.encode(), expected.encode())
    status, text = ("200 OK", b"ok") if ok else ("403 Forbidden", b"forbidden")
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
    return [text]
