# SPDX-License-Identifier: AGPL-3.0-or-later
"""Crash safety: SIGKILL the production server mid-upload, over and over, then audit what it kept.

Each round starts gunicorn (deploy/gunicorn.conf.py, one worker) on loopback, sends several
concurrent reports — browser-sealed through the JSON API and plaintext through the JavaScript-off
form, with attachments of a few hundred KB to a few MB written slowly in small pieces — and
SIGKILLs the server's whole process group after a random short delay, so that the kill lands
before, during and after uploads, and sometimes between the commit and the response. A
submission that got its passphrase back is a receipt.

At the end the database must be intact (SQLite integrity and foreign-key checks), hold no orphan
or half-written rows, and hold every receipted report exactly as sent; the upload spool must be
empty after every restart.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import secrets
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text
from support import (
    Workstation,
    api_payload,
    free_port,
    multipart,
    random_browser_keys,
    report_folders,
    start_gunicorn,
    wait_until_serving,
)

from whistle.server.config import Config
from whistle.server.db import make_engine, make_sessionmaker
from whistle.server.export import export_bundle
from whistle.workstation.decrypt import BundleDecryptError, decrypt_bundle

# About 2-3 s a round, most of it gunicorn starting. WHISTLE_TEST_CRASH_ROUNDS=300 for a soak.
ROUNDS = int(os.environ.get("WHISTLE_TEST_CRASH_ROUNDS", "30"))
UPLOADS_PER_ROUND = 4
# Seconds from starting a round's uploads to the kill.
KILL_AFTER = (0.05, 0.7)
# How long one upload takes to send, spread evenly over its pieces.
SEND_SECONDS = (0.05, 0.6)
PIECE = 32 * 1024
ATTACHMENT_SIZES = (150 * 1024, 3 * 1024 * 1024)
_RNG = random.Random(int.from_bytes(os.urandom(8), "big"))  # noqa: S311 - timing, not keys
# Random bytes shared by all attachments; each attachment starts with its own tag, so no two match.
_POOL = os.urandom(ATTACHMENT_SIZES[1])


@dataclass
class Attempt:
    """One submission: what was sent and what came back."""

    tag: str
    via: str  # "api" or "form"
    body: str
    # (name, offset into _POOL, size): the bytes are rebuilt by content() rather than kept.
    files: list[tuple[str, int, int]]
    request_body: bytes = b""
    length: int = 0
    content_type: str = ""
    sent: int = 0
    status: int | None = None
    passphrase: str | None = None
    error: str | None = None
    finished_sending: bool = False

    @property
    def receipt(self) -> bool:
        return self.passphrase is not None

    def content(self, index: int) -> bytes:
        _name, start, size = self.files[index]
        return (self.tag + f"-{index}:").encode() + _POOL[start:start + size]


@dataclass
class Session:
    """The cookie and CSRF token of one visitor, valid across restarts (signed by the instance)."""

    cookie: str
    token: str


@dataclass
class Tally:
    attempts: list[Attempt] = field(default_factory=list)
    kills_mid_upload: int = 0


def _new_attempt(via: str, unit_key, session: Session) -> Attempt:  # type: ignore[no-untyped-def]
    tag = "crash-" + secrets.token_hex(8)
    files = []
    for index in range(_RNG.choice((1, 1, 1, 2))):
        size = _RNG.randint(*ATTACHMENT_SIZES)
        start = _RNG.randrange(0, len(_POOL) - size + 1)
        files.append((f"{tag}-{index}.bin", start, size))
    body = f"Informe de prueba {tag}: {secrets.token_hex(_RNG.randint(8, 400))}"
    attempt = Attempt(tag=tag, via=via, body=body, files=files)
    contents = [(name, attempt.content(i)) for i, (name, _, _) in enumerate(files)]
    if via == "api":
        # The browser drew and derived (keys nobody logs in with here); its receipt is the 201.
        keys = random_browser_keys()
        payload = api_payload(unit_key, body, [(n, "application/octet-stream", d) for n, d in contents],
                              keys=keys)
        fields: list[tuple[str, str | tuple[str, str, bytes]]] = [
            ("report", ("report.bin", "application/octet-stream", payload["report"][0].getvalue()))]  # type: ignore[index]
        fields += [("attachment", ("attachment.bin", "application/octet-stream", f[0].getvalue()))
                   for f in payload["attachment"]]  # type: ignore[union-attr]
        fields += list(keys.key_fields().items())
    else:
        # A fresh one-time form token, as each showing of the form carries (receipt.py).
        fields = [("csrf_token", session.token), ("once", secrets.token_urlsafe(32)),
                  ("category", "irregularities"), ("body", body)]
        fields += [("attachments", (name, "application/octet-stream", data)) for name, data in contents]
    attempt.request_body, attempt.content_type = multipart(fields)
    attempt.length = len(attempt.request_body)
    return attempt


def _upload(port: int, attempt: Attempt, session: Session) -> None:
    """Send one submission slowly, in pieces; record the passphrase if the server answers."""
    path = "/api/v1/reports" if attempt.via == "api" else "/submit"
    pieces = [attempt.request_body[i:i + PIECE] for i in range(0, len(attempt.request_body), PIECE)]
    pause = _RNG.uniform(*SEND_SECONDS) / len(pieces)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", attempt.content_type)
        conn.putheader("Content-Length", str(len(attempt.request_body)))
        conn.putheader("Cookie", session.cookie)
        conn.putheader("X-CSRFToken", session.token)
        conn.endheaders()
        for piece in pieces:
            conn.send(piece)
            attempt.sent += len(piece)
            time.sleep(pause)
        attempt.finished_sending = True
        resp = conn.getresponse()
        answer = resp.read().decode("utf-8")
        if attempt.via == "form" and resp.status == 303:
            # Post/redirect/get: the receipt is on the page the answer points to, read with the
            # cookie that answer set. A server killed before that gives no receipt (no status).
            cookie = resp.getheader("Set-Cookie", "").split(";", 1)[0] or session.cookie
            resp, answer = _get(port, resp.getheader("Location", "/receipt"), cookie)
        attempt.status = resp.status
        if attempt.via == "api" and resp.status == 201:
            # No passphrase comes back on the JavaScript path (the browser drew it): the 201
            # itself is the receipt the page shows the passphrase on.
            attempt.passphrase = "shown by the page" if json.loads(answer)["ok"] else None
        elif attempt.via == "form" and resp.status == 200:
            match = re.search(r'<code id="receipt-passphrase">([^<]+)</code>', answer)
            attempt.passphrase = match.group(1) if match else None
        if attempt.passphrase is None:
            attempt.error = f"HTTP {resp.status}: {answer[:300]}"
    except (OSError, http.client.HTTPException) as exc:
        # The server died under us: no receipt. (Refused, reset, broken pipe, closed early.)
        attempt.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
        attempt.request_body = b""  # sent or not, it is not needed any more


def _get(port: int, path: str, cookie: str) -> tuple[http.client.HTTPResponse, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": cookie})
        resp = conn.getresponse()
        return resp, resp.read().decode("utf-8")
    finally:
        conn.close()


def _visitor(port: int) -> Session:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/submit")
        resp = conn.getresponse()
        html = resp.read().decode("utf-8")
        cookie = resp.getheader("Set-Cookie", "").split(";", 1)[0]
    finally:
        conn.close()
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert cookie and match
    return Session(cookie=cookie, token=match.group(1))


class Server:
    """gunicorn in a process group of its own; SIGKILL reaches the master and the worker alike."""

    def __init__(self, environ: dict[str, str], tmp_path: Path) -> None:
        self.environ = environ
        self.tmp_dir = tmp_path / "server-tmp"
        self.tmp_dir.mkdir()
        self.log = tmp_path / "gunicorn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        self.port = free_port()
        with self.log.open("ab") as log:
            self.proc = start_gunicorn(self.environ, bind=f"127.0.0.1:{self.port}",
                                       tmp_dir=self.tmp_dir, stdout=log, stderr=log,
                                       extra_env={"WHISTLE_WORKERS": "1", "WHISTLE_THREADS": "8"})
        try:
            wait_until_serving(f"http://127.0.0.1:{self.port}", self.proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.log.read_text()}") from None

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def _named_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.slow
def test_sigkill_mid_upload_loses_nothing_receipted_and_leaves_no_debris(
        environ: dict[str, str], config: Config, workstation: Workstation, tmp_path: Path) -> None:
    unit_key = workstation.secret_key.public_key
    server = Server(environ, tmp_path)
    tally = Tally()
    try:
        server.start()
        session = _visitor(server.port)
        for _round in range(ROUNDS):
            # Spool files are anonymous (O_TMPFILE): a killed server must leave none behind.
            assert _named_files(config.spool_dir) == [], "named files left in the spool"
            attempts = [_new_attempt(("api", "form")[i % 2], unit_key, session)
                        for i in range(UPLOADS_PER_ROUND)]
            threads = [threading.Thread(target=_upload, args=(server.port, a, session), daemon=True)
                       for a in attempts]
            for thread in threads:
                thread.start()
            time.sleep(_RNG.uniform(*KILL_AFTER))
            server.kill()
            for thread in threads:
                thread.join(timeout=60)
                assert not thread.is_alive(), "an upload hung after the kill"
            tally.attempts += attempts
            tally.kills_mid_upload += sum(0 < a.sent < a.length for a in attempts)
            server.start()
        assert _named_files(config.spool_dir) == [], "named files left in the spool"
        # The server still works after all that.
        final = _new_attempt("form", unit_key, session)
        _upload(server.port, final, session)
        assert final.receipt, final.error
        tally.attempts.append(final)
    finally:
        server.stop()
    assert _named_files(config.spool_dir) == []
    assert _named_files(server.tmp_dir) == [], "the server left temporary files"

    receipts = [a for a in tally.attempts if a.receipt]
    # The server answered only with receipts, or died: never an error of its own.
    unexpected = [a.error for a in tally.attempts if a.status is not None and not a.receipt]
    assert unexpected == []
    # The test tested something: kills landed mid-upload, and some uploads finished first.
    assert tally.kills_mid_upload >= 3, tally.kills_mid_upload
    assert len(receipts) >= 3
    assert len(receipts) < len(tally.attempts)

    if config.database_url.startswith("sqlite"):
        _check_sqlite_file(config)
    _check_no_orphans(config)

    # Export everything and decrypt it as the unit would.
    engine = make_engine(config.database_url)
    bundle = tmp_path / "bundle.zip"
    try:
        export_bundle(make_sessionmaker(engine), bundle, unit_fingerprint=unit_key.fingerprint(),
                      include_all=True)
        with engine.connect() as conn:
            stored_reports = conn.execute(text("SELECT count(*) FROM reports")).scalar_one()
    finally:
        engine.dispose()
    out = tmp_path / "decrypted"
    try:
        decrypt_bundle(bundle, workstation.secret_key, out)
    except BundleDecryptError as exc:  # e.g. "envelope lists 2 attachments, bundle holds 0"
        pytest.fail(f"a stored report is incomplete or does not decrypt: {exc}")
    by_tag = {a.tag: a for a in tally.attempts}
    found: dict[str, Path] = {}
    for folder in report_folders(out):
        report = (folder / "report.txt").read_text(encoding="utf-8")
        tags = set(re.findall(r"crash-[0-9a-f]{16}", report))
        assert len(tags) == 1, report[:500]
        tag = tags.pop()
        assert tag not in found, f"{tag} stored twice"
        found[tag] = folder
        attempt = by_tag[tag]
        assert report.endswith("\n\n" + attempt.body + "\n"), f"{tag}: text differs"
        stored_files = sorted((folder / "attachments").iterdir())
        assert [p.name for p in stored_files] == [name for name, _, _ in attempt.files]
        for index, path in enumerate(stored_files):
            assert path.read_bytes() == attempt.content(index), f"{tag}: {path.name} differs"
    assert stored_reports == len(found)
    # Every receipted report is there, whole (checked above).
    missing = [a.tag for a in receipts if a.tag not in found]
    assert missing == [], f"receipted but not stored: {missing}"
    # Reports may outnumber receipts, never the reverse: the report is committed before the
    # response is written, so a kill between the two (or while the response is in flight) leaves
    # a complete, decryptable report whose source never saw the passphrase. It cannot be reached
    # by anyone (the passphrase was shown to nobody) and the unit still reads it. What must never
    # exist is a partial one, which the checks above rule out. Such a report was always sent in
    # full by the client.
    for tag in set(found) - {a.tag for a in receipts}:
        assert by_tag[tag].finished_sending, f"{tag} stored although not sent in full"
    # Shown with -s: how the kills fell this time.
    print(f"\ncrash test: {ROUNDS} kills, {len(tally.attempts)} submissions, "
          f"{tally.kills_mid_upload} cut mid-upload, {len(receipts)} receipts, "
          f"{len(found)} stored ({len(found) - len(receipts)} without receipt)")


def _check_sqlite_file(config: Config) -> None:
    path = config.database_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


ORPHAN_QUERIES = {
    "blob referenced by nothing": """
        SELECT b.id FROM blobs b
        WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.envelope_blob_id = b.id)
          AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.blob_id = b.id)""",
    "chunk without its blob": """
        SELECT c.blob_id FROM blob_chunks c
        WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.id = c.blob_id)""",
    "item without its report": """
        SELECT i.id FROM items i WHERE NOT EXISTS (SELECT 1 FROM reports r WHERE r.id = i.report_id)""",
    "item without its envelope blob": """
        SELECT i.id FROM items i WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.id = i.envelope_blob_id)""",
    "attachment without its item": """
        SELECT a.id FROM attachments a WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = a.item_id)""",
    "attachment without its blob": """
        SELECT a.id FROM attachments a WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.id = a.blob_id)""",
    "report without its first item": """
        SELECT r.id FROM reports r
        WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.report_id = r.id AND i.seq = 1
                          AND i.kind = 'report')""",
    "blob whose size is not the sum of its chunks": """
        SELECT b.id FROM blobs b
        WHERE b.size != (SELECT coalesce(sum(length(c.data)), -1) FROM blob_chunks c
                         WHERE c.blob_id = b.id)""",
    "blob with a gap in its chunks": """
        SELECT c.blob_id FROM blob_chunks c GROUP BY c.blob_id
        HAVING min(c.seq) != 0 OR max(c.seq) != count(*) - 1""",
}


def _check_no_orphans(config: Config) -> None:
    engine = make_engine(config.database_url)
    try:
        with engine.connect() as conn:
            problems = {name: rows for name, query in ORPHAN_QUERIES.items()
                        if (rows := conn.execute(text(query)).fetchall())}
    finally:
        engine.dispose()
    assert problems == {}
