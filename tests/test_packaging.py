# SPDX-License-Identifier: AGPL-3.0-or-later
"""The package works without ``pip install -e``: a wheel installed in a fresh venv serves every page.

The checkout keeps ``templates/`` at its top, outside the package; setup.py copies them into every
built wheel. Without that, an installed whistle starts and answers every page with a 500.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import wheelhouse

from whistle.core.crypto import UnitSecretKey, UnitSigningKey

pytestmark = pytest.mark.slow

# Runs inside the fresh venv, from a folder that is not the checkout: starts the app, walks
# every GET route that takes no argument (anonymous, then logged in as an admin investigator),
# files one report through the JavaScript-off form and opens its case page; prints JSON.
WALK = r'''
import json, re, sys
from pathlib import Path

import pyotp

import whistle
from whistle import create_app
from whistle.server.accounts import create_investigator

app = create_app()
codes = {}


def get(client, path, **kw):
    response = client.get(path, **kw)
    codes[("investigator " if client is staff else "") + path] = response.status_code
    return response


def token(html):
    match = (re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
             or re.search(r'<meta name="csrf-token" content="([^"]+)"', html))
    return match.group(1)


routes = sorted(rule.rule for rule in app.url_map.iter_rules()
                if "GET" in rule.methods and not rule.arguments)
anonymous, staff = app.test_client(), app.test_client()
for path in routes:
    get(anonymous, path)
get(anonymous, "/static/css/whistle.css")
get(anonymous, "/api/v1/pow?purpose=submit")
spanish = anonymous.get("/").get_data(as_text=True)
english = anonymous.get("/?lang=en").get_data(as_text=True)

submit = anonymous.get("/submit").get_data(as_text=True)
once = re.search(r'name="once" value="([^"]+)"', submit).group(1)
filed = anonymous.post("/submit", data={"csrf_token": token(submit), "once": once,
                                        "category": "corruption", "body": "Installed from a wheel."})
codes["POST /submit"] = filed.status_code

with app.extensions["whistle"].sessions() as db:
    account = create_investigator(db, "wheel", is_admin=True)
    db.commit()
page = get(staff, "/investigator/login").get_data(as_text=True)
login = staff.post("/investigator/login", data={
    "csrf_token": token(page), "name": account.name, "password": account.password,
    "code": pyotp.TOTP(account.totp_secret).now()})
codes["POST /investigator/login"] = login.status_code
for path in routes:
    if path.startswith("/investigator/"):
        get(staff, path)
cases = get(staff, "/investigator/").get_data(as_text=True)
case_links = sorted(set(re.findall(r'href="(/investigator/case/[^"/]+)"', cases)))
for path in case_links:
    get(staff, path)

print(json.dumps({"package": whistle.__file__, "codes": codes, "cases": case_links,
                  "spanish": spanish, "english": english}))
'''


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> wheelhouse.Dists:
    return wheelhouse.build_dists(tmp_path_factory)


def test_packaging_wheel_carries_templates_static_and_translations(dists: wheelhouse.Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as zf:
        names = set(zf.namelist())
    repo_templates = {p.relative_to(wheelhouse.ROOT).as_posix()
                      for p in (wheelhouse.ROOT / "templates").rglob("*.html")}
    assert repo_templates, "the checkout has no templates?"
    assert {"whistle/" + t for t in repo_templates} <= names, "templates missing from the wheel"
    assert "whistle/static/css/whistle.css" in names
    assert "whistle/static/vendor/libsodium/libsodium.js" in names
    for lang in ("es", "en"):
        assert f"whistle/translations/{lang}/LC_MESSAGES/messages.mo" in names
    # The Spanish passphrase word list: without it every Spanish report is a 500.
    assert "whistle/core/wordlists/es.txt" in names
    # Server-only and test-only folders of the checkout stay out of the package.
    assert not any(n.startswith(("tests/", "templates/", "bench/")) for n in names)


def test_packaging_installed_wheel_serves_every_page(dists: wheelhouse.Dists,
                                                    tmp_path: Path) -> None:
    bin_dir = wheelhouse.make_venv(tmp_path / "venv")
    # With its dependencies, from whatever package index pip is configured to reach.
    wheelhouse.run([str(bin_dir / "pip"), "install", str(dists.wheel)], cwd=tmp_path)

    work = tmp_path / "work"  # a throwaway instance; the working folder is not the checkout
    (work / "keys").mkdir(parents=True)
    (work / "keys" / "unit.pub").write_text(UnitSecretKey.generate().public_key.to_file_text())
    (work / "keys" / "unit-sign.pub").write_text(UnitSigningKey.generate().verify_key.to_file_text())
    (work / "walk.py").write_text(WALK, encoding="utf-8")
    env = wheelhouse.clean_env(WHISTLE_DATA_DIR=str(work / "instance"),
                               WHISTLE_UNIT_KEY=str(work / "keys" / "unit.pub"))
    result = wheelhouse.run([str(bin_dir / "python"), "walk.py"], cwd=work, env=env)
    report = json.loads(result.stdout.splitlines()[-1])

    package = Path(report["package"]).parent
    assert package.is_relative_to(tmp_path / "venv"), f"imported whistle from {package}"
    assert (package / "templates" / "base.html").is_file()
    assert (package / "templates" / "investigator" / "cases.html").is_file()
    assert (package / "static" / "css" / "whistle.css").is_file()
    assert (package / "translations" / "es" / "LC_MESSAGES" / "messages.mo").is_file()
    assert (package / "core" / "wordlists" / "es.txt").is_file()

    codes: dict[str, int] = report["codes"]
    assert not [path for path, code in codes.items() if code >= 500], codes
    # A page answers or redirects; an API call made without its query (/api/v1/pow) may say 400.
    assert all(code in (200, 302, 303) or (code == 400 and "/api/" in path)
               for path, code in codes.items()), codes
    for path in ("/", "/submit", "/investigator/login", "/static/css/whistle.css", "/api/v1/unit-key",
                 "investigator /investigator/", "investigator /investigator/admin/accounts"):
        assert codes[path] == 200, (path, codes)
    assert codes["/investigator/"] in (302, 303)  # anonymous: sent to the login page
    assert codes["/api/v1/pow?purpose=submit"] == 200
    # The report is filed and the browser sent on to its receipt (post/redirect/get).
    assert codes["POST /submit"] == 303 and codes["POST /investigator/login"] in (302, 303)
    assert len(report["cases"]) == 1 and codes["investigator " + report["cases"][0]] == 200
    # The Spanish catalogue is read from the installed package: the default page is not English.
    assert 'lang="es"' in report["spanish"] and 'lang="en"' in report["english"]
    assert report["spanish"].replace('lang="es"', "") != report["english"].replace('lang="en"', "")
