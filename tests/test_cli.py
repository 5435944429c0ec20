# SPDX-License-Identifier: AGPL-3.0-or-later
"""The ``whistle`` command: keygen, export, decrypt, and their failures (one line, exit 1)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from flask import Flask
from flask.testing import FlaskClient
from support import (
    FAST_MEM,
    FAST_OPS,
    KEY_PASSPHRASE,
    Account,
    Clock,
    Workstation,
    investigator_login,
    post_form,
    report_folders,
)

from whistle import cli
from whistle.core.crypto import UnitKeyFile, UnitPublicKey, UnitSecretKey, UnitVerifyKey
from whistle.server.config import Config


@pytest.fixture
def fast_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """keygen's argon2 cost (256 MiB) lowered for the test only."""
    original = UnitKeyFile.to_encrypted_json

    def cheap(self: UnitKeyFile, passphrase: str, **_: int) -> str:
        return original(self, passphrase, opslimit=FAST_OPS, memlimit=FAST_MEM)

    monkeypatch.setattr(UnitKeyFile, "to_encrypted_json", cheap)


def run_cli(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WHISTLE_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "whistle.cli", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=120, check=False)


def test_keygen_writes_public_and_encrypted_private_key(tmp_path: Path, fast_keys: None,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pass_file = tmp_path / "pass"
    pass_file.write_text("a long enough key passphrase\n")
    assert cli.main(["keygen", "--dir", str(tmp_path / "ws"), "--passphrase-file", str(pass_file)]) == 0
    pub = UnitPublicKey.load(tmp_path / "ws" / "unit.pub")
    sign_pub = UnitVerifyKey.load(tmp_path / "ws" / "unit-sign.pub")
    keys = UnitKeyFile.load_encrypted(tmp_path / "ws" / "unit.key", "a long enough key passphrase")
    secret = keys.secret_key
    assert secret.public_key == pub
    assert keys.require_signing_key().verify_key == sign_pub
    out = capsys.readouterr().out
    assert pub.fingerprint() in out and f"signing key fingerprint: {sign_pub.fingerprint()}" in out
    assert "a long enough" not in (tmp_path / "ws" / "unit.key").read_text()
    assert (tmp_path / "ws" / "unit.key").stat().st_mode & 0o077 == 0


def test_keygen_refuses_to_overwrite_and_short_passphrase(tmp_path: Path, fast_keys: None,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WHISTLE_KEY_PASSPHRASE", "short")
    assert cli.main(["keygen", "--dir", str(tmp_path)]) == 1
    assert "at least 12" in capsys.readouterr().err
    monkeypatch.setenv("WHISTLE_KEY_PASSPHRASE", "a long enough key passphrase")
    assert cli.main(["keygen", "--dir", str(tmp_path)]) == 0
    before = (tmp_path / "unit.pub").read_text()
    assert cli.main(["keygen", "--dir", str(tmp_path)]) == 1
    assert "already holds" in capsys.readouterr().err
    assert (tmp_path / "unit.pub").read_text() == before


def test_export_then_decrypt_commands_recover_report(
    client: FlaskClient, app: Flask, workstation: Workstation, environ: dict[str, str], tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    assert post_form(client, "Informe CLI ñ", [("doc.pdf", "application/pdf", data)]).status_code == 200
    bundle = tmp_path / "b.zip"
    result = run_cli(["export", "--out", str(bundle)], env=environ, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "exported 1 item(s) of 1 report(s)" in result.stdout

    again = run_cli(["export", "--out", str(tmp_path / "b2.zip")], env=environ, cwd=tmp_path)
    assert "exported 0 item(s)" in again.stdout, "already exported items came out again"
    assert "exported 1 item(s)" in run_cli(["export", "--all", "--out", str(tmp_path / "b3.zip")],
                                           env=environ, cwd=tmp_path).stdout

    out = tmp_path / "out"
    result = run_cli(["decrypt", str(bundle), "--key", str(workstation.key_file), "--out", str(out),
                      "--passphrase-file", str(workstation.passphrase_file)])
    assert result.returncode == 0, result.stderr
    (folder,) = report_folders(out)
    assert "Informe CLI ñ" in (folder / "report.txt").read_text(encoding="utf-8")
    assert (folder / "attachments" / "doc.pdf").read_bytes() == data


def test_decrypt_passphrase_from_environment(client: FlaskClient, app: Flask, workstation: Workstation,
                                             environ: dict[str, str], tmp_path: Path) -> None:
    post_form(client, "texto", [])
    bundle = tmp_path / "b.zip"
    assert run_cli(["export", "--out", str(bundle)], env=environ, cwd=tmp_path).returncode == 0
    result = run_cli(["decrypt", str(bundle), "--key", str(workstation.key_file), "--out",
                      str(tmp_path / "o")], env={"WHISTLE_KEY_PASSPHRASE": KEY_PASSPHRASE})
    assert result.returncode == 0, result.stderr


def _bundle(client: FlaskClient, environ: dict[str, str], tmp_path: Path) -> Path:
    post_form(client, "texto", [("a.bin", "application/octet-stream", os.urandom(200_000))])
    post_form(client, "otro", [])
    bundle = tmp_path / "b.zip"
    assert run_cli(["export", "--out", str(bundle)], env=environ, cwd=tmp_path).returncode == 0
    return bundle


def test_decrypt_wrong_passphrase_one_line_exit_1_nothing_written(
    client: FlaskClient, app: Flask, workstation: Workstation, environ: dict[str, str], tmp_path: Path
) -> None:
    bundle = _bundle(client, environ, tmp_path)
    out = tmp_path / "out"
    result = run_cli(["decrypt", str(bundle), "--key", str(workstation.key_file), "--out", str(out)],
                     env={"WHISTLE_KEY_PASSPHRASE": "not the passphrase"})
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "wrong passphrase" in result.stderr
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("damage", ["flip-attachment", "truncate-zip", "wrong-key"])
def test_decrypt_damaged_bundle_strict_exit_1_else_quarantine(
    client: FlaskClient, app: Flask, workstation: Workstation, environ: dict[str, str],
    tmp_path: Path, damage: str
) -> None:
    bundle = _bundle(client, environ, tmp_path)
    key_file = workstation.key_file
    raw = bytearray(bundle.read_bytes())
    if damage == "flip-attachment":
        with zipfile.ZipFile(bundle) as zf:
            info = next(i for i in zf.infolist() if "attachment-0" in i.filename)
        raw[info.header_offset + 30 + len(info.filename) + 1000] ^= 0x01
        bundle.write_bytes(bytes(raw))
    elif damage == "truncate-zip":
        bundle.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        key_file = tmp_path / "other.key"
        key_file.write_text(UnitSecretKey.generate().to_encrypted_json(
            KEY_PASSPHRASE, opslimit=FAST_OPS, memlimit=FAST_MEM))
    out = tmp_path / "out"
    args = ["decrypt", str(bundle), "--key", str(key_file), "--out", str(out),
            "--passphrase-file", str(workstation.passphrase_file)]
    # --strict: all or nothing.
    result = run_cli([*args, "--strict"])
    assert result.returncode == 1
    assert result.stderr.startswith("whistle: ") and result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.stderr
    assert not out.exists() or list(out.iterdir()) == [], "partial output left behind"
    # Without it, a damaged attachment is quarantined and the rest written (exit status 3); an
    # unreadable bundle or a key that opens nothing still writes nothing (exit status 1).
    result = run_cli(args)
    assert "Traceback" not in result.stderr
    if damage == "flip-attachment":
        assert result.returncode == 3, result.stderr
        assert "attachment 0 \"a.bin\": member items/" in result.stderr
        assert len(report_folders(out)) == 2 and (out / "QUARANTINE.txt").exists()
    else:
        assert result.returncode == 1 and result.stderr.strip().count("\n") == 0
        assert not out.exists() or list(out.iterdir()) == [], "partial output left behind"


def test_add_investigator_prints_credentials_and_account_logs_in(
    server_env: Config, app: Flask, clock: Clock, fast_passwords: None,
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["add-investigator", "Zoe", "--admin"]) == 0
    out = capsys.readouterr().out
    password = re.search(r"^password:\s+(\S+)$", out, re.M)
    uri = re.search(r"^otpauth:\s+(otpauth://totp/whistle:zoe\?\S+)$", out, re.M)
    assert password and uri and "issuer=whistle" in uri.group(1)
    assert "█" in out  # the QR code, drawn in the terminal
    secret = parse_qs(urlparse(uri.group(1)).query)["secret"][0]
    account = Account(id=0, name="zoe", password=password.group(1), totp_secret=secret,
                      is_admin=True, clock=clock)
    client = app.test_client()
    assert investigator_login(client, account).status_code == 303
    assert client.get("/investigator/admin/accounts").status_code == 200

    assert cli.main(["add-investigator", "ZOE"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["audit", "verify"]) == 0
    assert capsys.readouterr().out.startswith("ok: 2 entries, head ")  # account_create, login


def test_onion_client_key_prints_server_line_and_private_key(capsys: pytest.CaptureFixture[str]) -> None:
    onion = "qo237ez233empfkmtiuv2ikccrr3zdhugonrojnbbx7udijgcc6eu2ad"
    assert cli.main(["onion-client-key", "--name", "maria", "--onion", onion]) == 0
    out = capsys.readouterr().out
    assert "/var/lib/tor/whistle-investigator/authorized_clients/maria.auth" in out
    public = re.search(r"^descriptor:x25519:([A-Z2-7]{52})$", out, re.M)
    private = re.search(rf"^{onion}:descriptor:x25519:([A-Z2-7]{{52}})$", out, re.M)
    assert public and private and re.search(rf"^{private.group(1)}$", out, re.M)
    assert cli.main(["onion-client-key", "--name", "../etc"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_upgrade_reports_schema_revision(server_env: Config, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from whistle.server.migrate import head_revision

    head = head_revision()
    assert cli.main(["upgrade"]) == 0
    assert capsys.readouterr().out.strip() == f"database schema upgraded from revision (empty) to {head}"
    assert cli.main(["upgrade"]) == 0
    assert capsys.readouterr().out.strip() == f"database schema is up to date (revision {head})"
    monkeypatch.setenv("WHISTLE_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.delenv("WHISTLE_DATABASE_URL", raising=False)
    assert cli.main(["upgrade"]) == 1
    assert "'whistle init'" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


# Every command that works on an existing instance, with the arguments it needs to get that far.
NEEDS_INSTANCE = [["add-investigator", "bob"], ["export", "--out", "b.zip"], ["audit", "verify"],
                  ["import-replies", "replies.json"], ["backup", "--out", "backup.zip"],
                  ["upgrade"], ["run", "--port", "1"]]


@pytest.mark.parametrize("args", NEEDS_INSTANCE, ids=lambda a: a[0])
def test_cli_server_command_refuses_folder_without_instance(args: list[str], tmp_path: Path) -> None:
    """Run from the wrong folder, a command used to make a fresh ./instance (an account the
    running server never saw): it must name the folder it looked in, say how to point elsewhere,
    exit 1 and create nothing."""
    keys = tmp_path / "keys"
    keys.mkdir()
    unit = UnitSecretKey.generate().public_key
    (keys / "unit.pub").write_text(unit.to_file_text())
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str((tmp_path / "instance").resolve()) in lines[0]
    assert "WHISTLE_DATA_DIR" in lines[0] and "whistle init" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert result.stdout == ""


REPO = Path(__file__).resolve().parent.parent


def test_readme_decrypt_example_writes_outside_the_repository() -> None:
    """Plaintext must not land in the checkout, where a ``git add .`` would publish it."""
    import shlex

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", readme, re.M | re.S)
    commands = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()
                if "whistle decrypt" in line]
    assert commands, "no 'whistle decrypt' example in README.md"
    for command in commands:
        words = shlex.split(command)
        out = Path(words[words.index("--out") + 1]).expanduser()
        target = (REPO / out).resolve()
        assert target != REPO and REPO not in target.parents, command


def test_readme_gitignore_covers_demo_folders() -> None:
    import shutil

    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a checkout")
    for path in ("instance/whistle.sqlite3", "demo-workstation/unit.key", "keys/unit.pub",
                 "keys/unit-sign.pub", "reports/0123abcd/report.txt", "bundle.zip"):
        result = subprocess.run([git, "check-ignore", "-q", "--no-index", path], cwd=REPO,  # noqa: S603
                                check=False)
        assert result.returncode == 0, f"{path} is not ignored by .gitignore"
