# SPDX-License-Identifier: AGPL-3.0-or-later
"""Shared fixtures: an app on a temporary data folder with a throwaway unit keypair.

Argon2 costs are lowered here, and only here, so the suite runs in seconds; production costs are
the defaults in whistle.server.instance and whistle.core.crypto.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nacl.pwhash
import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from whistle import create_app
from whistle.core.crypto import UnitSecretKey
from whistle.server.config import Config, load_config
from whistle.server.instance import load_or_create_secrets

KEY_PASSPHRASE = "correct horse battery staple"
FAST_OPS = nacl.pwhash.argon2id.OPSLIMIT_MIN
FAST_MEM = nacl.pwhash.argon2id.MEMLIMIT_MIN


@dataclass
class Workstation:
    """The offline side of a test: the unit's secret key and its encrypted key file."""

    secret_key: UnitSecretKey
    key_file: Path
    passphrase_file: Path
    root: Path


@pytest.fixture
def workstation(tmp_path: Path) -> Workstation:
    root = tmp_path / "workstation"
    root.mkdir()
    key = UnitSecretKey.generate()
    key_file = root / "unit.key"
    key_file.write_text(key.to_encrypted_json(KEY_PASSPHRASE, opslimit=FAST_OPS, memlimit=FAST_MEM))
    pass_file = root / "passphrase.txt"
    pass_file.write_text(KEY_PASSPHRASE + "\n")
    return Workstation(secret_key=key, key_file=key_file, passphrase_file=pass_file, root=root)


# The second CI run points these at a real PostgreSQL and Redis (see .ci/services): every test
# then gets a database of its own on that server, and Redis for limits and source sessions.
TEST_POSTGRES = os.environ.get("WHISTLE_TEST_POSTGRES", "")
TEST_REDIS = os.environ.get("WHISTLE_TEST_REDIS", "")


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
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Stop a server the test started: politely, then for sure."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str | None]:
    """None (SQLite in the data folder) or a fresh PostgreSQL database, dropped afterwards."""
    if not TEST_POSTGRES:
        yield None
        return
    with postgres_database() as url:
        yield url


def uses_sqlite(config: Config) -> bool:
    return config.database_url.startswith("sqlite")


@pytest.fixture
def environ(tmp_path: Path, workstation: Workstation, database_url: str | None) -> dict[str, str]:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "unit.pub").write_text(workstation.secret_key.public_key.to_file_text())
    backends = {"WHISTLE_DATABASE_URL": database_url} if database_url else {}
    if TEST_REDIS:
        backends["WHISTLE_RATELIMIT_STORAGE"] = TEST_REDIS
    return backends | {
        "WHISTLE_DATA_DIR": str(tmp_path / "instance"),
        "WHISTLE_UNIT_KEY": str(keys / "unit.pub"),
        "WHISTLE_MAX_UPLOAD_MB": "20",
        # Generous ceilings so that tests which file many reports are not throttled; the limits
        # themselves are tested with low values in test_limits.py, and the defaults there too.
        "WHISTLE_LIMIT_SUBMIT_GLOBAL": "10000 per minute",
        "WHISTLE_LIMIT_SUBMIT_SESSION": "10000 per minute",
        "WHISTLE_LIMIT_LOGIN_GLOBAL": "10000 per minute",
        "WHISTLE_LIMIT_LOGIN_SESSION": "10000 per minute",
        "WHISTLE_LIMIT_MESSAGE_GLOBAL": "10000 per minute",
        "WHISTLE_LIMIT_MESSAGE_SESSION": "10000 per minute",
    }


@pytest.fixture
def config(environ: dict[str, str], tmp_path: Path) -> Config:
    cfg = load_config(environ, cwd=tmp_path)
    # Low argon2 cost for the test instance: created before the app would create real ones.
    load_or_create_secrets(cfg, time_cost=1, memory_cost_kib=8)
    return cfg


@pytest.fixture
def app(config: Config) -> Iterator[Flask]:
    application = create_app(config)
    application.config.update(TESTING=True)
    yield application
    application.extensions["whistle"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def csrf_token(client: FlaskClient, path: str = "/submit") -> str:
    """Load a page and read the CSRF token from its meta tag, as the page's script does."""
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert match, "page carries no csrf-token meta tag"
    return match.group(1)


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
        found += [p for p in Path(pg_data).rglob("*") if p.is_file()]
    if TEST_REDIS:
        import redis

        client = redis.Redis.from_url(TEST_REDIS)
        dump = scratch / "redis-values.bin"
        with dump.open("wb") as fh:
            for key in client.scan_iter(count=1000):
                fh.write(key + b"\n" + (client.dump(key) or b"") + b"\n")
        found.append(dump)
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server(environ: dict[str, str], config: Config, tmp_path: Path) -> Iterator[LiveServer]:
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    tmp_dir = tmp_path / "server-tmp"
    tmp_dir.mkdir()
    logs = [tmp_path / "server.out", tmp_path / "server.err"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHISTLE_")}
    env.update(environ, TMPDIR=str(tmp_dir), PYTHONUNBUFFERED="1")
    with logs[0].open("wb") as out, logs[1].open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "whistle.cli", "run", "--port", str(port)],
            env=env, stdout=out, stderr=err, cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/api/v1/unit-key", timeout=2):  # noqa: S310
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start: " + logs[1].read_text()) from None
                time.sleep(0.1)
        yield LiveServer(url=url, data_dir=config.data_dir, tmp_dir=tmp_dir, log_files=logs,
                         app_config=config)
    finally:
        stop_process(proc)


# --- Investigator accounts -------------------------------------------------------------------


@pytest.fixture
def fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Investigator password hashing at argon2's minimum cost, for this test only."""
    from argon2 import PasswordHasher

    from whistle.server import accounts

    monkeypatch.setattr(accounts, "password_hasher",
                        PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@dataclass
class Clock:
    """A fake clock for TOTP checks: tests move it forward explicitly, so codes are deterministic."""

    now: float

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Replaces ``whistle.server.accounts.current_time``; starts one second into a 30-second TOTP step."""
    import time

    from whistle.server import accounts

    fake = Clock(now=float(int(time.time()) // 30 * 30 + 1))
    monkeypatch.setattr(accounts, "current_time", fake)
    return fake


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


@pytest.fixture
def investigator(app: Flask, clock: Clock, fast_passwords: None) -> Account:
    """A non-admin investigator account named "alice"."""
    return make_account(app, clock, "alice")


@pytest.fixture
def admin(app: Flask, clock: Clock, fast_passwords: None) -> Account:
    """An admin account named "root"."""
    return make_account(app, clock, "root", is_admin=True)


def form_csrf_token(client: FlaskClient, path: str) -> str:
    """Load a page and read the CSRF token from its form's hidden field."""
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert match, f"{path} carries no csrf_token field"
    return match.group(1)


def login(client: FlaskClient, account: Account, *, password: str | None = None,
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


@pytest.fixture
def server_env(environ: dict[str, str], config: Config, monkeypatch: pytest.MonkeyPatch) -> Config:
    """``os.environ`` pointing at the test instance, for in-process ``cli.main([...])`` calls."""
    import os

    for key in [k for k in os.environ if k.startswith("WHISTLE_")]:
        monkeypatch.delenv(key)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    return config
