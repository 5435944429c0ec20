# SPDX-License-Identifier: AGPL-3.0-or-later
"""The baseline for bench/upload.py: a WSGI app that only reads the request body and discards it.

Served by the same gunicorn settings as the real app (deploy/gunicorn.conf.py):

    gunicorn -c deploy/gunicorn.conf.py --pythonpath bench bare_wsgi:app
"""

from __future__ import annotations

READ = 1024 * 1024


def app(environ, start_response):  # type: ignore[no-untyped-def]
    stream = environ["wsgi.input"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    # ?read=N reads N bytes at a time (default 1 MiB), e.g. 65536 as Werkzeug's multipart parser.
    query = environ.get("QUERY_STRING", "")
    step = int(query[5:]) if query.startswith("read=") and query[5:].isdigit() else READ
    seen = 0
    while seen < length:
        piece = stream.read(min(step, length - seen))
        if not piece:
            break
        seen += len(piece)
    body = f'{{"read": {seen}}}'.encode()
    if environ.get("PATH_INFO") == "/submit":
        # Lets the benchmark's client fetch a "CSRF token" the same way from both servers.
        body = b'<meta name="csrf-token" content="bare">'
    start_response("201 Created" if environ["REQUEST_METHOD"] == "POST" else "200 OK",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
