# SPDX-License-Identifier: AGPL-3.0-or-later
"""docs/protocol.md against the code: the numbers, names and error codes a client is written
from must be the ones the server uses, so that the document cannot drift from the server again
(issue 10, item 6: a client written from the doc alone found a dozen disagreements).

The doc keeps what is checked in two machine-readable places: the fenced block of section 5.4
("Limits": ``name = value`` lines) and the table of section 5.5 ("Answers and error codes") plus
the proof-of-work table of section 7. Every line of the block is compared with a constant or a
configured value; every code of the tables must be one the server can send, every code the
server's source can send must be in a table, and the rows that can be provoked cheaply are.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from support import (
    REPO,
    FrozenClock,
    api_payload,
    browser_derive,
    browser_login,
    csrf_from_html,
    csrf_token,
    file_report,
    make_app,
    post_api,
    post_form,
    random_browser_keys,
    source_login,
)
from werkzeug.test import TestResponse

from whistle.core.crypto import (
    ENVELOPE_BLOCK,
    MAX_BODY_CHARS,
    SEAL_OVERHEAD,
    Envelope,
    UnitPublicKey,
    seal_envelope,
)
from whistle.core.crypto.stream import CHUNK_SIZE, STREAM_ABYTES, STREAM_HEADER_BYTES
from whistle.core.passphrase import issued_word_counts, normalise, word_count, wordlist
from whistle.server import limits
from whistle.server.config import load_config

DOC = REPO / "docs" / "protocol.md"
SERVER = REPO / "whistle" / "server"
MIB = 1024 * 1024


def _section(title: str) -> str:
    """The text of the section whose heading starts with ``title``, up to the next heading of
    the same or a higher level."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^(#+) {re.escape(title)}.*$", text, re.MULTILINE)
    assert match, f"docs/protocol.md has no section {title!r}"
    level = len(match.group(1))
    lines, fenced = [], False
    for line in text[match.end():].splitlines(keepends=True):
        fenced ^= line.startswith("```")
        # A "# comment" inside a fenced block is not a heading.
        if not fenced and re.match(rf"#{{1,{level}}} ", line):
            break
        lines.append(line)
    return "".join(lines)


def doc_limits() -> dict[str, str]:
    """The ``name = value`` lines of section 5.4's fenced block (comments after ``#`` dropped)."""
    block = re.search(r"```text\n(.*?)```", _section("5.4 Limits"), re.DOTALL)
    assert block, "section 5.4 has no ```text block of limits"
    values: dict[str, str] = {}
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, value = line.partition("=")
            assert sep, f"not a name = value line: {line!r}"
            values[name.strip()] = value.strip()
    return values


def doc_answers() -> list[tuple[str, int, str, str]]:
    """Section 5.5's table: (endpoint, status, error code or "", what the cell says)."""
    rows = []
    for line in _section("5.5 Answers").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].isdigit():
            rows.append((cells[0].strip("`"), int(cells[1]), cells[2].strip("`").replace("—", ""),
                         cells[3]))
    assert len(rows) > 20, "section 5.5's table was not found"
    return rows


def doc_pow_codes() -> set[str]:
    return set(re.findall(r"^\| `(pow_[a-z]+)` \|", _section("7. Proof of work"), re.MULTILINE))


def doc_codes() -> set[str]:
    return {code for _, _, code, _ in doc_answers() if code} | doc_pow_codes()


def server_codes() -> set[str]:
    """Every JSON ``error`` code the server's source can send, read from the source itself."""
    literal = re.compile(
        r'error="([a-z0-9_]+)"'
        r'|UploadRejected\(\d+, "([a-z0-9_]+)"'
        r'|error_response\(\d+, "([a-z0-9_]+)"'
        r'|_refuse\(purpose, \d+, "([a-z0-9_]+)"'
        r'|PowError\("([a-z0-9_]+)"\)')
    codes: set[str] = set()
    for path in SERVER.rglob("*.py"):
        for match in literal.finditer(path.read_text(encoding="utf-8")):
            codes.add(next(g for g in match.groups() if g))
    # Built at run time: f"bad_{part}" / f"missing_{part}" (common.read_sealed_upload, parts
    # "report" and "message") and f"http_{code}" (app.http_error) for the statuses it answers.
    codes |= {f"{kind}_{part}" for kind in ("bad", "missing") for part in ("report", "message")}
    codes |= {f"http_{status}" for status in (400, 404, 405, 429, 500, 503)}
    return codes


# --------------------------------------------------------------------------- the limits block


def test_protocol_doc_limits_match_the_code(app: Flask) -> None:
    """Every number and name of section 5.4's block, against the constant or default it states."""
    from whistle.server.web.source.forms import FollowupForm

    defaults = load_config({}, cwd=REPO)
    length = next(v for v in FollowupForm.passphrase.kwargs["validators"] if hasattr(v, "max"))
    expected: dict[str, object] = {
        "sealed_envelope_max_bytes": defaults.max_envelope_bytes + SEAL_OVERHEAD,
        "envelope_max_bytes": defaults.max_envelope_bytes,
        "envelope_block_bytes": ENVELOPE_BLOCK,
        "seal_overhead_bytes": SEAL_OVERHEAD,
        "body_max_chars": MAX_BODY_CHARS,
        "request_max_bytes": defaults.max_upload_mb * MIB,
        "form_field_max_bytes": app.config["MAX_FORM_MEMORY_SIZE"],
        "form_max_parts": app.config["MAX_FORM_PARTS"],
        "passphrase_field_max_chars": length.max,
        "pow_field_max_body_bytes": limits.POW_FIELD_MAX_BODY,
        "stream_chunk_bytes": CHUNK_SIZE,
        "stream_header_bytes": STREAM_HEADER_BYTES,
        "stream_chunk_overhead_bytes": STREAM_ABYTES,
        "passphrase_words_es": word_count("es"),
        "passphrase_words_en": word_count("en"),
        "wordlist_es_words": len(wordlist("es")),
        "wordlist_en_words": len(wordlist("en")),
        "session_cookie": app.config["SESSION_COOKIE_NAME"],
        "csrf_header": app.config["WTF_CSRF_HEADERS"][0],
        "pow_header": limits.POW_HEADER,
        "backoff_free_failures": limits.FREE_FAILURES,
    }
    documented = doc_limits()
    waits = [int(w) for w in documented.pop("backoff_waits_seconds").split(",")]
    assert waits == [limits.backoff_wait(n) for n in range(1, len(waits) + 1)]
    assert waits[-1] == limits.BACKOFF_CAP_SECONDS
    issued = [int(n) for n in documented.pop("passphrase_words_issued").split(",")]
    assert issued == sorted(issued_word_counts())
    # Nothing in the block goes unchecked, and nothing checked is missing from it.
    assert set(documented) == set(expected)
    for name, value in expected.items():
        assert documented[name] == str(value), f"{name}: doc says {documented[name]}, code {value}"
    # The browser's copy of the protocol constants (whistle-crypto.js) says the same.
    script = (REPO / "whistle" / "static" / "js" / "whistle-crypto.js").read_text(encoding="utf-8")
    for js_name, name in (("MAX_BODY_CHARS", "body_max_chars"), ("PAD_BLOCK", "envelope_block_bytes"),
                          ("CHUNK_SIZE", "stream_chunk_bytes")):
        found = re.search(rf"var {js_name} = (\d+);", script)
        assert found and found.group(1) == documented[name], js_name


def test_protocol_doc_cookie_flags_are_the_documented_ones(client: FlaskClient) -> None:
    """5.1: one cookie, named as documented, HttpOnly, SameSite=Strict, Path=/, no Expires, and
    the meta tag the page's script reads the CSRF token from."""
    resp = client.get("/followup")
    cookies = resp.headers.getlist("Set-Cookie")
    assert len(cookies) == 1
    name = doc_limits()["session_cookie"]
    assert cookies[0].startswith(name + "=")
    flags = {part.strip().split("=")[0].lower() for part in cookies[0].split(";")[1:]}
    assert {"httponly", "path", "samesite"} <= flags and "expires" not in flags
    assert "SameSite=Strict" in cookies[0]
    assert csrf_from_html(resp.get_data(as_text=True))


# --------------------------------------------------------------------------- word lists, passphrases


def test_protocol_doc_wordlists_are_in_normal_form() -> None:
    """Section 4: the words are their own normal form and carry no separator; the doc's example
    of normalisation holds."""
    for lang, alphabet in (("es", r"[a-z]{4,8}"), ("en", r"[a-z-]+")):
        for word in wordlist(lang):
            assert re.fullmatch(alphabet, word) and normalise(word) == word, word
    example = re.search(r'`"(  Ábaco[^"]*)"` and `"([a-z ]+)"` are the same passphrase',
                        _section("4. Receipt passphrase"))
    assert example
    assert normalise(example.group(1).replace("\\t", "\t")) == example.group(2)


# --------------------------------------------------------------------------- error codes


def test_protocol_doc_error_codes_are_the_servers() -> None:
    """Every code in the doc's tables can be sent, and every code the server sends is there."""
    documented, sent = doc_codes(), server_codes()
    assert documented - sent == set(), "documented codes the server never sends"
    assert sent - documented == set(), "codes the server sends that docs/protocol.md omits"


def _sealed(app: Flask, kind: str = "report") -> bytes:
    key: UnitPublicKey = app.extensions["whistle"].unit_key
    return seal_envelope(Envelope(kind=kind, category="corruption" if kind == "report" else "",
                                  body="hola"), key)


def _post(client: FlaskClient, path: str, parts: dict[str, object], token: str | None = None,
          headers: dict[str, str] | None = None) -> TestResponse:
    token = csrf_token(client) if token is None else token
    return client.post(path, data=parts, content_type="multipart/form-data",
                       headers={"X-CSRFToken": token} | (headers or {}))


def _file(data: bytes) -> tuple[io.BytesIO, str, str]:
    return io.BytesIO(data), "part.bin", "application/octet-stream"


def _keys() -> dict[str, str]:
    """The key fields of a report, for keys nobody will log in with."""
    return random_browser_keys().key_fields()


def _report_answers(app: Flask, client: FlaskClient) -> dict[tuple[str, int, str], TestResponse]:
    """Provoke the rows of ``POST /api/v1/reports`` that need no special server."""
    sealed_max = int(doc_limits()["sealed_envelope_max_bytes"])
    junk = b"\0" * 1024 + b"\0" * SEAL_OVERHEAD
    taken = _keys()
    cases: dict[tuple[str, int, str], Callable[[], TestResponse]] = {
        ("", 201, ""): lambda: post_api(client, api_payload(app.extensions["whistle"].unit_key,
                                                             "hola", [("a.txt", "text/plain", b"x")])),
        ("", 400, "missing_report"): lambda: _post(client, "/api/v1/reports", {"lang": "es"}),
        ("text", 400, "bad_report"): lambda: _post(client, "/api/v1/reports", {"report": "abc"}),
        ("length", 400, "bad_report"): lambda: _post(client, "/api/v1/reports",
                                                     {"report": _file(b"\0" * 1000)}),
        ("", 400, "bad_attachment"): lambda: _post(client, "/api/v1/reports", {
            "report": _file(junk), "attachment": _file(b"\0" * 30)}),
        ("", 400, "bad_request"): lambda: _post(client, "/api/v1/reports", {
            "report": _file(junk), "other": _file(b"\0" * 30)}),
        ("", 400, "csrf"): lambda: _post(client, "/api/v1/reports", {"report": _file(junk)},
                                         token=""),
        ("", 400, "pow_malformed"): lambda: _post(client, "/api/v1/reports", {"report": _file(junk)},
                                                  headers={"X-Whistle-PoW": "not.a.proof"}),
        ("exact", 201, ""): lambda: _post(client, "/api/v1/reports",
                                          {"report": _file(b"\0" * sealed_max)} | taken),
        ("taken", 409, "passphrase_taken"): lambda: _post(client, "/api/v1/reports",
                                                          {"report": _file(junk)} | taken),
        ("", 400, "missing_keys"): lambda: _post(client, "/api/v1/reports", {
            "report": _file(junk), "login_hash": taken["login_hash"]}),
        ("", 400, "bad_keys"): lambda: _post(client, "/api/v1/reports", {
            "report": _file(junk), **_keys(), "source_public_key": "A" * 43 + "="}),
        ("over", 413, "too_large"): lambda: _post(client, "/api/v1/reports",
                                                  {"report": _file(b"\0" * (sealed_max + 1024))}),
        ("parts", 413, "too_large"): lambda: _post(client, "/api/v1/reports", {
            "report": _file(junk),
            **{f"f{n}": "x" for n in range(int(doc_limits()["form_max_parts"]) + 1)}}),
    }
    return {key: make() for key, make in cases.items()}


def _row(endpoint: str, status: int, code: str) -> tuple[str, int, str, str]:
    rows = [r for r in doc_answers() if r[:3] == (endpoint, status, code)]
    assert rows, f"docs/protocol.md 5.5 has no row {endpoint} {status} {code or '—'}"
    return rows[0]


def _check(resp: TestResponse, endpoint: str, status: int, code: str) -> None:
    """The answer has the documented status, code, and (a success) the documented JSON keys."""
    row = _row(endpoint, status, code)
    body = resp.get_json()
    assert resp.status_code == status, (endpoint, status, code, body)
    assert isinstance(body, dict)
    if code:
        assert body["error"] == code and set(body) == {"error", "message"}
    else:
        example = re.search(r"`(\{.*?\})`", row[3])
        assert example, f"the {endpoint} {status} row shows no JSON example"
        assert set(body) == set(json.loads(example.group(1)))


def test_protocol_doc_report_answers_match(app: Flask, client: FlaskClient) -> None:
    """Each documented answer of ``POST /api/v1/reports`` that is cheap to provoke, provoked:
    status, ``error`` code, and the keys of the 201 body (no ``receipt_url``: there is none)."""
    for (_label, status, code), resp in _report_answers(app, client).items():
        _check(resp, "POST /api/v1/reports", status, code)


def test_protocol_doc_pow_and_unit_key_answers_match(client: FlaskClient) -> None:
    _check(client.get("/api/v1/unit-key"), "GET /api/v1/unit-key", 200, "")
    _check(client.get("/api/v1/pow?purpose=submit"), "GET /api/v1/pow", 200, "")
    _check(client.get("/api/v1/pow?purpose=nope"), "GET /api/v1/pow", 400, "bad_purpose")
    _check(client.get("/api/v1/no-such-thing"), "any `/api/` path", 404, "http_404")
    _check(client.post("/api/v1/unit-key"), "any `/api/` path", 405, "http_405")


def test_protocol_doc_message_answers_match(app: Flask, client: FlaskClient) -> None:
    """``POST /api/v1/messages``: 401 before login; after it, with the token of the new session
    (read from /case, 5.1), each documented refusal and the 201 body."""
    junk = b"\0" * (1024 + SEAL_OVERHEAD)
    endpoint = "POST /api/v1/messages"
    _check(_post(client, "/api/v1/messages", {"message": _file(junk)}), endpoint, 401, "session")
    phrase = file_report(client)
    old_token = csrf_token(client, "/followup")
    assert source_login(client, phrase).status_code == 302
    token = csrf_from_html(client.get("/case").get_data(as_text=True))
    # Login replaced the session: the token from before it is void (5.1).
    _check(_post(client, "/api/v1/messages", {"message": _file(_sealed(app, "message"))},
                 token=old_token), endpoint, 400, "csrf")
    _check(_post(client, "/api/v1/messages", {"lang": "es"}, token=token),
           endpoint, 400, "missing_message")
    _check(_post(client, "/api/v1/messages", {"message": "abc"}, token=token),
           endpoint, 400, "bad_message")
    _check(_post(client, "/api/v1/messages", {"message": _file(junk), "report": _file(junk)},
                 token=token), endpoint, 400, "bad_request")
    _check(_post(client, "/api/v1/messages", {"message": _file(junk), "attachment": _file(b"\0")},
                 token=token), endpoint, 400, "bad_attachment")
    _check(_post(client, "/api/v1/messages", {"message": _file(_sealed(app, "message"))},
                 token=token), endpoint, 400, "bad_seq")
    _check(_post(client, "/api/v1/messages", {"message": _file(_sealed(app, "message")),
                                              "seq": "3"}, token=token), endpoint, 409, "stale_seq")
    _check(_post(client, "/api/v1/messages", {"message": _file(_sealed(app, "message")),
                                              "seq": "2"}, token=token), endpoint, 201, "")


def test_protocol_doc_login_answers_match(app: Flask, client: FlaskClient) -> None:
    """``POST /api/v1/login``: each documented answer, provoked (the 429 after the free
    failures: the backoff of 5.4)."""
    endpoint = "POST /api/v1/login"
    keys = browser_derive(client)
    assert post_api(client, api_payload(app.extensions["whistle"].unit_key, "hola", [],
                                        keys=keys)).status_code == 201
    _check(browser_login(client, keys.login_key, token=""), endpoint, 400, "csrf")
    _check(browser_login(client, "AAAA"), endpoint, 400, "bad_login_key")
    free = int(doc_limits()["backoff_free_failures"])
    for _ in range(free + 1):
        _check(browser_login(client, bytes(range(32))), endpoint, 400, "wrong_passphrase")
    _check(browser_login(client, keys.login_key), endpoint, 429, "http_429")
    other = app.test_client()
    _check(browser_login(other, keys.login_key), endpoint, 200, "")


def test_protocol_doc_params_and_wordlist_answers_match(client: FlaskClient) -> None:
    _check(client.get("/api/v1/params"), "GET /api/v1/params", 200, "")
    _check(client.get("/api/v1/wordlist/xx"), "GET /api/v1/wordlist/<lang>", 404, "http_404")
    _row("GET /api/v1/wordlist/<lang>", 200, "")
    example = re.search(r"```json\n\s*(\{\"v\": 2,.*?)```", _section("5.2 Filing"), re.DOTALL)
    assert example, "5.2 shows no example of /api/v1/params"
    served = client.get("/api/v1/params").get_json()
    # The example's shape is the answer's: the same keys at every level.
    shape = re.sub(r"B64\(16\)|HEX|T\b|M_BYTES", "0", example.group(1))
    documented = json.loads(shape)
    assert set(documented) == set(served)
    assert set(documented["argon2"]) == set(served["argon2"])
    for lang in ("es", "en"):
        assert set(documented["passphrase"][lang]) == set(served["passphrase"][lang])
        assert documented["passphrase"][lang]["words"] == word_count(lang)
        assert documented["passphrase"][lang]["list_size"] == len(wordlist(lang))
        assert documented["passphrase"][lang]["url"] == served["passphrase"][lang]["url"]


def test_protocol_doc_quota_and_length_answers_match(environ: dict[str, str], tmp_path: Path) -> None:
    """411, 413 on the declared length, 429 ``quota_exceeded`` and 429 ``http_429``."""
    app = make_app(environ | {"WHISTLE_MAX_UPLOAD_MB": "1", "WHISTLE_QUOTA_SESSION_MB_PER_HOUR": "1"},
                   tmp_path, submit_session="2 per hour")
    client = app.test_client()
    endpoint = "POST /api/v1/reports"
    stream = b"\0" * 600_000  # a plausible stream length: (n - 24) mod 65553 >= 17

    def payload() -> dict[str, object]:
        return {"report": _file(_sealed(app)), "attachment": _file(stream)} | _keys()

    _check(_post(client, "/api/v1/reports", payload(), headers={"Transfer-Encoding": "chunked"}),
           endpoint, 411, "length_required")
    _check(_post(client, "/api/v1/reports", {"report": _file(b"\0" * (MIB + 1))}),
           endpoint, 413, "too_large")
    _check(_post(client, "/api/v1/reports", payload()), endpoint, 201, "")
    resp = _post(client, "/api/v1/reports", payload())
    _check(resp, endpoint, 429, "quota_exceeded")
    assert int(resp.headers["Retry-After"]) <= 3600
    _check(post_api(client, api_payload(app.extensions["whistle"].unit_key, "hola", [])),
           endpoint, 201, "")
    resp = post_api(client, api_payload(app.extensions["whistle"].unit_key, "hola", []))
    _check(resp, endpoint, 429, "http_429")
    assert "Retry-After" in resp.headers


# --------------------------------------------------------------------------- the backoff, the forms


def test_protocol_doc_backoff_first_wait_after_free_failures(
    environ: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5.4 as a client sees it: ``backoff_free_failures`` + 1 wrong passphrases are each
    answered 400; then a login (even the right one) gets 429 with the documented first wait,
    and after waiting ``Retry-After`` seconds it goes through."""
    import time

    clock = FrozenClock()
    clock.now += 0.5  # mid-second: the wait must still last its whole length
    monkeypatch.setattr(time, "time", clock)
    documented = doc_limits()
    free = int(documented["backoff_free_failures"])
    first_wait = [int(w) for w in documented["backoff_waits_seconds"].split(",")][free]
    app = make_app(environ, tmp_path)
    client = app.test_client()
    phrase = file_report(client)
    for _ in range(free + 1):
        assert source_login(client, "palabra " * 7).status_code == 400
    clock.now += first_wait - 0.01
    refused = source_login(client, phrase)
    assert refused.status_code == 429
    retry = int(refused.headers["Retry-After"])
    assert retry >= 1
    clock.now += retry
    assert source_login(client, phrase).status_code == 302


def test_protocol_doc_body_limit_counts_sealed_code_points(client: FlaskClient) -> None:
    """Section 2: 100,000 characters are code points after CRLF -> LF and NFC, so a form post
    whose line breaks arrive as CRLF is not refused below the limit (it was: CRLF counted 2)."""
    body = "a\r\n" * (MAX_BODY_CHARS // 2)  # 150,000 as sent, 100,000 as sealed
    assert post_form(client, body, []).status_code == 200
    assert post_form(client, body + "b", []).status_code == 400


def _reports(app: Flask) -> int:
    from sqlalchemy import func, select

    from whistle.server.models import Report

    with app.extensions["whistle"].sessions() as db:
        return int(db.scalar(select(func.count()).select_from(Report)) or 0)


def test_submit_form_envelope_limit_applies_to_file_names(app: Flask, client: FlaskClient) -> None:
    """Section 2, "Size": the JavaScript-off path is held to the same envelope limit as the API;
    file names from part headers could otherwise make an envelope the workstation refuses."""
    before = _reports(app)
    names = [("n" * 200_000 + f"{i}.txt", "text/plain", b"x") for i in range(6)]
    resp = post_form(client, "hola", names)
    assert resp.status_code == 413
    assert "error" in resp.get_data(as_text=True).lower() or resp.mimetype == "text/html"
    assert _reports(app) == before
    assert post_form(client, "hola", names[:1]).status_code == 200
