# SPDX-License-Identifier: AGPL-3.0-or-later
"""Shared fixtures: an app on a temporary data folder with a throwaway unit keypair.

Argon2 costs are lowered here, and only here, so the suite runs in seconds; production costs are
the defaults in whistle.instance and whistle.crypto.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import nacl.pwhash
import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from whistle import create_app
from whistle.config import Config, load_config
from whistle.crypto import UnitSecretKey
from whistle.instance import load_or_create_secrets

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


@pytest.fixture
def environ(tmp_path: Path, workstation: Workstation) -> dict[str, str]:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "unit.pub").write_text(workstation.secret_key.public_key.to_file_text())
    return {
        "WHISTLE_DATA_DIR": str(tmp_path / "instance"),
        "WHISTLE_UNIT_KEY": str(keys / "unit.pub"),
        "WHISTLE_MAX_UPLOAD_MB": "20",
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
