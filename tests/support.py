# SPDX-License-Identifier: AGPL-3.0-or-later
"""Shared test helpers: the one module test files import from.

Fixtures stay in conftest.py (pytest finds them there); everything a test calls by name lives
here, so that no test imports conftest or another test file (importing a test module runs its
collection-time code and couples unrelated tests).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.cookiejar
import io
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nacl.pwhash
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from whistle import create_app
from whistle.core.crypto import (
    AttachmentRef,
    Binding,
    Envelope,
    UnitPublicKey,
    UnitSecretKey,
    UnitSigningKey,
    encrypt_stream,
    new_stream_key,
    seal_envelope,
)
from whistle.core.replies import seal_reply
from whistle.server.casework import import_replies
from whistle.server.config import Config, load_config
from whistle.server.export import export_bundle
from whistle.server.instance import load_or_create_secrets
from whistle.server.models import Report
from whistle.workstation.decrypt import decrypt_bundle

# --- The unit's keys and the test instance ---------------------------------------------------

KEY_PASSPHRASE = "correct horse battery staple"
FAST_OPS = nacl.pwhash.argon2id.OPSLIMIT_MIN
FAST_MEM = nacl.pwhash.argon2id.MEMLIMIT_MIN

# The second CI run points these at a real PostgreSQL and Redis (see .ci/services): every test
# then gets a database of its own on that server, and Redis for limits and source sessions.
TEST_POSTGRES = os.environ.get("WHISTLE_TEST_POSTGRES", "")
TEST_REDIS = os.environ.get("WHISTLE_TEST_REDIS", "")

REPO = Path(__file__).resolve().parent.parent
GUNICORN_CONF = REPO / "deploy" / "gunicorn.conf.py"


@dataclass
class Workstation:
    """The offline side of a test: the unit's secret and signing keys and their encrypted key file."""

    secret_key: UnitSecretKey
    key_file: Path
    passphrase_file: Path
    root: Path
    signing_key: UnitSigningKey


@contextlib.contextmanager
def postgres_database(prefix: str = "whistle_test_") -> Iterator[str]:
    """A fresh, empty database on the test PostgreSQL server, dropped afterwards."""
    import secrets

    from sqlalchemy import create_engine, text

    name = prefix + secrets.token_hex(6)
    admin = create_engine(TEST_POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{TEST_POSTGRES.rsplit('/', 1)[0]}/{name}"
    finally:
        import time

        from sqlalchemy.exc import ProgrammingError

        # WITH (FORCE) ends our own sessions, but the test role may not end an autovacuum worker
        # that PostgreSQL happened to start on the new database ("must be a member of the role
        # whose process is being terminated"): it finishes in moments on a database this small.
        for attempt in range(20):
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                break
            except ProgrammingError as exc:
                if "must be a member of the role" not in str(exc) or attempt == 19:
                    raise
                time.sleep(0.5)
        admin.dispose()


def uses_sqlite(config: Config) -> bool:
    return config.database_url.startswith("sqlite")


def make_app(environ: dict[str, str], tmp_path: Path, **limits: str) -> Flask:
    """An app on the test instance with its rate limits replaced: ``submit_session="2 per hour"``
    sets ``WHISTLE_LIMIT_SUBMIT_SESSION``; the limits not named take the shipped defaults."""
    env = {k: v for k, v in environ.items() if not k.startswith("WHISTLE_LIMIT_")}
    env |= {f"WHISTLE_LIMIT_{k.upper()}": v for k, v in limits.items()}
    config = load_config(env, cwd=tmp_path)
    load_or_create_secrets(config, time_cost=1, memory_cost_kib=8)
    return create_app(config)


class FrozenClock:
    """``time.time`` held still (a few seconds into a minute) and moved only by the test, so the
    minute-aligned windows cannot roll over in the middle of a test."""

    def __init__(self) -> None:
        import time

        self.now = float(int(time.time()) // 60 * 60 + 5)

    def __call__(self) -> float:
        return self.now


# --- Pages and the API, as the browser uses them ---------------------------------------------


def csrf_token(client: FlaskClient, path: str = "/submit") -> str:
    """Load a page and read the CSRF token from its meta tag, as the page's script does."""
    return csrf_from_html(client.get(path).get_data(as_text=True))


def csrf_from_html(html: str) -> str:
    """The CSRF token of a page's ``<meta name="csrf-token">``."""
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert match, "page carries no csrf-token meta tag"
    return match.group(1)


def form_csrf_token(client: FlaskClient, path: str) -> str:
    """Load a page and read the CSRF token from its form's hidden field."""
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert match, f"{path} carries no csrf_token field"
    return match.group(1)


@dataclass(frozen=True)
class BrowserKeys:
    """What the page's script holds after deriving (docs/protocol.md section 4): never sent whole.
    ``passphrase`` is empty for keys drawn at random (a report nobody logs in to)."""

    passphrase: str
    login_key: bytes
    seed: bytes

    @property
    def login_hash(self) -> bytes:
        return hashlib.sha256(self.login_key).digest()

    @property
    def secret_key(self) -> UnitSecretKey:
        return UnitSecretKey.from_seed(self.seed)

    @property
    def public_key(self) -> bytes:
        return self.secret_key.public_key.encode()

    @property
    def case_tag(self) -> bytes:
        return hashlib.blake2b(b"whistle-case-tag-v2", digest_size=16, key=self.seed).digest()

    def binding(self, seq: int) -> Binding:
        return Binding(case_tag=self.case_tag, seq=seq, source_public_key=self.public_key)

    def key_fields(self) -> dict[str, str]:
        """The text fields of ``POST /api/v1/reports``."""
        return {"login_hash": b64(self.login_hash), "source_public_key": b64(self.public_key)}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def random_browser_keys() -> BrowserKeys:
    """Keys as if derived from some passphrase nobody will type (no argon2: a report only filed)."""
    return BrowserKeys(passphrase="", login_key=os.urandom(32), seed=os.urandom(32))


def browser_derive(client: FlaskClient, phrase: str | None = None, lang: str = "es") -> BrowserKeys:
    """Derive as the page's script does, with libsodium and nothing from the server but the public
    parameters: fetch ``/api/v1/params`` and the word list (checking its SHA-256), draw a
    passphrase (unless ``phrase`` is given), normalise it and run ``crypto_pwhash``."""
    params = client.get("/api/v1/params").get_json()
    served = client.get(params["passphrase"][lang]["url"]).get_data() if phrase is None else b""
    return derive_from_params(params, served, phrase, lang)


def derive_from_params(params: dict[str, Any], wordlist_data: bytes, phrase: str | None = None,
                       lang: str = "es") -> BrowserKeys:
    """:func:`browser_derive` from the answers of ``/api/v1/params`` and the word list's URL."""
    import secrets

    import nacl.pwhash

    from whistle.core.passphrase import normalise

    argon2, listing = params["argon2"], params["passphrase"][lang]
    if phrase is None:
        assert hashlib.sha256(wordlist_data).hexdigest() == listing["sha256"]
        words = wordlist_data.decode("utf-8").splitlines()
        assert len(words) == listing["list_size"]
        phrase = " ".join(secrets.choice(words) for _ in range(listing["words"]))
    assert argon2["alg"] == "argon2id13" and argon2["bytes"] == 64
    out = nacl.pwhash.argon2id.kdf(64, normalise(phrase).encode("utf-8"),
                                   base64.b64decode(argon2["salt"]), opslimit=argon2["opslimit"],
                                   memlimit=argon2["memlimit"])
    return BrowserKeys(passphrase=phrase, login_key=out[:32], seed=out[32:])


def sealed_payload(unit_key: UnitPublicKey, part: str, envelope: Envelope,
                   files: Sequence[tuple[str, str, bytes]]) -> dict[str, object]:
    """An envelope (its attachments added from ``files``) sealed to the unit, with the encrypted
    attachment streams, as multipart parts named ``part`` and ``attachment``."""
    refs, streams = [], []
    for name, mime, data in files:
        key = new_stream_key()
        out = io.BytesIO()
        encrypt_stream(io.BytesIO(data), out, key)
        refs.append(AttachmentRef(name=name, type=mime, size=len(data), key=key))
        streams.append((io.BytesIO(out.getvalue()), "attachment.bin", "application/octet-stream"))
    sealed = seal_envelope(replace(envelope, attachments=tuple(refs)), unit_key)
    return {part: (io.BytesIO(sealed), f"{part}.bin", "application/octet-stream"),
            "attachment": streams}


def api_payload(unit_key: UnitPublicKey, body: str, files: list[tuple[str, str, bytes]],
                category: str = "corruption", keys: BrowserKeys | None = None) -> dict[str, object]:
    """What the page's script sends to ``POST /api/v1/reports``: a v2 envelope bound to ``keys``
    (random ones unless given) sealed to the unit, encrypted attachment streams, and the login
    hash and public key."""
    keys = keys or random_browser_keys()
    envelope = Envelope(kind="report", category=category, body=body, binding=keys.binding(1))
    return sealed_payload(unit_key, "report", envelope, files) | keys.key_fields()


def message_payload(unit_key: UnitPublicKey, keys: BrowserKeys, seq: int, body: str,
                    files: Sequence[tuple[str, str, bytes]] = ()) -> dict[str, object]:
    """What the page's script sends to ``POST /api/v1/messages``: a v2 message (item ``seq`` of
    the case) and its declared ``seq``."""
    envelope = Envelope(kind="message", body=body, binding=keys.binding(seq))
    return sealed_payload(unit_key, "message", envelope, files) | {"seq": str(seq)}


def post_message(client: FlaskClient, payload: dict[str, object]):  # type: ignore[no-untyped-def]
    """Post a message as the page's script does, with the case page's CSRF token."""
    return client.post("/api/v1/messages", data=payload, content_type="multipart/form-data",
                       headers={"X-CSRFToken": csrf_token(client, "/case")})


def file_report_api(client: FlaskClient, unit_key: UnitPublicKey, body: str = "Informe inicial",
                    files: Sequence[tuple[str, str, bytes]] = (), lang: str = "es") -> BrowserKeys:
    """File a report as the page's script does (derive, seal, post); return the keys."""
    keys = browser_derive(client, lang=lang)
    resp = post_api(client, api_payload(unit_key, body, list(files), keys=keys))
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return keys


def browser_login(client: FlaskClient, login_key: bytes | str,
                  token: str | None = None):  # type: ignore[no-untyped-def]
    """``POST /api/v1/login`` as the page's script does; ``login_key`` bytes are base64-encoded."""
    value = b64(login_key) if isinstance(login_key, bytes) else login_key
    token = token if token is not None else csrf_token(client, "/followup")
    return client.post("/api/v1/login", data={"login_key": value}, headers={"X-CSRFToken": token})


def post_api(client: FlaskClient, payload: dict[str, object], token: str | None = None):  # type: ignore[no-untyped-def]
    token = token if token is not None else csrf_token(client)
    return client.post("/api/v1/reports", data=payload, content_type="multipart/form-data",
                       headers={"X-CSRFToken": token})


def page_text(html: str) -> str:
    """What a page shows: its text without tags, attributes or scripts (the pages carry their
    scripts' messages in ``data-msg-*`` attributes, which are no part of what the page says)."""
    import html as html_lib

    without_scripts = re.sub(r"<script\b.*?</script>", " ", html, flags=re.DOTALL)
    return html_lib.unescape(re.sub(r"<[^>]*>", " ", without_scripts))


def once_from_html(html: str) -> str:
    """The one-time token of a page's form (the hidden field ``once``; receipt.py)."""
    match = re.search(r'name="once" value="([^"]+)"', html)
    assert match, "page carries no one-time form token"
    return match.group(1)


def form_tokens(client: FlaskClient, path: str) -> dict[str, str]:
    """Load a page and read its form's CSRF and one-time tokens, as fields to post."""
    html = client.get(path).get_data(as_text=True)
    return {"csrf_token": csrf_from_html(html), "once": once_from_html(html)}


def post_form(client: FlaskClient, body: str, files: list[tuple[str, str, bytes]],
              category: str = "medication", *, follow: bool = True,
              **extra: object):  # type: ignore[no-untyped-def]
    """Post the JavaScript-off form as a browser does: the page's CSRF and one-time tokens, then
    (``follow``) the redirect to the receipt page, whose answer is returned."""
    html = client.get("/submit").get_data(as_text=True)
    data: dict[str, object] = {"csrf_token": csrf_from_html(html), "once": once_from_html(html),
                               "category": category, "body": body,
                               "attachments": [(io.BytesIO(d), n, m) for n, m, d in files]}
    data.update(extra)
    return client.post("/submit", data=data, content_type="multipart/form-data",
                       follow_redirects=follow)


def pow_token(client: FlaskClient, purpose: str) -> str:
    """Fetch a proof-of-work challenge and solve it in Python, as pow.js does in the browser:
    the value of the X-Whistle-PoW header or the form field ``pow``."""
    import base64

    from whistle.server.pow import solve

    data = client.get(f"/api/v1/pow?purpose={purpose}").get_json()
    nonce = solve(base64.b64decode(data["challenge"]), data["difficulty"])
    return f"{data['challenge']}.{nonce}"


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


# --- The source: file a report, come back with the passphrase --------------------------------

RECEIPT = re.compile(r'<code id="receipt-passphrase">([^<]+)</code>')


def file_report(client: FlaskClient, body: str = "Informe inicial") -> str:
    """File a report through the JavaScript-off form; return the receipt passphrase."""
    resp = post_form(client, body, [])
    assert resp.status_code == 200
    return RECEIPT.search(resp.get_data(as_text=True)).group(1)  # type: ignore[union-attr]


def source_login(client: FlaskClient, phrase: str):  # type: ignore[no-untyped-def]
    """Post the source's passphrase to /followup; return the response."""
    return client.post("/followup", data={"csrf_token": csrf_token(client, "/followup"),
                                          "passphrase": phrase})


def the_report(app: Flask) -> Report:
    """The instance's only report."""
    with app.extensions["whistle"].sessions() as db:
        return db.scalars(select(Report)).one()


def reply(app: Flask, ws: Workstation, text: str, *, case_tag: bytes | None = None,
          seq: int | None = None) -> None:
    """Seal and sign a reply to the instance's only report, as ``whistle reply`` does on the
    workstation (a v3 reply with ``case_tag`` and ``seq``, else a v2 one), and import it, as
    ``whistle import-replies`` does."""
    report = the_report(app)
    state = app.extensions["whistle"]
    sealed = seal_reply(text, report.id, UnitPublicKey(report.source_public_key), ws.signing_key,
                        case_tag=case_tag, seq=seq)
    with state.sessions.begin() as db:
        import_replies(db, [sealed], "tester", state.unit_sign_key)


# --- Investigators ---------------------------------------------------------------------------


@dataclass
class Clock:
    """A fake clock for TOTP checks: tests move it forward explicitly, so codes are deterministic."""

    now: float

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Account:
    """A test investigator account and what its owner knows: password and TOTP secret."""

    id: int
    name: str
    password: str
    totp_secret: str
    is_admin: bool
    clock: Clock

    def code(self) -> str:
        """The code the authenticator app shows at the fake clock's time."""
        import pyotp

        return str(pyotp.TOTP(self.totp_secret).at(self.clock.now))

    def next_code(self) -> str:
        """A code no login has used yet: the fake clock first moves one TOTP step forward."""
        self.clock.advance(30)
        return self.code()


def make_account(app: Flask, clock: Clock, name: str, *, is_admin: bool = False) -> Account:
    """Create an account in the app's database, as ``whistle add-investigator`` would."""
    from whistle.server.accounts import create_investigator, get_account

    with app.extensions["whistle"].sessions() as db:
        new = create_investigator(db, name, is_admin=is_admin)
        db.commit()
        ident = get_account(db, name).id
    return Account(id=ident, name=new.name, password=new.password, totp_secret=new.totp_secret,
                   is_admin=is_admin, clock=clock)


def investigator_login(client: FlaskClient, account: Account, *, password: str | None = None,
                       code: str | None = None, name: str | None = None):  # type: ignore[no-untyped-def]
    """Log ``account`` in through the form with a fresh TOTP code; return the response."""
    page = client.get("/investigator/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    # Already logged in, the login page redirects; any page's token serves (one per session).
    token = match.group(1) if match else csrf_token(client)
    return client.post("/investigator/login", data={
        "csrf_token": token,
        "name": account.name if name is None else name,
        "password": account.password if password is None else password,
        "code": account.next_code() if code is None else code,
    })


# --- The offline side: export, decrypt, look for leaks ----------------------------------------


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


# --- Real server processes -------------------------------------------------------------------


@dataclass
class LiveServer:
    """A real whistle server process on loopback, with its data, temp and log files."""

    url: str
    data_dir: Path
    tmp_dir: Path
    log_files: list[Path]
    app_config: Config

    def written_files(self) -> list[Path]:
        """Every file the server could have written: data folder, its temp folder, its logs,
        and with the real backends PostgreSQL's data directory (tables and WAL) and a dump of
        every Redis value."""
        return written_files([self.data_dir, self.tmp_dir], self.log_files, self.tmp_dir.parent)


def written_files(roots: list[Path], extra: list[Path], scratch: Path) -> list[Path]:
    found = [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]
    found += [p for p in extra if p.exists()]
    pg_data = os.environ.get("WHISTLE_TEST_POSTGRES_DATA", "")
    if TEST_POSTGRES and pg_data:
        # PostgreSQL removes folders and files of its own while we walk (a dropped test database,
        # temporary relations): os.walk skips what vanished instead of raising, and what no
        # longer exists holds nothing.
        for folder, _dirs, names in os.walk(pg_data):
            found += [Path(folder) / name for name in names]
    if TEST_REDIS:
        import redis

        client = redis.Redis.from_url(TEST_REDIS)
        dump = scratch / "redis-values.bin"
        with dump.open("wb") as fh:
            for key in client.scan_iter(count=1000):
                fh.write(key + b"\n" + (client.dump(key) or b"") + b"\n")
        found.append(dump)
    return found


class Browser:
    """A cookie-keeping HTTP client that sends the canary User-Agent and a forwarded address."""

    def __init__(self, base: str, user_agent: str, forwarded_for: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.headers = {"User-Agent": user_agent, "X-Forwarded-For": forwarded_for,
                        "X-Real-IP": forwarded_for}

    def request(self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
                ) -> tuple[int, str]:
        req = urllib.request.Request(self.base + path, data=data,  # noqa: S310 - loopback only
                                     headers=self.headers | (headers or {}))
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Stop a server the test started: politely, then for sure."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_gunicorn(environ: dict[str, str], *, bind: str, tmp_dir: Path, stdout: object,
                   stderr: object, extra_env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """Start ``gunicorn -c deploy/gunicorn.conf.py wsgi:app`` as the production unit would, in a
    process group of its own (``os.killpg(proc.pid, …)`` reaches the master and its workers).

    Only the test instance's ``WHISTLE_*`` variables are passed on, and no ``GUNICORN_CMD_ARGS``
    or ``FORWARDED_ALLOW_IPS`` from the calling environment can change the configuration.
    """
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


# --- The offline casebook (whistle casebook) --------------------------------------------------

CASEBOOK_PORT = 47231


def casebook_bundle(app: Flask, out: Path, *, include_all: bool = False) -> Path:
    """Export the test instance's new items (or all of them) into the bundle ``out``."""
    state = app.extensions["whistle"]
    export_bundle(state.sessions, out, unit_fingerprint=state.unit_key.fingerprint(),
                  include_all=include_all)
    return out


def casebook_client(root: Path, signing_key: UnitSigningKey | None = None,
                    *, login: bool = True) -> tuple[FlaskClient, Any]:
    """The casebook's web app over the casebook in ``root``, as ``serve`` builds it for
    127.0.0.1:CASEBOOK_PORT, and a test client at that address, logged in through the one-time
    link unless ``login`` is false. Returns (client, ServeState)."""
    import secrets

    from whistle.workstation.casebook.web import ServeState, create_app

    state = ServeState(root=root, host="127.0.0.1", port=CASEBOOK_PORT,
                       token=secrets.token_urlsafe(16), signing_key=signing_key,
                       run_id=secrets.token_hex(8))
    app = create_app(state)
    app.config.update(TESTING=True)
    client = app.test_client()
    if login:
        answer = client.get(f"/login?token={state.token}", base_url=state.origin)
        assert answer.status_code == 303, answer.get_data(as_text=True)
    return client, state


def casebook_form_token(client: FlaskClient, path: str) -> str:
    """The CSRF token of a casebook page's first form."""
    html = client.get(path, base_url=f"http://127.0.0.1:{CASEBOOK_PORT}").get_data(as_text=True)
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, f"{path} carries no csrf_token field"
    return match.group(1)


# --- Real Chromium (Debian's chromium + chromedriver through Selenium; nothing downloads one) ---

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser_or_skip() -> None:
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    message = "Debian's chromium and chromium-driver are not installed"
    if os.environ.get("WHISTLE_REQUIRE_BROWSER") == "1":
        pytest.fail(message + " (WHISTLE_REQUIRE_BROWSER=1)")
    pytest.skip(message)


def make_driver(tmp_path: Path, *, user_agent: str, javascript: bool = True, wasm: bool = True,  # type: ignore[no-untyped-def]
                extra_args: list[str] | None = None):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome-profile'}",
                # A reload re-posts silently, the way a hurried user clicks through the dialog.
                "--disable-prompt-on-repost",
                f"--user-agent={user_agent}", *(extra_args or [])):
        options.add_argument(arg)
    # The console (errors of the page's scripts and its worker), for a failing test's message.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    if not wasm:
        # What Tor Browser's "Safer" level does: no WebAssembly, so libsodium.js must fall back
        # to pure JavaScript. Removed before any page script runs.
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                               {"source": "delete globalThis.WebAssembly;"})
    return driver
