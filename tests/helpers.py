# SPDX-License-Identifier: AGPL-3.0-or-later
"""Test helpers: a Python client of the API, export and decrypt in one call."""

from __future__ import annotations

import io
from pathlib import Path

from conftest import Workstation, csrf_token
from flask import Flask
from flask.testing import FlaskClient

from whistle.core.crypto import (
    AttachmentRef,
    Envelope,
    UnitPublicKey,
    encrypt_stream,
    new_stream_key,
    seal_envelope,
)
from whistle.server.export import export_bundle
from whistle.workstation.decrypt import decrypt_bundle


def api_payload(unit_key: UnitPublicKey, body: str, files: list[tuple[str, str, bytes]],
                category: str = "corruption") -> dict[str, object]:
    """What the page's script sends: a sealed envelope and encrypted attachment streams."""
    refs, streams = [], []
    for name, mime, data in files:
        key = new_stream_key()
        out = io.BytesIO()
        encrypt_stream(io.BytesIO(data), out, key)
        refs.append(AttachmentRef(name=name, type=mime, size=len(data), key=key))
        streams.append((io.BytesIO(out.getvalue()), "attachment.bin", "application/octet-stream"))
    sealed = seal_envelope(Envelope(kind="report", category=category, body=body,
                                    attachments=tuple(refs)), unit_key)
    return {"report": (io.BytesIO(sealed), "report.bin", "application/octet-stream"),
            "attachment": streams}


def post_api(client: FlaskClient, payload: dict[str, object], token: str | None = None):  # type: ignore[no-untyped-def]
    token = token if token is not None else csrf_token(client)
    return client.post("/api/v1/reports", data=payload, content_type="multipart/form-data",
                       headers={"X-CSRFToken": token})


def post_form(client: FlaskClient, body: str, files: list[tuple[str, str, bytes]],
              category: str = "medication", **extra: object):  # type: ignore[no-untyped-def]
    data: dict[str, object] = {"csrf_token": csrf_token(client), "category": category, "body": body,
                               "attachments": [(io.BytesIO(d), n, m) for n, m, d in files]}
    data.update(extra)
    return client.post("/submit", data=data, content_type="multipart/form-data")


def pow_token(client: FlaskClient, purpose: str) -> str:
    """Fetch a proof-of-work challenge and solve it in Python, as pow.js does in the browser:
    the value of the X-Whistle-PoW header or the form field ``pow``."""
    import base64

    from whistle.server.pow import solve

    data = client.get(f"/api/v1/pow?purpose={purpose}").get_json()
    nonce = solve(base64.b64decode(data["challenge"]), data["difficulty"])
    return f"{data['challenge']}.{nonce}"


def export_and_decrypt(app: Flask, ws: Workstation, tmp: Path, *, include_all: bool = False) -> Path:
    """Run the server's export and the workstation's decrypt; return the output folder."""
    state = app.extensions["whistle"]
    bundle = tmp / "bundle.zip"
    export_bundle(state.sessions, bundle, unit_fingerprint=state.unit_key.fingerprint(),
                  include_all=include_all)
    out = tmp / "decrypted"
    decrypt_bundle(bundle, ws.secret_key, out)
    return out


def report_folders(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def multipart(fields: list[tuple[str, str | tuple[str, str, bytes]]]) -> tuple[bytes, str]:
    """Encode multipart/form-data by hand (a browser's JavaScript-off form post)."""
    import secrets

    boundary = "----whistletest" + secrets.token_hex(8)
    out = bytearray()
    for name, value in fields:
        out += f"--{boundary}\r\n".encode()
        if isinstance(value, tuple):
            filename, mime, data = value
            out += (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    f"Content-Type: {mime}\r\n\r\n").encode()
            out += data
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode()
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def find_needles(files: list[Path], needles: dict[str, bytes]) -> list[str]:
    """Every (file, needle) pair where a needle's bytes occur in a file, in UTF-8 or UTF-16."""
    hits = []
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            # PostgreSQL removes files of its own (dropped test databases, temporary relations)
            # while we read its data directory; what no longer exists holds nothing.
            continue
        for label, needle in needles.items():
            variants = {needle, needle.decode("utf-8", "replace").encode("utf-16-le")}
            if any(v in data for v in variants):
                hits.append(f"{label} in {path}")
    return hits


# --- The production server: gunicorn with deploy/gunicorn.conf.py ---------------------------

REPO = Path(__file__).resolve().parent.parent
GUNICORN_CONF = REPO / "deploy" / "gunicorn.conf.py"


def start_gunicorn(environ: dict[str, str], *, bind: str, tmp_dir: Path, stdout: object,
                   stderr: object, extra_env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """Start ``gunicorn -c deploy/gunicorn.conf.py wsgi:app`` as the production unit would, in a
    process group of its own (``os.killpg(proc.pid, …)`` reaches the master and its workers).

    Only the test instance's ``WHISTLE_*`` variables are passed on, and no ``GUNICORN_CMD_ARGS``
    or ``FORWARDED_ALLOW_IPS`` from the calling environment can change the configuration.
    """
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WHISTLE_", "GUNICORN_", "FORWARDED_ALLOW_IPS"))}
    # The production configuration serves one interface per gunicorn; the source one unless a
    # test asks for the investigators'.
    env.update({"WHISTLE_INTERFACE": "source"}, **environ)
    env.update(WHISTLE_BIND=bind, TMPDIR=str(tmp_dir), PYTHONUNBUFFERED="1")
    env.update(extra_env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "wsgi:app"],
        env=env, stdout=stdout, stderr=stderr, cwd=REPO, start_new_session=True,
    )


def wait_until_serving(url: str, proc, timeout: float = 60,  # type: ignore[no-untyped-def]
                       path: str = "/api/v1/unit-key") -> None:
    """Poll ``url`` until the server answers; raise with its exit status if it dies first."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + path, timeout=2):  # noqa: S310
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with status {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in time") from None
            time.sleep(0.05)


def page_session(port: int, path: str = "/submit") -> tuple[str, str]:
    """GET a source page of the server on ``port`` as a browser would; return its session cookie
    (``name=value``) and the CSRF token of its ``<meta name="csrf-token">``."""
    import http.client
    import re

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        html = resp.read().decode()
        cookie = (resp.getheader("Set-Cookie") or "").split(";", 1)[0]
    finally:
        conn.close()
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert cookie and token, "the page gave no session cookie or CSRF token"
    return cookie, token.group(1)
