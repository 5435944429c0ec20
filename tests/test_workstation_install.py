# SPDX-License-Identifier: AGPL-3.0-or-later
"""The offline workstation installs and imports nothing of the server (docs/workstation.md).

The workstation holds the unit's private key: every library it carries is attack surface and
something to bring across the air gap. Its install is the wheel with ``--no-deps`` plus
requirements-workstation.txt, and its commands import the shared core and the workstation only.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import wheelhouse
from flask import Flask
from flask.testing import FlaskClient
from support import (
    KEY_PASSPHRASE,
    RECEIPT,
    Workstation,
    make_app,
    post_form,
    report_folders,
    source_login,
    the_report,
)

from whistle.core.replies import parse_replies
from whistle.server.casework import import_replies
from whistle.server.export import export_bundle

# What the server needs and the workstation must never load (nor, installed as documented, have).
SERVER_ONLY = {"flask", "werkzeug", "jinja2", "sqlalchemy", "alembic", "psycopg", "redis", "gunicorn",
               "flask_limiter", "limits", "flask_wtf", "flask_babel", "argon2", "diceware", "pyotp",
               "qrcode"}
# All a workstation command may import beyond the standard library: PyNaCl and what it is built on
# (its compiled libsodium binding also registers as `_sodium`), and the hooks a venv or an editable
# install put on every interpreter's path.
WORKSTATION_IMPORTS = {"__main__", "whistle", "nacl", "_sodium", "_cffi_backend", "cffi", "pycparser",
                       "_distutils_hack", "sitecustomize", "usercustomize", "_virtualenv"}
REQUIREMENTS = wheelhouse.ROOT / "requirements-workstation.txt"

# Runs one command as `whistle ...` would, then reports the modules it left loaded.
RUN_AND_LIST = ("import json, sys; from whistle import cli; rc = cli.main(sys.argv[1:]); "
                "print(json.dumps(sorted(sys.modules))); sys.exit(rc)")


def _bundle(app: Flask, client: FlaskClient, out: Path) -> tuple[str, str]:
    """File one report with an attachment through the JavaScript-off form, export it to ``out``;
    return the source's receipt passphrase and the report id."""
    response = post_form(client, "Medicinas no entregadas en el dispensario.",
                         [("receta.pdf", "application/pdf", b"%PDF-1.4 prescription")])
    phrase = RECEIPT.search(response.get_data(as_text=True))
    assert response.status_code == 200 and phrase
    state = app.extensions["whistle"]
    export_bundle(state.sessions, out, unit_fingerprint=state.unit_key.fingerprint())
    return phrase.group(1), the_report(app).id


@pytest.mark.slow
def test_workstation_install_no_deps_keygen_decrypt_reply(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, environ: dict[str, str]
) -> None:
    dists = wheelhouse.build_dists(tmp_path_factory)
    # docs/workstation.md, online side: the wheel and the few wheels it needs, into one folder.
    carry = tmp_path / "carry"
    carry.mkdir()
    (carry / dists.wheel.name).write_bytes(dists.wheel.read_bytes())
    wheelhouse.run([sys.executable, "-m", "pip", "download", "-d", str(carry), "-r", str(REQUIREMENTS)],
                   cwd=tmp_path)
    # Offline side: no index and no pip configuration (which could name other wheel folders), so
    # only what was carried can be installed.
    offline = wheelhouse.clean_env(PIP_CONFIG_FILE="/dev/null")
    offline = {k: v for k, v in offline.items() if not k.startswith("PIP_") or k == "PIP_CONFIG_FILE"}
    bin_dir = wheelhouse.make_venv(tmp_path / "venv")
    pip = str(bin_dir / "pip")
    wheelhouse.run([pip, "install", "--no-index", "--find-links", str(carry), "-r", str(REQUIREMENTS)],
                   cwd=tmp_path, env=offline)
    wheelhouse.run([pip, "install", "--no-index", "--no-deps", str(carry / dists.wheel.name)],
                   cwd=tmp_path, env=offline)
    listed = wheelhouse.run([pip, "list", "--format", "json"], cwd=tmp_path, env=offline).stdout
    installed = {entry["name"].lower().replace("-", "_") for entry in json.loads(listed)}
    assert not installed & SERVER_ONLY, installed
    assert {"whistle", "pynacl"} <= installed

    work = tmp_path / "work"
    work.mkdir()
    whistle = str(bin_dir / "whistle")
    env = wheelhouse.clean_env()
    (work / "passphrase.txt").write_text(KEY_PASSPHRASE + "\n")
    keygen = wheelhouse.run([whistle, "keygen", "--dir", "keys", "--passphrase-file", "passphrase.txt"],
                            cwd=work, env=env).stdout
    fingerprint = re.search(r"^fingerprint: (.+)$", keygen, re.M).group(1)  # type: ignore[union-attr]
    sign_fingerprint = re.search(r"^signing key fingerprint: (.+)$", keygen, re.M).group(1)  # type: ignore[union-attr]
    assert (work / "keys" / "unit.key").stat().st_mode & 0o077 == 0
    shown = wheelhouse.run([whistle, "fingerprint", "--key", "keys/unit.pub"], cwd=work, env=env).stdout
    assert shown.splitlines()[0] == fingerprint and shown.splitlines()[1].endswith(sign_fingerprint)

    # The server, in this test process, with the public keys keygen wrote (only those files).
    server_keys = tmp_path / "server-keys"
    server_keys.mkdir()
    for name in ("unit.pub", "unit-sign.pub"):
        (server_keys / name).write_bytes((work / "keys" / name).read_bytes())
    app = make_app(environ | {"WHISTLE_UNIT_KEY": str(server_keys / "unit.pub")}, tmp_path)
    app.config.update(TESTING=True)
    try:
        client = app.test_client()
        phrase, report_id = _bundle(app, client, work / "bundle.zip")

        decrypted = wheelhouse.run([whistle, "decrypt", "bundle.zip", "--key", "keys/unit.key",
                                    "--passphrase-file", "passphrase.txt", "--out", "cases"],
                                   cwd=work, env=env).stdout
        assert "decrypted 1 item(s) and 1 attachment(s) into 1 report folder(s)" in decrypted
        (folder,) = report_folders(work / "cases")
        assert "Medicinas no entregadas" in (folder / "report.txt").read_text(encoding="utf-8")
        assert (folder / "attachments" / "receta.pdf").read_bytes() == b"%PDF-1.4 prescription"

        (work / "reply.txt").write_text("Gracias, estamos revisando el caso.", encoding="utf-8")
        replied = wheelhouse.run([whistle, "reply", "bundle.zip", "--report", report_id[:8],
                                  "--text-file", "reply.txt", "--out", "replies.json",
                                  "--key", "keys/unit.key", "--passphrase-file", "passphrase.txt"],
                                 cwd=work, env=env).stdout
        assert f"reply to report {report_id} sealed" in replied
        replies = parse_replies((work / "replies.json").read_bytes())
        assert [r.report_id for r in replies] == [report_id]

        # Back on the server, the source reads it with the receipt passphrase.
        with app.extensions["whistle"].sessions.begin() as db:
            assert import_replies(db, replies, "tester", app.extensions["whistle"].unit_sign_key) == 1
        source = app.test_client()
        source_login(source, phrase)
        assert "Gracias, estamos revisando el caso." in source.get("/case").get_data(as_text=True)
    finally:
        app.extensions["whistle"].engine.dispose()


def _run_listing_modules(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    result = subprocess.run([sys.executable, "-c", RUN_AND_LIST, *args], cwd=cwd, capture_output=True,
                            text=True, env=wheelhouse.clean_env(), check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout.splitlines()[-1]))
    return result, modules


def test_workstation_commands_import_no_server_module(
    app: Flask, client: FlaskClient, workstation: Workstation, tmp_path: Path
) -> None:
    _, report_id = _bundle(app, client, tmp_path / "bundle.zip")
    (tmp_path / "reply.txt").write_text("Recibido.", encoding="utf-8")
    commands = {
        "keygen": ["keygen", "--dir", "new-keys", "--passphrase-file", str(workstation.passphrase_file)],
        "fingerprint": ["fingerprint", "--key", "new-keys/unit.pub"],
        "decrypt": ["decrypt", "bundle.zip", "--key", str(workstation.key_file),
                    "--passphrase-file", str(workstation.passphrase_file), "--out", "cases"],
        "reply": ["reply", "bundle.zip", "--report", report_id, "--text-file", "reply.txt",
                  "--out", "replies.json", "--key", str(workstation.key_file),
                  "--passphrase-file", str(workstation.passphrase_file)],
    }
    for name, args in commands.items():
        _, modules = _run_listing_modules(args, tmp_path)
        tops = {m.partition(".")[0] for m in modules}
        assert not tops & SERVER_ONLY, (name, sorted(tops & SERVER_ONLY))
        assert not [m for m in modules if m.startswith("whistle.server")], name
        # An allow-list too: a new third-party import on the workstation is a decision, not an accident.
        extra = {t for t in tops - set(sys.stdlib_module_names) - WORKSTATION_IMPORTS
                 if not t.startswith("__editable__")}
        assert not extra, (name, sorted(extra))
    assert len(report_folders(tmp_path / "cases")) == 1
    assert len(parse_replies((tmp_path / "replies.json").read_bytes())) == 1


def test_workstation_server_command_in_workstation_install_fails_in_one_line(tmp_path: Path) -> None:
    # Simulates the workstation install: importing any server library fails, as it would there.
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.partition('.')[0] in {'flask', 'sqlalchemy'}:\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from whistle import cli\n"
            "sys.exit(cli.main(['export', '--out', 'x.zip']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env=wheelhouse.clean_env(), check=False, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("whistle: this is a server command"), result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


# The casebook's web UI (whistle casebook serve) is the one workstation part with a web stack:
# Flask, Flask-WTF and Flask-Babel and what they are built on (requirements-casebook.txt).
CASEBOOK_UI_IMPORTS = WORKSTATION_IMPORTS | {"flask", "werkzeug", "jinja2", "markupsafe",
                                             "itsdangerous", "blinker", "click", "flask_wtf",
                                             "wtforms", "flask_babel", "babel", "pytz"}


def test_workstation_casebook_commands_import_no_server_module(
    app: Flask, client: FlaskClient, workstation: Workstation, tmp_path: Path
) -> None:
    """import, replies, quarantine and export-case load nothing of the server and no web library;
    the web UI's module loads no server module and only the libraries the casebook lists."""
    _, report_id = _bundle(app, client, tmp_path / "bundle.zip")
    key = ["--key", str(workstation.key_file), "--passphrase-file", str(workstation.passphrase_file)]
    book = ["--casebook", str(tmp_path / "cb")]
    commands = {
        "import": ["casebook", "import", "bundle.zip", *key, *book],
        "quarantine": ["casebook", "quarantine", *book],
        "export-case": ["casebook", "export-case", report_id, "--out", "legal", "--no-clean", *book],
        "replies": ["casebook", "replies", "--out", "replies.json", *book],
    }
    for name, args in commands.items():
        _, modules = _run_listing_modules(args, tmp_path)
        tops = {m.partition(".")[0] for m in modules}
        assert not tops & SERVER_ONLY, (name, sorted(tops & SERVER_ONLY))
        assert not [m for m in modules if m.startswith("whistle.server")], name
        extra = {t for t in tops - set(sys.stdlib_module_names) - WORKSTATION_IMPORTS
                 if not t.startswith("__editable__")}
        assert not extra, (name, sorted(extra))
    code = ("import json, sys; import whistle.workstation.casebook.web, "
            "whistle.workstation.casebook.web.views; print(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env=wheelhouse.clean_env(), check=True, timeout=120)
    modules = set(json.loads(result.stdout.splitlines()[-1]))
    assert not [m for m in modules if m.startswith("whistle.server")]
    tops = {m.partition(".")[0] for m in modules}
    # _sysconfigdata_*: the standard library's own build data, loaded by sysconfig.
    extra = {t for t in tops - set(sys.stdlib_module_names) - CASEBOOK_UI_IMPORTS
             if not t.startswith(("__editable__", "_sysconfigdata_"))}
    assert not extra, sorted(extra)
    listed = {line.split(">")[0].split("=")[0].strip().lower().replace("-", "_")
              for line in (wheelhouse.ROOT / "requirements-casebook.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert listed == {"flask", "flask_wtf", "flask_babel", "scikit_learn", "pygal"}
