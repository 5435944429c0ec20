# SPDX-License-Identifier: AGPL-3.0-or-later
"""``whistle casebook serve`` as a real process: loopback only, a free port, the one-time link,
the Host check on the wire, and no plaintext outside the casebook folder after import, serve and
export (a canary over the rest of the home folder and the temp folder)."""

from __future__ import annotations

import http.client
import http.cookiejar
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from support import Workstation, casebook_bundle, find_needles, post_form, stop_process

from whistle import cli


@pytest.mark.parametrize("host", [
    "0.0.0.0",  # noqa: S104 - a bind serve must refuse
    "::", "::1", "192.168.1.20", "localhost", "example.org"])
def test_casebook_serve_refuses_a_non_loopback_bind(host: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["casebook", "serve", "--host", host, "--casebook", str(tmp_path / "cb")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("whistle: serve listens on 127.0.0.1 only") and err.count("\n") == 1
    assert not (tmp_path / "cb").exists()


def _env(home: Path, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHISTLE_")}
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONUNBUFFERED="1")
    return env


@pytest.mark.slow
def test_casebook_serve_process_canary(app: Flask, client: FlaskClient, workstation: Workstation,
                                       tmp_path: Path) -> None:
    canary = "CANARY-SERVE-" + os.urandom(6).hex()
    post_form(client, f"Denuncia {canary} sobre la farmacia",
              [(f"{canary}.txt", "text/plain", f"adjunto {canary}".encode())])
    bundle = casebook_bundle(app, tmp_path / "bundle.zip")
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    (home / "notes-of-my-own.txt").write_text("nothing here")
    book, legal = home / "whistle-casebook", home / "legal"
    env = _env(home, tmp)
    keyargs = ["--key", str(workstation.key_file), "--passphrase-file", str(workstation.passphrase_file)]
    run = [sys.executable, "-m", "whistle.cli", "casebook"]
    # The default folder: ~/whistle-casebook.
    subprocess.run([*run, "import", str(bundle), *keyargs], env=env, cwd=home, check=True,
                   capture_output=True, timeout=120)
    assert book.is_dir()
    log = tmp_path / "serve.out"
    with log.open("wb") as out:
        proc = subprocess.Popen([*run, "serve", *keyargs], env=env, cwd=home, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        link = ""
        for _ in range(300):
            found = re.search(r"(http://127\.0\.0\.1:\d+)/login\?token=\S+", log.read_text())
            if found:
                link, origin = found.group(0), found.group(1)
                break
            assert proc.poll() is None, log.read_text()
            import time

            time.sleep(0.05)
        assert link, log.read_text()
        port = int(origin.rsplit(":", 1)[1])
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        inbox = opener.open(link, timeout=10).read().decode()
        assert '<html lang="es">' in inbox and "Casos" in inbox
        case_id = re.search(r'href="/case/([0-9a-f]{16})"', inbox).group(1)  # type: ignore[union-attr]
        page = opener.open(f"{origin}/case/{case_id}", timeout=10).read().decode()
        assert canary in page
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        form = urllib.parse.urlencode({"csrf_token": token, "body": f"Respuesta {canary}",
                                       "purpose": "acknowledgement"}).encode()
        reply = urllib.request.Request(f"{origin}/case/{case_id}/reply", data=form)  # noqa: S310 - loopback
        opener.open(reply, timeout=10)
        att = re.search(r'href="(/attachment/\d+/download)"', page).group(1)  # type: ignore[union-attr]
        with opener.open(origin + att, timeout=10) as answer:  # noqa: S310 - loopback test server
            assert answer.headers["Content-Disposition"].startswith("attachment")
            assert canary.encode() in answer.read()
        # On the wire: a foreign Host header (DNS rebinding) is refused; no cookie, refused.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/", headers={"Host": f"rebind.example:{port}"})
        assert conn.getresponse().status == 421
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/case/{case_id}")
        answer = conn.getresponse()
        assert answer.status == 403 and canary.encode() not in answer.read()
        conn.close()
        # The link was used: it does not open a second session.
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(link, timeout=10)  # noqa: S310 - loopback test server
    finally:
        stop_process(proc)
    subprocess.run([*run, "export-case", case_id, "--out", str(legal)], env=env, cwd=home,
                   check=True, capture_output=True, timeout=300)
    subprocess.run([*run, "replies", "--out", str(home / "usb-replies.json")], env=env, cwd=home,
                   check=True, capture_output=True, timeout=60)
    assert find_needles([p for p in (legal.rglob("*")) if p.is_file()], {"c": canary.encode()})
    others = [p for p in [*home.rglob("*"), *tmp.rglob("*")] if p.is_file()
              and book not in p.parents and legal not in p.parents]
    assert others and find_needles(others, {"canary": canary.encode()}) == []
    assert find_needles([log], {"canary": canary.encode()}) == []
