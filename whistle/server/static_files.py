# SPDX-License-Identifier: AGPL-3.0-or-later
"""Static files: read once at start, served from memory under content-hashed URLs, pre-compressed.

A source on a slow, expensive link (issue 11, item 15) should download libsodium.js once, as few
bytes as possible, and never ask for it again:

- every file under ``whistle/static/`` is read when the app is created, hashed (SHA-256, the first
  16 hex digits are its *version*) and compressed once with gzip and, where the ``brotli`` package
  is installed, brotli; the compressed forms are kept when they are smaller. The files hold no
  secrets, so compression leaks nothing (no BREACH-style secret sits next to attacker input);
- ``url_for('static', filename=...)`` adds ``?v=<version>`` (a ``url_defaults`` hook), so templates
  and the data- attributes that hand URLs to scripts (a Web Worker's ``importScripts``) need no
  change and always name the content they were rendered with;
- a request whose ``v`` is the file's version is answered ``Cache-Control: public,
  max-age=31536000, immutable`` (new content has a new URL); any other request (no ``v``, an old
  one) gets ``no-cache``, so a browser revalidates it with the ETag;
- the body is chosen by ``Accept-Encoding`` (br, then gzip, then the file itself) with ``Vary:
  Accept-Encoding``; each form has its own strong ETag and ``If-None-Match`` answers 304;
- only names found at start are served, from memory: no request reaches the file system, so no
  path (``..``, an absolute path, a symbolic link) can name anything else.

Files changed on disk are served again only after a restart (deployments restart anyway).
Compressing at start takes a fraction of a second: the large vendored files (libsodium.js, which
brotli's best quality needs seconds for) come compressed ahead of time as NAME.br beside them
(``scripts/compress_static.py``; used only when it decompresses to the file, else compressed
here). gunicorn preloads the app, so its workers share the result; it is also remembered per
process by content hash, so the test suite, which builds many apps in one process, compresses
each file once.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, Response, abort, request

try:  # Optional: without it the files are served gzip-compressed only.
    import brotli
except ImportError:  # pragma: no cover - brotli is an install requirement (setup.cfg)
    brotli = None

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
VERSION_CHARS = 16
# A compressed form is kept only when it saves at least this share of the bytes.
MIN_SAVING = 0.05
TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".md": "text/markdown",
    ".txt": "text/plain",
    ".html": "text/html",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
# Files without a suffix in static/ are the vendored licences and checksums: plain text.
DEFAULT_TYPE = "text/plain"
# Formats that are compressed already.
PRECOMPRESSED = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".woff", ".woff2", ".gz", ".br", ".zip"}

# Files this large are compressed with brotli ahead of time, by ``scripts/compress_static.py``,
# into NAME.br beside them (checked in; tests/test_static_files.py checks that each is current):
# brotli's best quality takes about a second per megabyte, too long for every start of every
# process. The app takes NAME.br when it decompresses to the file, and compresses the rest itself.
PREBUILT_MIN = 100_000
PREBUILT_SUFFIX = ".br"

_compressed: dict[tuple[str, str], bytes] = {}
_compressed_lock = threading.Lock()


def _compress(encoding: str, digest: str, data: bytes) -> bytes:
    key = (encoding, digest)
    with _compressed_lock:
        known = _compressed.get(key)
    if known is not None:
        return known
    if encoding == "gzip":
        # mtime=0: the same file gives the same bytes on every start (stable ETags, reproducible).
        out = gzip.compress(data, compresslevel=9, mtime=0)
    else:
        out = brotli.compress(data, quality=11)
    with _compressed_lock:
        _compressed[key] = out
    return out


@dataclass(frozen=True)
class StaticFile:
    """One file under static/ as served: its version and each encoding's body."""

    name: str
    version: str
    mimetype: str
    bodies: dict[str, bytes] = field(repr=False)

    def etag(self, encoding: str) -> str:
        return self.version if encoding == "identity" else f"{self.version}-{encoding}"


def encodings() -> tuple[str, ...]:
    """The encodings this process pre-compresses into, in order of preference."""
    return ("br", "gzip") if brotli is not None else ("gzip",)


def _served(root: Path, path: Path) -> bool:
    rel = path.relative_to(root)
    return not (path.is_symlink() or not path.is_file() or path.suffix == PREBUILT_SUFFIX
                or any(part.startswith(".") for part in rel.parts) or "__pycache__" in rel.parts
                or not path.resolve().is_relative_to(root))


def needs_prebuilt(path: Path, size: int) -> bool:
    return size >= PREBUILT_MIN and path.suffix.lower() not in PRECOMPRESSED


def _take_prebuilt(path: Path, digest: str, data: bytes) -> None:
    """Remember NAME.br as the brotli form of ``data`` if it is exactly that."""
    prebuilt = path.with_name(path.name + PREBUILT_SUFFIX)
    if brotli is None or not prebuilt.is_file():
        return
    packed = prebuilt.read_bytes()
    try:
        if brotli.decompress(packed) != data:
            return
    except brotli.error:
        return
    with _compressed_lock:
        _compressed[("br", digest)] = packed


def build(folder: Path) -> list[Path]:
    """Write NAME.br beside every file that needs one (and is not current); delete a NAME.br
    whose file is gone. Returns the files written or deleted."""
    if brotli is None:
        raise RuntimeError("pip install brotli")
    root = folder.resolve()
    changed = []
    for path in sorted(root.rglob("*")):
        if path.suffix == PREBUILT_SUFFIX and path.is_file():
            if not path.with_name(path.name.removesuffix(PREBUILT_SUFFIX)).is_file():
                path.unlink()
                changed.append(path)
            continue
        if not _served(root, path) or not needs_prebuilt(path, path.stat().st_size):
            continue
        data = path.read_bytes()
        prebuilt = path.with_name(path.name + PREBUILT_SUFFIX)
        try:
            current = prebuilt.is_file() and brotli.decompress(prebuilt.read_bytes()) == data
        except brotli.error:
            current = False
        if not current:
            prebuilt.write_bytes(brotli.compress(data, quality=11))
            changed.append(prebuilt)
    return changed


def load(folder: Path) -> dict[str, StaticFile]:
    """Every regular file under ``folder`` (no hidden files, no symbolic links), by its name
    relative to ``folder`` with forward slashes, as ``url_for('static', filename=...)`` names it.

    Large files come with their brotli form (NAME.br, see PREBUILT_MIN); the rest is compressed
    here, on a thread per core (zlib and brotli release the GIL)."""
    root = folder.resolve()
    read: list[tuple[str, str, str, bytes]] = []
    for path in sorted(root.rglob("*")):
        if not _served(root, path):
            continue
        suffix = path.suffix.lower()
        mimetype = TYPES.get(suffix) or (mimetypes.guess_type(path.name)[0] if suffix else DEFAULT_TYPE)
        data = path.read_bytes()
        if needs_prebuilt(path, len(data)):
            _take_prebuilt(path, hashlib.sha256(data).hexdigest(), data)
        read.append((path.relative_to(root).as_posix(), suffix, mimetype or "application/octet-stream",
                     data))
    jobs = [(encoding, hashlib.sha256(data).hexdigest(), data)
            for _, suffix, _, data in read if suffix not in PRECOMPRESSED and len(data) >= 256
            for encoding in encodings()]
    # The largest first, so that the long jobs start at once.
    jobs.sort(key=lambda job: -len(job[2]))
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        packed = dict(zip([(e, d) for e, d, _ in jobs], pool.map(lambda job: _compress(*job), jobs),
                          strict=True))
    found: dict[str, StaticFile] = {}
    for name, _, mimetype, data in read:
        digest = hashlib.sha256(data).hexdigest()
        bodies = {"identity": data}
        for encoding in encodings():
            body = packed.get((encoding, digest))
            if body is not None and len(body) <= len(data) * (1 - MIN_SAVING):
                bodies[encoding] = body
        found[name] = StaticFile(name=name, version=digest[:VERSION_CHARS], mimetype=mimetype,
                                 bodies=bodies)
    return found


def choose_encoding(available: dict[str, bytes], accept_encoding: str) -> str:
    """The body to send for an ``Accept-Encoding`` header: the acceptable encoding with the highest
    quality, brotli before gzip before the file itself on a tie. A name listed explicitly wins over
    ``*``; when nothing listed is acceptable, the file itself (never a 406 for a static file)."""
    qualities: dict[str, float] = {}
    for part in accept_encoding.split(","):
        name, *params = (piece.strip() for piece in part.split(";"))
        if not name:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        qualities[name.lower()] = quality
    best, best_quality = "identity", 0.0
    for encoding in ("br", "gzip"):
        if encoding not in available:
            continue
        quality = qualities.get(encoding, qualities.get("*", 0.0))
        if quality > best_quality:
            best, best_quality = encoding, quality
    # The file itself is always acceptable; it wins only where the client ranks it higher.
    if qualities.get("identity", 0.0) > best_quality:
        return "identity"
    return best


def init_app(app: Flask, folder: Path) -> dict[str, StaticFile]:
    """Serve ``folder`` at ``/static/<name>`` as the endpoint ``static`` (the app is created with
    ``static_folder=None``) and version every ``url_for('static', ...)``."""
    files = load(folder)
    app.extensions["whistle_static"] = files

    def serve(filename: str) -> Response:
        asset = files.get(filename)
        if asset is None:
            abort(404)
        encoding = choose_encoding(asset.bodies, request.headers.get("Accept-Encoding", ""))
        response = Response(asset.bodies[encoding], mimetype=asset.mimetype)
        if encoding != "identity":
            response.headers["Content-Encoding"] = encoding
        if len(asset.bodies) > 1:
            response.vary.add("Accept-Encoding")
        response.set_etag(asset.etag(encoding))
        versioned = request.args.get("v") == asset.version
        response.headers["Cache-Control"] = IMMUTABLE if versioned else REVALIDATE
        # 304 on a matching If-None-Match (HEAD too); no Range support: the files are small.
        response.make_conditional(request)
        return response

    app.add_url_rule("/static/<path:filename>", endpoint="static", view_func=serve,
                     methods=["GET"])

    @app.url_defaults
    def _version(endpoint: str, values: dict[str, object]) -> None:
        if endpoint == "static" and "v" not in values:
            asset = files.get(str(values.get("filename", "")))
            if asset is not None:
                values["v"] = asset.version

    return files
