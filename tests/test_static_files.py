# SPDX-License-Identifier: AGPL-3.0-or-later
"""Static files (whistle/server/static_files.py): content-hashed URLs, immutable caching only for
the right hash, pre-compressed bodies chosen by Accept-Encoding, ETags and 304s, nothing outside
static/ ever served; and which pages load which files (issue 11, item 15).

(tests/test_static.py is the static *analysis* of the code: ruff, mypy, bandit, pip-audit.)
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from pathlib import Path

import brotli
import pytest
from flask import Flask, url_for
from flask.testing import FlaskClient
from support import file_report

from whistle.server import static_files
from whistle.server.static_files import IMMUTABLE, choose_encoding

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "whistle" / "static"
# The largest script (a libsodium.js build, whichever is vendored): the one compression matters for.
LIBSODIUM = max(STATIC.rglob("*.js"), key=lambda p: p.stat().st_size).relative_to(STATIC).as_posix()
STATIC_URL = re.compile(r'(?:src|href)="(/static/[^"]+)"')
ANY_STATIC = re.compile(r'"(/static/[^"]+)"')


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _url(app: Flask, filename: str) -> str:
    with app.test_request_context():
        return url_for("static", filename=filename)


def _tiny_app(folder: Path) -> Flask:
    app = Flask(__name__, static_folder=None)
    static_files.init_app(app, folder)
    return app


# --- Content-hashed URLs ---------------------------------------------------------------------


def test_static_url_carries_the_content_hash(app: Flask) -> None:
    for name in ("css/whistle.css", "js/submit.js", LIBSODIUM):
        data = (STATIC / name).read_bytes()
        assert _url(app, name) == f"/static/{name}?v={_version(data)}"


def test_static_hash_changes_when_the_content_changes(tmp_path: Path) -> None:
    (tmp_path / "js").mkdir()
    script = tmp_path / "js" / "a.js"
    script.write_text("var a = 1;\n" * 100)
    before = _url(_tiny_app(tmp_path), "js/a.js")
    script.write_text("var a = 2;\n" * 100)
    app = _tiny_app(tmp_path)
    after = _url(app, "js/a.js")
    assert before != after and after.endswith("?v=" + _version(script.read_bytes()))
    client = app.test_client()
    assert client.get(after).headers["Cache-Control"] == IMMUTABLE
    assert client.get(before).headers["Cache-Control"] == "no-cache"  # the old URL: revalidate
    assert client.get(before).data == script.read_bytes()


def test_static_every_page_names_static_files_by_hash(app: Flask, client: FlaskClient) -> None:
    """Every static URL a page carries (in src, href or a data- attribute for a script) is
    versioned and answered immutable: templates keep calling url_for('static', ...)."""
    phrase = file_report(client)
    pages = ["/", "/submit", "/followup", "/no-such-page", "/investigator/login"]
    seen = set()
    for path in pages:
        html = client.get(path).get_data(as_text=True)
        for url in ANY_STATIC.findall(html):
            url = url.replace("&amp;", "&")
            assert re.fullmatch(r"/static/[\w./-]+\?v=[0-9a-f]{16}", url), (path, url)
            seen.add(url)
    # The case page, after a login with the receipt.
    resp = client.post("/followup", data={"csrf_token": _csrf(client), "passphrase": phrase},
                       follow_redirects=True)
    seen |= set(ANY_STATIC.findall(resp.get_data(as_text=True)))
    assert any("whistle.css" in url for url in seen)
    for url in seen:
        resp = client.get(url, headers={"Accept-Encoding": "gzip, deflate, br"})
        assert resp.status_code == 200, url
        assert resp.headers["Cache-Control"] == IMMUTABLE, url


def _csrf(client: FlaskClient) -> str:
    html = client.get("/followup").get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


# --- Caching headers -------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?v=0000000000000000", "?v=", "?w=1"])
def test_static_immutable_only_with_the_right_hash(app: Flask, client: FlaskClient, query: str) -> None:
    url = _url(app, "css/whistle.css")
    assert client.get(url).headers["Cache-Control"] == IMMUTABLE
    resp = client.get("/static/css/whistle.css" + query)
    assert resp.status_code == 200
    assert resp.data == (STATIC / "css/whistle.css").read_bytes()
    assert resp.headers["Cache-Control"] == "no-cache"
    assert "immutable" not in resp.headers["Cache-Control"]


def test_static_keeps_the_security_headers(app: Flask, client: FlaskClient) -> None:
    resp = client.get(_url(app, "js/submit.js"))
    assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert "Pragma" not in resp.headers and "Set-Cookie" not in resp.headers


def test_static_missing_file_is_a_404_never_cached(client: FlaskClient) -> None:
    resp = client.get("/static/js/no-such-file.js?v=0123456789abcdef")
    assert resp.status_code == 404
    assert resp.headers["Cache-Control"] == "no-store"


# --- Pre-compressed bodies -------------------------------------------------------------------


def test_static_brotli_and_gzip_bodies_decompress_to_the_file(app: Flask, client: FlaskClient) -> None:
    data = (STATIC / LIBSODIUM).read_bytes()
    url = _url(app, LIBSODIUM)
    br = client.get(url, headers={"Accept-Encoding": "gzip, deflate, br, zstd"})
    assert br.headers["Content-Encoding"] == "br"
    assert brotli.decompress(br.data) == data
    assert int(br.headers["Content-Length"]) == len(br.data) < len(data) * 0.3
    gz = client.get(url, headers={"Accept-Encoding": "gzip, deflate"})
    assert gz.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(gz.data) == data
    plain = client.get(url, headers={"Accept-Encoding": ""})
    assert "Content-Encoding" not in plain.headers and plain.data == data
    etags = {br.headers["ETag"], gz.headers["ETag"], plain.headers["ETag"]}
    assert len(etags) == 3  # one strong ETag per representation
    for resp in (br, gz, plain):
        assert resp.headers["Vary"] == "Accept-Encoding"
        assert resp.headers["Cache-Control"] == IMMUTABLE


def test_static_compressed_once_per_process(app: Flask, client: FlaskClient) -> None:
    """The bodies are made when the app starts, not per request: two answers are the same object."""
    url = _url(app, LIBSODIUM)
    files = app.extensions["whistle_static"]
    assert set(files[LIBSODIUM].bodies) == {"identity", "gzip", "br"}
    first = files[LIBSODIUM].bodies["br"]
    client.get(url, headers={"Accept-Encoding": "br"})
    assert files[LIBSODIUM].bodies["br"] is first


def test_static_large_files_come_compressed_ahead_of_time() -> None:
    """The large files (libsodium.js builds) have a current NAME.br beside them, checked in, so
    that no start spends seconds on brotli; no NAME.br is left without its file."""
    stale = []
    for path in sorted(STATIC.rglob("*")):
        if path.suffix == ".br":
            if not path.with_name(path.name.removesuffix(".br")).is_file():
                stale.append(f"{path.relative_to(STATIC)} has no file")
            continue
        if path.is_file() and static_files.needs_prebuilt(path, path.stat().st_size):
            prebuilt = path.with_name(path.name + ".br")
            if not prebuilt.is_file() or brotli.decompress(prebuilt.read_bytes()) != path.read_bytes():
                stale.append(f"{path.relative_to(STATIC)}.br is missing or stale")
    assert not stale, "run .venv/bin/python scripts/compress_static.py:\n" + "\n".join(stale)


def test_static_prebuilt_brotli_is_used_only_when_it_is_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.js"
    big.write_text("".join(f"var v{i} = {i * 7919 % 10007};\n" for i in range(8000)))
    assert static_files.needs_prebuilt(big, big.stat().st_size)
    assert [p.name for p in static_files.build(tmp_path)] == ["big.js.br"]
    assert static_files.build(tmp_path) == []  # current: nothing to do
    prebuilt = (tmp_path / "big.js.br").read_bytes()
    calls = []
    real = brotli.compress

    def counting(data: bytes, **kwargs: object) -> bytes:
        calls.append(len(data))
        return real(data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(static_files.brotli, "compress", counting)
    monkeypatch.setattr(static_files, "_compressed", {})
    client = _tiny_app(tmp_path).test_client()
    assert calls == []  # taken from big.js.br
    assert client.get("/static/big.js", headers={"Accept-Encoding": "br"}).data == prebuilt
    assert client.get("/static/big.js.br").status_code == 404  # never served as a file of its own
    # A .br that is not the file (edited since) is ignored and the file compressed afresh.
    big.write_text(big.read_text() + "var changed = 1;\n")
    client = _tiny_app(tmp_path).test_client()
    assert calls == [big.stat().st_size]
    assert brotli.decompress(client.get("/static/big.js", headers={"Accept-Encoding": "br"}).data
                             ) == big.read_bytes()


def test_static_start_compresses_nothing_large(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the .br files in place, building an app runs brotli only on the small files."""
    sizes: list[int] = []
    real = brotli.compress
    monkeypatch.setattr(static_files, "_compressed", {})
    monkeypatch.setattr(static_files.brotli, "compress",
                        lambda data, **kw: sizes.append(len(data)) or real(data, **kw))
    static_files.load(STATIC)
    assert sizes and max(sizes) < static_files.PREBUILT_MIN


@pytest.mark.parametrize(("header", "expected"), [
    ("", "identity"),
    ("gzip", "gzip"),
    ("br", "br"),
    ("gzip, br", "br"),
    ("br;q=0, gzip", "gzip"),
    ("br;q=0.5, gzip", "gzip"),
    ("gzip;q=0, br;q=0", "identity"),
    ("*", "br"),
    ("*;q=0.1, br;q=0", "gzip"),
    ("identity", "identity"),
    ("identity;q=1, gzip;q=0.5", "identity"),
    ("deflate, zstd", "identity"),
    ("GZIP; Q=0.8", "gzip"),
    ("gzip;q=nonsense, br;q=0.2", "br"),
])
def test_static_accept_encoding(header: str, expected: str) -> None:
    assert choose_encoding({"identity": b"", "gzip": b"", "br": b""}, header) == expected


def test_static_small_or_incompressible_files_are_sent_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "tiny.css").write_text("a{}")
    (tmp_path / "noise.js").write_bytes(os.urandom(4096))
    client = _tiny_app(tmp_path).test_client()
    for name in ("tiny.css", "noise.js"):
        resp = client.get(f"/static/{name}", headers={"Accept-Encoding": "gzip, br"})
        assert "Content-Encoding" not in resp.headers
        assert "Vary" not in resp.headers


# --- HEAD and conditional requests -----------------------------------------------------------


def test_static_head_sends_the_headers_without_the_body(app: Flask, client: FlaskClient) -> None:
    url = _url(app, "js/submit.js")
    headers = {"Accept-Encoding": "gzip"}
    get = client.get(url, headers=headers)
    head = client.head(url, headers=headers)
    assert head.status_code == 200 and head.data == b""
    for name in ("Content-Length", "Content-Encoding", "ETag", "Cache-Control", "Vary", "Content-Type"):
        assert head.headers[name] == get.headers[name], name


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_static_if_none_match_answers_304(app: Flask, client: FlaskClient, method: str) -> None:
    url = _url(app, "css/whistle.css")
    headers = {"Accept-Encoding": "br"}
    etag = client.get(url, headers=headers).headers["ETag"]
    resp = client.open(url, method=method, headers=headers | {"If-None-Match": etag})
    assert resp.status_code == 304 and resp.data == b""
    assert resp.headers["ETag"] == etag
    assert resp.headers["Cache-Control"] == IMMUTABLE
    assert resp.headers["Vary"] == "Accept-Encoding"
    assert client.open(url, method=method, headers=headers | {"If-None-Match": f'W/{etag}, "x"'}
                       ).status_code == 304
    # Another representation's ETag, or an old version's, gets the body.
    other = client.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
    assert other.status_code == 200 and other.data
    stale = client.get(url, headers=headers | {"If-None-Match": '"0000000000000000-br"'})
    assert stale.status_code == 200


# --- Nothing but static/ ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/static/../server/app.py",
    "/static/%2e%2e/server/app.py",
    "/static/%2E%2E/%2E%2E/setup.cfg",
    "/static/js/../../server/app.py",
    "/static/js/..%2f..%2fserver/app.py",
    "/static/..%5c..%5csetup.cfg",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/js/./submit.js/../../../__init__.py",
    "/static/js/%00submit.js",
    "/static/.hidden",
    "/static/",
])
def test_static_path_traversal_refused(client: FlaskClient, path: str) -> None:
    # Werkzeug answers a doubled slash with a redirect to the merged path: follow it.
    resp = client.get(path, follow_redirects=True)
    assert resp.status_code in (400, 404), path
    body = resp.data
    assert b"SPDX-License-Identifier" not in body and b"root:" not in body and b"[metadata]" not in body


def test_static_serves_only_regular_files_inside_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "ok.css").write_text("body{}")
    (folder / ".secret").write_text("hidden")
    (tmp_path / "outside.txt").write_text("outside")
    (folder / "link.txt").symlink_to(tmp_path / "outside.txt")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "in-linked-dir.txt").write_text("outside")
    (folder / "linked-dir").symlink_to(tmp_path / "elsewhere")
    client = _tiny_app(folder).test_client()
    assert client.get("/static/ok.css").status_code == 200
    for name in (".secret", "link.txt", "../outside.txt", "linked-dir/in-linked-dir.txt"):
        assert client.get(f"/static/{name}").status_code == 404, name


# --- Load nothing unneeded -------------------------------------------------------------------


def _assets(client: FlaskClient, path: str) -> set[str]:
    html = client.get(path).get_data(as_text=True)
    return {url.split("?")[0].removeprefix("/static/") for url in STATIC_URL.findall(html)}


def test_static_source_and_investigator_pages_load_only_their_own_files(
    app: Flask, client: FlaskClient
) -> None:
    file_report(client)
    source_pages = ["/", "/submit", "/followup", "/no-such-page"]
    for path in source_pages:
        assert "css/investigator.css" not in _assets(client, path), path
    # The investigators' pages run no script at all (their work happens on the workstation).
    login = _assets(client, "/investigator/login")
    assert login == {"css/whistle.css", "css/investigator.css"}
    # Pages without a script feature load no script.
    for path in ("/", "/no-such-page"):
        assert not {a for a in _assets(client, path) if a.endswith(".js")}, path
