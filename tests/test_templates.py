# SPDX-License-Identifier: AGPL-3.0-or-later
"""The pages' shared pieces (templates/_macros.html): status blocks by kind, flashed messages with
their category, and the API addresses the page scripts read from data- attributes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from flask import Flask, render_template_string
from flask.testing import FlaskClient
from support import (
    Account,
    csrf_token,
    file_report,
    form_tokens,
    investigator_login,
    source_login,
    the_report,
)

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("info", "success", "warning", "error")


def _notices(html: str) -> list[tuple[str, str, str]]:
    """(kind, role, text) of every status block on a page."""
    found = re.findall(r'<div class="notice notice-(\w+)" role="(\w+)"[^>]*>(.*?)</div>', html, re.S)
    return [(kind, role, re.sub(r"<[^>]+>", " ", text).strip()) for kind, role, text in found]


@pytest.mark.parametrize("kind,role", [("info", "status"), ("success", "status"),
                                       ("warning", "alert"), ("error", "alert"),
                                       ("message", "status"), ("bogus", "status")])
def test_templates_notice_kind_sets_class_and_role(app: Flask, kind: str, role: str) -> None:
    """Errors and warnings interrupt a screen reader; an unknown kind (flash's default "message")
    is shown as info, never as a success."""
    with app.test_request_context("/"):
        html = render_template_string(
            '{% import "_macros.html" as m %}{{ m.notice(kind, "texto <b>") }}', kind=kind)
    shown = kind if kind in KINDS else "info"
    assert _notices(html) == [(shown, role, "texto &lt;b&gt;")]


def test_templates_notice_kinds_styled_distinctly() -> None:
    """Each kind has its own border colour, background and sign in whistle.css."""
    css = (ROOT / "whistle" / "static" / "css" / "whistle.css").read_text(encoding="utf-8")
    looks = {}
    for kind in KINDS:
        box = re.search(rf"^\.notice-{kind} \{{([^}}]*)\}}", css, re.M)
        sign = re.search(rf"^\.notice-{kind}::before \{{([^}}]*)\}}", css, re.M)
        assert box and sign, f".notice-{kind} is not styled"
        looks[kind] = tuple(re.search(rf"{prop}:\s*([^;]+);", text).group(1)  # type: ignore[union-attr]
                            for prop, text in (("border-color", box.group(1)),
                                               ("background", box.group(1)),
                                               ("content", sign.group(1))))
    for part in range(3):
        assert len({look[part] for look in looks.values()}) == len(KINDS), looks


def test_templates_source_flashes_shown_with_their_category(client: FlaskClient) -> None:
    assert "notice-" not in client.get("/").get_data(as_text=True)
    # An ended session: a warning on the login page.
    assert client.get("/case").status_code == 302
    assert [k for k, _r, _t in _notices(client.get("/followup").get_data(as_text=True))] == ["warning"]
    phrase = file_report(client)
    assert source_login(client, phrase).status_code == 302
    resp = client.post("/case", data={**form_tokens(client, "/case"), "body": "más datos"},
                       content_type="multipart/form-data")
    assert resp.status_code == 302
    assert [(k, r) for k, r, _t in _notices(client.get("/case").get_data(as_text=True))] == [
        ("success", "status")]
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    assert [k for k, _r, _t in _notices(client.get("/").get_data(as_text=True))] == ["info"]


def test_templates_investigator_error_and_success_never_look_alike(
        app: Flask, client: FlaskClient, investigator: Account) -> None:
    source = app.test_client()
    file_report(source)
    rid = the_report(app).id
    assert investigator_login(client, investigator).status_code in (302, 303)
    token = csrf_token(client, f"/investigator/case/{rid}")
    client.post(f"/investigator/case/{rid}/delete", data={"csrf_token": token, "confirm": "nope"})
    refused = _notices(client.get(f"/investigator/case/{rid}").get_data(as_text=True))
    assert [(k, r) for k, r, _t in refused] == [("error", "alert")]
    client.post(f"/investigator/case/{rid}/status", data={"csrf_token": token, "status": "acknowledged"})
    done = _notices(client.get(f"/investigator/case/{rid}").get_data(as_text=True))
    assert [(k, r) for k, r, _t in done] == [("success", "status")]


def test_templates_form_errors_in_one_error_block(client: FlaskClient) -> None:
    resp = client.post("/submit", data={"csrf_token": csrf_token(client), "category": "", "body": ""},
                       content_type="multipart/form-data")
    assert resp.status_code == 400
    notices = _notices(resp.get_data(as_text=True))
    assert len(notices) == 1 and notices[0][:2] == ("error", "alert")


def test_templates_page_scripts_get_api_addresses_from_data_attributes(client: FlaskClient) -> None:
    submit = client.get("/submit").get_data(as_text=True)
    form = re.search(r'<form id="submit-form"[^>]*>', submit).group(0)  # type: ignore[union-attr]
    for attribute, path in (("data-unit-key-url", "/api/v1/unit-key"),
                            ("data-upload-url", "/api/v1/reports"), ("data-pow-url", "/api/v1/pow")):
        assert f'{attribute}="{path}"' in form
        assert client.get(path + ("?purpose=submit" if path.endswith("pow") else "")).status_code != 404
    followup = client.get("/followup").get_data(as_text=True)
    assert re.search(r'<form [^>]*data-pow="login"[^>]*data-pow-url="/api/v1/pow"', followup)
    phrase = file_report(client)
    source_login(client, phrase)
    case = client.get("/case").get_data(as_text=True)
    form = re.search(r'<form id="submit-form"[^>]*>', case).group(0)  # type: ignore[union-attr]
    assert 'data-upload-url="/api/v1/messages"' in form and 'data-kind="message"' in form
    # The scripts themselves know no route.
    for script in ("submit.js", "pow.js", "whistle-crypto.js"):
        assert "/api/" not in (ROOT / "whistle" / "static" / "js" / script).read_text(encoding="utf-8")


def test_templates_csrf_field_never_duplicates_an_id(client: FlaskClient) -> None:
    phrase = file_report(client)
    source_login(client, phrase)
    html = client.get("/case").get_data(as_text=True)
    assert html.count('name="csrf_token"') == 2
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), sorted(ids)


def _flash_calls() -> list[tuple[str, int, ast.Call]]:
    calls = []
    for path in sorted((ROOT / "whistle" / "server").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = getattr(node, "func", None)
            if isinstance(node, ast.Call) and getattr(name, "id", getattr(name, "attr", "")) == "flash":
                calls.append((str(path.relative_to(ROOT)), node.lineno, node))
    return calls


def test_templates_every_flash_names_its_category() -> None:
    """Without a category a message would be shown as info, whatever it says."""
    calls = _flash_calls()
    assert calls, "no flash() call found: has the scan broken?"
    unnamed = []
    for where, line, call in calls:
        category = call.args[1] if len(call.args) > 1 else next(
            (kw.value for kw in call.keywords if kw.arg == "category"), None)
        if not (isinstance(category, ast.Constant) and category.value in KINDS):
            unnamed.append(f"{where}:{line}")
    assert not unnamed, f"flash() without one of {KINDS}: {unnamed}"
