# SPDX-License-Identifier: AGPL-3.0-or-later
"""Key rotation on the workstation: ``decrypt_bundle`` and ``whistle decrypt`` take a keyring.

The app's unit key is the *new* key; a report sealed in a browser that still had the *old* key
(a page loaded before the rotation) sits in the same bundle. Both open with ``--key old --key
new``; a key that opens nothing gives the usual one-line error and writes nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from support import (
    FAST_MEM,
    FAST_OPS,
    KEY_PASSPHRASE,
    Workstation,
    api_payload,
    make_app,
    post_api,
    post_form,
    report_folders,
)

from whistle import cli
from whistle.core.crypto import UnitSecretKey
from whistle.server.export import export_bundle
from whistle.workstation.decrypt import BundleDecryptError, decrypt_bundle


def _key_file(path: Path, key: UnitSecretKey, passphrase: str = KEY_PASSPHRASE) -> Path:
    path.write_text(key.to_encrypted_json(passphrase, opslimit=FAST_OPS, memlimit=FAST_MEM))
    return path


@pytest.fixture
def old_key() -> UnitSecretKey:
    return UnitSecretKey.generate()


@pytest.fixture
def mixed_bundle(client: FlaskClient, app: Flask, old_key: UnitSecretKey, tmp_path: Path) -> Path:
    """One report sealed by the browser to the old key, one sealed by the server to the new."""
    assert post_api(client, api_payload(old_key.public_key, "sealed to the OLD key", [])).status_code == 201
    assert post_form(app.test_client(), "sealed to the NEW key", []).status_code == 200
    state = app.extensions["whistle"]
    bundle = tmp_path / "bundle.zip"
    export_bundle(state.sessions, bundle, unit_fingerprint=state.unit_key.fingerprint())
    return bundle


def _texts(out: Path) -> list[str]:
    return sorted((f / "report.txt").read_text(encoding="utf-8").rsplit("\n\n", 1)[1].strip()
                  for f in report_folders(out))


def test_decrypt_bundle_keyring_opens_items_sealed_to_each_key(
    mixed_bundle: Path, workstation: Workstation, old_key: UnitSecretKey, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    summary = decrypt_bundle(mixed_bundle, [old_key, workstation.secret_key], out)
    assert _texts(out) == ["sealed to the NEW key", "sealed to the OLD key"]
    assert summary.items == 2 and summary.opened_by == (1, 1)


def test_decrypt_bundle_single_key_is_still_accepted(
    client: FlaskClient, app: Flask, workstation: Workstation, tmp_path: Path
) -> None:
    post_form(client, "one key", [])
    state = app.extensions["whistle"]
    export_bundle(state.sessions, tmp_path / "b.zip", unit_fingerprint="x")
    summary = decrypt_bundle(tmp_path / "b.zip", workstation.secret_key, tmp_path / "out")
    assert summary.opened_by == (1,) and _texts(tmp_path / "out") == ["one key"]


def test_decrypt_bundle_keyring_missing_a_key_writes_nothing(
    mixed_bundle: Path, workstation: Workstation, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(BundleDecryptError, match="does not open with any of the 2 keys"):
        decrypt_bundle(mixed_bundle, [UnitSecretKey.generate(), workstation.secret_key], out)
    assert report_folders(out) == []


def test_decrypt_command_repeated_key_one_passphrase(
    mixed_bundle: Path, workstation: Workstation, old_key: UnitSecretKey, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old_file = _key_file(tmp_path / "old.key", old_key)
    out = tmp_path / "out"
    assert cli.main(["decrypt", str(mixed_bundle), "--key", str(old_file), "--key",
                     str(workstation.key_file), "--passphrase-file", str(workstation.passphrase_file),
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"key {old_file} ({old_key.public_key.fingerprint()}) opened 1 item(s)" in printed
    assert _texts(out) == ["sealed to the NEW key", "sealed to the OLD key"]


def test_decrypt_command_passphrase_file_per_key(
    mixed_bundle: Path, workstation: Workstation, old_key: UnitSecretKey, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old_file = _key_file(tmp_path / "old.key", old_key, "the old key's own passphrase")
    old_pass = tmp_path / "old.pass"
    old_pass.write_text("the old key's own passphrase\n")
    args = ["decrypt", str(mixed_bundle), "--key", str(old_file), "--key", str(workstation.key_file),
            "--out", str(tmp_path / "out")]
    # One passphrase for both: the old key refuses it, by name.
    assert cli.main([*args, "--passphrase-file", str(workstation.passphrase_file)]) == 1
    assert f"wrong passphrase for the private key {old_file}" in capsys.readouterr().err
    # Three files for two keys: refused before anything is opened.
    assert cli.main([*args, *["--passphrase-file", str(old_pass)] * 3]) == 1
    assert "one per --key" in capsys.readouterr().err
    assert cli.main([*args, "--passphrase-file", str(old_pass), "--passphrase-file",
                     str(workstation.passphrase_file)]) == 0
    assert len(report_folders(tmp_path / "out")) == 2


def test_decrypt_command_unknown_key_one_line_no_output(
    mixed_bundle: Path, workstation: Workstation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = _key_file(tmp_path / "stranger.key", UnitSecretKey.generate())
    out = tmp_path / "out"
    base = ["decrypt", str(mixed_bundle), "--passphrase-file", str(workstation.passphrase_file),
            "--out", str(out)]
    # A key that opens nothing: nothing could be done, one line naming an item, nothing written.
    assert cli.main([*base, "--key", str(stranger)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("whistle: decryption failed, nothing written: not one item could be written")
    assert "envelope does not open" in err and re.search(r"report [0-9a-f]{16} item [0-9a-f]{16}", err)
    assert err.count("\n") == 1
    assert not out.exists() or report_folders(out) == []
    # --strict with a keyring that opens one of the two: all or nothing, nothing.
    keyring = ["--key", str(stranger), "--key", str(workstation.key_file)]
    assert cli.main([*base, *keyring, "--strict"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("whistle: decryption failed, nothing written: report ")
    assert "does not open with any of the 2 keys" in err and err.count("\n") == 1
    assert report_folders(out) == []
    # Without --strict the one that opens is written, the other quarantined: exit status 3.
    assert cli.main([*base, *keyring]) == 3
    assert _texts(out) == ["sealed to the NEW key"]
    assert "1 part(s) quarantined" in capsys.readouterr().err


# --- report.txt in the unit's language, files for the unit only (issue 11, item 12) ------------


def _decrypt_cli(bundle: Path, ws: Workstation, out: Path, *extra: str) -> None:
    assert cli.main(["decrypt", str(bundle), "--key", str(ws.key_file), "--passphrase-file",
                     str(ws.passphrase_file), "--out", str(out), *extra]) == 0


@pytest.fixture
def corruption_bundle(client: FlaskClient, app: Flask, tmp_path: Path) -> Path:
    """A browser report in the "corruption" category with one attachment."""
    state = app.extensions["whistle"]
    payload = api_payload(state.unit_key, "Cobran por turnos", [("recibo.pdf", "application/pdf",
                                                                  b"%PDF-1.4 recibo")])
    assert post_api(client, payload).status_code == 201
    bundle = tmp_path / "bundle.zip"
    export_bundle(state.sessions, bundle, unit_fingerprint=state.unit_key.fingerprint())
    return bundle


def test_decrypt_command_report_txt_spanish_by_default(corruption_bundle: Path, workstation: Workstation,
                                                       tmp_path: Path) -> None:
    _decrypt_cli(corruption_bundle, workstation, tmp_path / "es")
    (folder,) = report_folders(tmp_path / "es")
    head = (folder / "report.txt").read_text(encoding="utf-8").split("\n\n", 1)[0].splitlines()
    assert head[0] == f"Denuncia {folder.name}"
    assert re.fullmatch(r"Fecha: \d{4}-\d\d-\d\d", head[1])
    assert head[2:] == ["Categoría: Corrupción",
                        "Canal: Navegador (cifrado en el navegador antes del envío)",
                        "Vínculo: comprobado (elemento 1 del caso; su clave de la fuente es la "
                        "del manifiesto)",
                        "Adjuntos: attachments/recibo.pdf"]


def test_decrypt_command_report_txt_in_english_on_request(corruption_bundle: Path,
                                                          workstation: Workstation, tmp_path: Path) -> None:
    _decrypt_cli(corruption_bundle, workstation, tmp_path / "en", "--lang", "en")
    (folder,) = report_folders(tmp_path / "en")
    head = (folder / "report.txt").read_text(encoding="utf-8").split("\n\n", 1)[0].splitlines()
    assert head[0] == f"Report {folder.name}" and head[1].startswith("Date: ")
    assert head[2:] == ["Category: Corruption",
                        "Channel: Browser (encrypted in the browser before sending)",
                        "Binding: checked (item 1 of the case; its source key matches the "
                        "manifest's)",
                        "Attachments: attachments/recibo.pdf"]


def test_decrypt_command_unknown_category_shown_as_its_code(environ: dict[str, str], tmp_path: Path,
                                                            workstation: Workstation) -> None:
    """The workstation never sees WHISTLE_CATEGORIES: a deployment's own code is written as it is."""
    app = make_app(environ | {"WHISTLE_CATEGORIES": "fraude_fiscal=Fraude fiscal"}, tmp_path)
    state = app.extensions["whistle"]
    payload = api_payload(state.unit_key, "Facturas falsas", [], category="fraude_fiscal")
    assert post_api(app.test_client(), payload).status_code == 201
    bundle = tmp_path / "custom.zip"
    export_bundle(state.sessions, bundle, unit_fingerprint=state.unit_key.fingerprint())
    _decrypt_cli(bundle, workstation, tmp_path / "out")
    (folder,) = report_folders(tmp_path / "out")
    assert "\nCategoría: fraude_fiscal\n" in (folder / "report.txt").read_text(encoding="utf-8")
    state.engine.dispose()


def test_decrypt_command_every_file_0600_every_folder_0700(corruption_bundle: Path,
                                                           workstation: Workstation, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # A permissive umask must not widen anything: modes are set, not inherited.
    umask = os.umask(0)
    try:
        _decrypt_cli(corruption_bundle, workstation, out)
    finally:
        os.umask(umask)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"report.txt", "recibo.pdf"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o600" for p in files}
    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in folders} == {str(p): "0o700" for p in folders}
