# SPDX-License-Identifier: AGPL-3.0-or-later
"""Fail closed: the server refuses to start, with one clear line, on a bad key setup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import Workstation

from whistle import create_app
from whistle.server.config import load_config
from whistle.server.instance import InstanceError, InstanceSecrets, init_instance


def start(environ: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHISTLE_")} | environ
    return subprocess.run([sys.executable, "-c", "import wsgi"], capture_output=True, text=True,
                          env=env, cwd=Path(__file__).resolve().parent.parent, timeout=60, check=False)


@pytest.mark.parametrize("problem, expected", [
    ("missing", "not found"),
    ("garbage", "malformed public key"),
    ("two-keys", "exactly one"),
    ("private-key-file", "private key"),
    ("private-key-content", "private key"),
    ("signing-key-missing", "unit signing key not found"),
    ("signing-key-garbage", "unit-sign.pub: malformed public key"),
])
def test_instance_refuses_to_start_on_bad_key_folder(
    environ: dict[str, str], workstation: Workstation, tmp_path: Path, problem: str, expected: str
) -> None:
    pub = Path(environ["WHISTLE_UNIT_KEY"])
    if problem == "missing":
        pub.unlink()
    elif problem == "garbage":
        pub.write_text("this is not base64!\n")
    elif problem == "two-keys":
        pub.write_text(pub.read_text() + workstation.secret_key.public_key.to_base64() + "\n")
    elif problem == "signing-key-missing":  # a key folder set up before replies were signed
        (pub.parent / "unit-sign.pub").unlink()
    elif problem == "signing-key-garbage":
        (pub.parent / "unit-sign.pub").write_text("# unit-sign.pub\nnot a key\n")
    elif problem == "private-key-file":
        (pub.parent / "unit.key").write_text("anything")
    else:
        (pub.parent / "backup.dat").write_text(workstation.key_file.read_text())

    with pytest.raises(InstanceError, match=expected):
        create_app(load_config(environ, cwd=tmp_path))
    result = start(environ, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("whistle: refusing to start") and expected in lines[0]
    assert not Path(environ["WHISTLE_DATA_DIR"]).exists(), "created an instance despite refusing"


def test_instance_init_is_idempotent_and_private(environ: dict[str, str], tmp_path: Path) -> None:
    config = load_config(environ, cwd=tmp_path)
    first, engine = init_instance(config, time_cost=1, memory_cost_kib=8)
    engine.dispose()
    second, engine = init_instance(config)
    engine.dispose()
    assert first == second, "init replaced existing secrets"
    assert config.secrets_path.stat().st_mode & 0o077 == 0
    assert config.data_dir.stat().st_mode & 0o077 == 0


def test_instance_malformed_secrets_refused(environ: dict[str, str], tmp_path: Path) -> None:
    config = load_config(environ, cwd=tmp_path)
    config.data_dir.mkdir(parents=True)
    config.secrets_path.write_text('{"format": "whistle-instance-secrets", "v": 1}')
    with pytest.raises(InstanceError, match="malformed"):
        create_app(config)


def test_instance_secrets_round_trip() -> None:
    s = InstanceSecrets.generate(time_cost=2, memory_cost_kib=1024)
    assert InstanceSecrets.from_json(s.to_json()) == s


@pytest.mark.parametrize("interface, source_status, investigator_status", [
    ("source", 200, 404), ("investigator", 404, 200), ("all", 200, 200)])
def test_instance_interface_serves_only_its_pages(environ: dict[str, str], tmp_path: Path,
                                                  interface: str, source_status: int,
                                                  investigator_status: int) -> None:
    """The source onion service must not expose the investigators' login page, and vice versa."""
    from whistle.server.instance import load_or_create_secrets

    config = load_config(environ | {"WHISTLE_INTERFACE": interface}, cwd=tmp_path)
    load_or_create_secrets(config, time_cost=1, memory_cost_kib=8)
    client = create_app(config).test_client()
    assert client.get("/submit").status_code == source_status
    assert client.get("/investigator/login").status_code == investigator_status
    assert client.get("/no-such-page").status_code == 404  # the error page renders either way
