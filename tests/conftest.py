# SPDX-License-Identifier: AGPL-3.0-or-later
"""Shared fixtures: an app on a temporary data folder with a throwaway unit keypair.

Argon2 costs are lowered here, and only here, so the suite runs in seconds; production costs are
the defaults in whistle.server.instance and whistle.core.crypto.

Only fixtures live here; the helpers tests call by name are in support.py, which test files import
(never this module).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from support import (
    FAST_MEM,
    FAST_OPS,
    KEY_PASSPHRASE,
    TEST_POSTGRES,
    TEST_REDIS,
    Account,
    Clock,
    LiveServer,
    Workstation,
    free_port,
    make_account,
    postgres_database,
    stop_process,
)

from whistle import create_app
from whistle.core.crypto import UnitKeyFile, UnitSecretKey, UnitSigningKey
from whistle.server.config import Config, load_config
from whistle.server.instance import load_or_create_secrets


@pytest.fixture
def workstation(tmp_path: Path) -> Workstation:
    root = tmp_path / "workstation"
    root.mkdir()
    key, signing = UnitSecretKey.generate(), UnitSigningKey.generate()
    key_file = root / "unit.key"
    key_file.write_text(UnitKeyFile(key, signing).to_encrypted_json(
        KEY_PASSPHRASE, opslimit=FAST_OPS, memlimit=FAST_MEM))
    pass_file = root / "passphrase.txt"
    pass_file.write_text(KEY_PASSPHRASE + "\n")
    return Workstation(secret_key=key, key_file=key_file, passphrase_file=pass_file, root=root,
                       signing_key=signing)


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str | None]:
    """None (SQLite in the data folder) or a fresh PostgreSQL database, dropped afterwards."""
    if not TEST_POSTGRES:
        yield None
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def environ(tmp_path: Path, workstation: Workstation, database_url: str | None) -> dict[str, str]:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "unit.pub").write_text(workstation.secret_key.public_key.to_file_text())
    (keys / "unit-sign.pub").write_text(workstation.signing_key.verify_key.to_file_text())
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


@pytest.fixture
def live_server(environ: dict[str, str], config: Config, tmp_path: Path) -> Iterator[LiveServer]:
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
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


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Replaces ``whistle.server.accounts.current_time``; starts one second into a 30-second TOTP step."""
    import time

    from whistle.server import accounts

    fake = Clock(now=float(int(time.time()) // 30 * 30 + 1))
    monkeypatch.setattr(accounts, "current_time", fake)
    return fake


@pytest.fixture
def investigator(app: Flask, clock: Clock, fast_passwords: None) -> Account:
    """A non-admin investigator account named "alice"."""
    return make_account(app, clock, "alice")


@pytest.fixture
def admin(app: Flask, clock: Clock, fast_passwords: None) -> Account:
    """An admin account named "root"."""
    return make_account(app, clock, "root", is_admin=True)


@pytest.fixture
def server_env(environ: dict[str, str], config: Config, monkeypatch: pytest.MonkeyPatch) -> Config:
    """``os.environ`` pointing at the test instance, for in-process ``cli.main([...])`` calls."""
    import os

    for key in [k for k in os.environ if k.startswith("WHISTLE_")]:
        monkeypatch.delenv(key)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    return config
