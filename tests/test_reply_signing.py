# SPDX-License-Identifier: AGPL-3.0-or-later
"""Authenticated replies on the command line (issue 10, item 3).

``whistle keygen`` makes the unit key and its signing key; ``whistle reply`` signs; the server
verifies on ``import-replies``. An old key file (no signing key) gets a one-line error telling how
to add one, and ``keygen --add-signing-key`` does so without changing the unit key.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from support import (
    FAST_MEM,
    FAST_OPS,
    KEY_PASSPHRASE,
    Workstation,
    file_report,
    source_login,
    the_report,
)

from whistle import cli, create_app
from whistle.core.crypto import UnitKeyFile, UnitVerifyKey
from whistle.core.replies import read_replies_file, verify_reply
from whistle.server.config import load_config
from whistle.server.instance import load_or_create_secrets


@pytest.fixture
def fast_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """keygen's argon2 cost (256 MiB) lowered for the test only."""
    original = UnitKeyFile.to_encrypted_json

    def cheap(self: UnitKeyFile, passphrase: str, **_: int) -> str:
        return original(self, passphrase, opslimit=FAST_OPS, memlimit=FAST_MEM)

    monkeypatch.setattr(UnitKeyFile, "to_encrypted_json", cheap)


def _export(app: Flask, tmp_path: Path, server_env: object) -> Path:
    bundle = tmp_path / "bundle.zip"
    assert cli.main(["export", "--out", str(bundle)]) == 0
    return bundle


def _reply_args(bundle: Path, report: str, text_file: Path, out: Path, key: Path,
                passphrase_file: Path) -> list[str]:
    return ["reply", str(bundle), "--report", report, "--text-file", str(text_file), "--out", str(out),
            "--key", str(key), "--passphrase-file", str(passphrase_file)]


def test_reply_signing_old_key_file_refused_with_one_line_then_added(
        app: Flask, workstation: Workstation, server_env: object, tmp_path: Path, fast_keys: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A key file from before replies were signed: ``whistle reply`` says in one line how to add a
    signing key; ``keygen --add-signing-key`` adds one under the same passphrase, keeps the unit
    key, writes unit-sign.pub, and refuses to run twice."""
    file_report(app.test_client())
    bundle = _export(app, tmp_path, server_env)
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    old_file = old_dir / "unit.key"
    old_file.write_text(workstation.secret_key.to_encrypted_json(
        KEY_PASSPHRASE, opslimit=FAST_OPS, memlimit=FAST_MEM))
    (tmp_path / "reply.txt").write_text("Gracias.", encoding="utf-8")
    replies = tmp_path / "replies.json"
    args = _reply_args(bundle, the_report(app).id, tmp_path / "reply.txt", replies, old_file,
                       workstation.passphrase_file)
    capsys.readouterr()
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"whistle keygen --add-signing-key --dir {old_dir}" in err
    assert not replies.exists()

    assert cli.main(["keygen", "--add-signing-key", "--dir", str(old_dir),
                     "--passphrase-file", str(workstation.passphrase_file)]) == 0
    keys = UnitKeyFile.load_encrypted(old_file, KEY_PASSPHRASE)
    assert keys.secret_key.encode() == workstation.secret_key.encode(), "the unit key changed"
    sign_pub = UnitVerifyKey.load(old_dir / "unit-sign.pub")
    assert keys.require_signing_key().verify_key == sign_pub
    assert sign_pub.fingerprint() in capsys.readouterr().out
    assert cli.main(["keygen", "--add-signing-key", "--dir", str(old_dir),
                     "--passphrase-file", str(workstation.passphrase_file)]) == 1
    assert "already holds a signing key" in capsys.readouterr().err

    assert cli.main(args) == 0
    (reply,) = read_replies_file(replies)
    verify_reply(reply, sign_pub)
    # The server still has the fixture's signing key: a reply signed by another key is refused.
    assert cli.main(["import-replies", str(replies)]) == 1
    assert "not signed by the unit's signing key" in capsys.readouterr().err


@pytest.fixture
def keygen_app(environ: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               fast_keys: None) -> Iterator[tuple[Flask, Path]]:
    """An instance whose key folder holds what ``whistle keygen`` wrote: unit.pub and
    unit-sign.pub, copied from the workstation's folder (the private key stays there)."""
    ws = tmp_path / "ws"
    (tmp_path / "kp").write_text("a long enough key passphrase\n")
    assert cli.main(["keygen", "--dir", str(ws), "--passphrase-file", str(tmp_path / "kp")]) == 0
    keys = Path(environ["WHISTLE_UNIT_KEY"]).parent
    for name in ("unit.pub", "unit-sign.pub"):
        shutil.copy(ws / name, keys / name)
    config = load_config(environ, cwd=tmp_path)
    load_or_create_secrets(config, time_cost=1, memory_cost_kib=8)
    application = create_app(config)
    for key in [k for k in os.environ if k.startswith("WHISTLE_")]:
        monkeypatch.delenv(key)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    yield application, ws
    application.extensions["whistle"].engine.dispose()


def test_reply_signing_keygen_reply_import_source_reads(
        keygen_app: tuple[Flask, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The genuine path end to end: keygen → report → export → reply (signed) → import → the
    source reads it as the unit's reply."""
    app, ws = keygen_app
    source = app.test_client()
    phrase = file_report(source, "Informe para responder")
    bundle = tmp_path / "bundle.zip"
    assert cli.main(["export", "--out", str(bundle)]) == 0
    report = the_report(app)
    text = "Gracias por su denuncia. La unidad de investigación."
    (tmp_path / "reply.txt").write_text(text, encoding="utf-8")
    replies = tmp_path / "replies.json"
    assert cli.main(_reply_args(bundle, report.id[:8], tmp_path / "reply.txt", replies,
                                ws / "unit.key", tmp_path / "kp")) == 0
    assert "sealed to its source and signed" in capsys.readouterr().out
    assert cli.main(["import-replies", str(replies)]) == 0
    assert source_login(source, phrase).status_code == 302
    html = source.get("/case?lang=en").get_data(as_text=True)
    assert text in html and "Reply from the investigation unit" in html
    assert 'class="entry withheld"' not in html
    # The submit page shows both fingerprints, as keygen printed them.
    page = source.get("/submit").get_data(as_text=True)
    assert UnitVerifyKey.load(ws / "unit-sign.pub").fingerprint() in page
