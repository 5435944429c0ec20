# SPDX-License-Identifier: AGPL-3.0-or-later
"""The casebook folder: one SQLite database and the attachments, stored once by content.

Layout (folder 0700, every file 0600, whatever the umask)::

    CASEBOOK/casebook.sqlite3        reports, messages, replies written, notes, tags, links,
                                     quarantine list, search index (schema.py)
    CASEBOOK/files/ab/abcdef…        each attachment's plaintext once, named by its SHA-256
    CASEBOOK/tmp/                    attachments being decrypted, and the scratch folder of the
                                     tools the casebook runs (mat2): plaintext never leaves CASEBOOK

Everything a person writes here (notes, tags, assignee, links) stays in the casebook: nothing of
it is ever sent anywhere. Replies are the exception by design, sealed to the source and signed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from whistle.core.errors import WhistleError
from whistle.workstation.casebook import deadlines, schema

DB_NAME = "casebook.sqlite3"
FILES = "files"
TMP = "tmp"
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_CASE_ID = re.compile(r"^[0-9a-f]{8,64}\Z")
MAX_TAG = 40
MAX_ASSIGNEE = 80
MAX_NOTE = 20_000
_TAG = re.compile(r"^[^\x00-\x1f\x7f-\x9f,]{1,40}\Z")

Row = sqlite3.Row


class CasebookError(WhistleError):
    """The casebook folder cannot be used (wrong permissions, not a casebook, bad input)."""


def today() -> dt.date:
    """The workstation's date; a function so tests can move it."""
    return dt.date.today()


class Casebook:
    """An open casebook: the database connection and the attachment store."""

    def __init__(self, root: Path, db: sqlite3.Connection) -> None:
        self.root = root
        self.db = db

    # --- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path, *, create: bool = True) -> Casebook:
        """Open the casebook in ``root``, creating it (folder 0700, database 0600) when absent.

        Refuses a folder that others can read or enter: plaintext must be the unit's only.
        """
        root = Path(root)
        fresh = not (root / DB_NAME).exists()
        if fresh and not create:
            raise CasebookError(f"{root} holds no casebook (run 'whistle casebook import' first)")
        old = os.umask(0o077)
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            if root.stat().st_mode & 0o077:
                if not fresh:
                    raise CasebookError(f"{root} can be read by other users: chmod 700 it first")
                os.chmod(root, 0o700)
            for sub in (FILES, TMP):
                (root / sub).mkdir(exist_ok=True, mode=0o700)
            path = root / DB_NAME
            if fresh:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        finally:
            os.umask(old)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA secure_delete = ON")
        # Temporary tables and sort spills stay in memory, never in the system's temp folder.
        db.execute("PRAGMA temp_store = MEMORY")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA busy_timeout = 5000")
        try:
            schema.check_fts5(db)
        except sqlite3.OperationalError as exc:
            db.close()
            raise CasebookError(f"this Python's SQLite has no FTS5 full-text search: {exc}") from exc
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            schema.create(db)
        elif version < schema.SCHEMA_VERSION:
            schema.migrate(db, version)
        elif version != schema.SCHEMA_VERSION:
            db.close()
            raise CasebookError(f"{root} is a casebook of schema {version}; this whistle reads "
                                f"{schema.SCHEMA_VERSION}")
        book = cls(root, db)
        book.fix_modes()
        return book

    @classmethod
    def attach(cls, root: Path) -> Casebook:
        """A further connection to a casebook already opened with :meth:`open` (the web UI opens
        one per request)."""
        db = sqlite3.connect(Path(root) / DB_NAME, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA secure_delete = ON")
        db.execute("PRAGMA temp_store = MEMORY")
        db.execute("PRAGMA busy_timeout = 5000")
        return cls(Path(root), db)

    def close(self) -> None:
        """Close the database (checkpointing the write-ahead log into it)."""
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()

    def __enter__(self) -> Casebook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fix_modes(self) -> None:
        """The database and its write-ahead log and index files 0600 (SQLite creates the last two
        itself, from the database file's mode; said here rather than assumed)."""
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(self.root / name, 0o600)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back when it raises."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- attachments ---------------------------------------------------------------------------

    @property
    def tmp_dir(self) -> Path:
        """Scratch space inside the casebook (attachments being decrypted, tools' temp files)."""
        return self.root / TMP

    def blob_path(self, sha256: str) -> Path:
        """Where the attachment with this SHA-256 is stored."""
        if not _SHA256.match(sha256):
            raise CasebookError("bad attachment digest")
        return self.root / FILES / sha256[:2] / sha256

    def keep_blob(self, tmp: Path, sha256: str) -> bool:
        """Move a decrypted temporary file to its content address; return False when the same
        content was stored already (the temporary file is then removed)."""
        target = self.blob_path(sha256)
        if target.exists():
            tmp.unlink()
            return False
        target.parent.mkdir(exist_ok=True, mode=0o700)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
        return True

    def sweep_tmp(self) -> None:
        """Remove what an interrupted run left in ``tmp/`` (partly decrypted attachments)."""
        for path in self.tmp_dir.glob(".part-*"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # --- reading -------------------------------------------------------------------------------

    def case(self, case_id: str) -> Row | None:
        """One case row, or None."""
        return self.db.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone()  # type: ignore[no-any-return]

    def find_case(self, prefix: str) -> Row:
        """The case whose id is ``prefix`` or starts with it (8 characters at least)."""
        if not _CASE_ID.match(prefix):
            raise CasebookError(f"not a case id: {prefix[:70]!r}")
        rows = self.db.execute("SELECT * FROM cases WHERE id >= ? AND id < ? LIMIT 2",
                               (prefix, prefix + "g")).fetchall()
        exact = [r for r in rows if r["id"] == prefix]
        if exact:
            return exact[0]  # type: ignore[no-any-return]
        if len(rows) != 1:
            raise CasebookError(f"case {prefix} is {'ambiguous' if rows else 'not in this casebook'}")
        return rows[0]  # type: ignore[no-any-return]

    def items(self, case_id: str) -> list[Row]:
        """The source's items of a case (report, then messages), in order."""
        return self.db.execute("SELECT * FROM items WHERE case_id = ? ORDER BY seq, id",
                               (case_id,)).fetchall()

    def attachments(self, case_id: str) -> list[Row]:
        """Every attachment of a case's items, in item and envelope order."""
        return self.db.execute(
            "SELECT a.*, i.seq AS item_seq FROM attachments a JOIN items i ON i.id = a.item_id "
            "WHERE i.case_id = ? ORDER BY i.seq, a.idx", (case_id,)).fetchall()

    def attachment(self, attachment_id: int) -> Row | None:
        """One attachment with its case id."""
        return self.db.execute(  # type: ignore[no-any-return]
            "SELECT a.*, i.case_id FROM attachments a JOIN items i ON i.id = a.item_id "
            "WHERE a.id = ?", (attachment_id,)).fetchone()

    def replies(self, case_id: str) -> list[Row]:
        """Replies written in the casebook for a case, oldest first."""
        return self.db.execute("SELECT * FROM replies WHERE case_id = ? ORDER BY id",
                               (case_id,)).fetchall()

    def notes(self, case_id: str) -> list[Row]:
        """The unit's notes on a case, oldest first."""
        return self.db.execute("SELECT * FROM notes WHERE case_id = ? ORDER BY id",
                               (case_id,)).fetchall()

    def tags(self, case_id: str) -> list[str]:
        """A case's tags, sorted."""
        return [r[0] for r in self.db.execute("SELECT tag FROM tags WHERE case_id = ? ORDER BY tag",
                                              (case_id,))]

    def all_tags(self) -> list[str]:
        """Every tag in use, sorted (for the filters)."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT tag FROM tags ORDER BY tag")]

    def links(self, case_id: str) -> list[str]:
        """The ids of the cases linked to this one."""
        return [r[0] for r in self.db.execute(
            "SELECT b FROM links WHERE a = ? UNION SELECT a FROM links WHERE b = ? ORDER BY 1",
            (case_id, case_id))]

    def quarantine(self) -> list[Row]:
        """Every quarantined part ever listed, newest import first."""
        return self.db.execute("SELECT * FROM quarantine ORDER BY id DESC").fetchall()

    def pending_replies(self) -> list[Row]:
        """Replies sealed here and not yet collected into a replies file."""
        return self.db.execute("SELECT * FROM replies WHERE collected_on IS NULL ORDER BY id").fetchall()

    def count(self, table: str) -> int:
        """How many rows a table holds (tests and the command's summary)."""
        if table not in ("cases", "items", "attachments", "replies", "notes", "quarantine"):
            raise CasebookError(f"unknown table {table}")
        return int(self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 - fixed names  # nosec B608

    # --- the unit's own annotations ------------------------------------------------------------

    def _require(self, case_id: str) -> None:
        if self.case(case_id) is None:
            raise CasebookError(f"case {case_id[:70]} is not in this casebook")

    def add_note(self, case_id: str, body: str) -> None:
        """Add a note to a case (local only)."""
        body = body.replace("\r\n", "\n").strip()
        if not body or len(body) > MAX_NOTE:
            raise CasebookError(f"a note has 1 to {MAX_NOTE} characters")
        self._require(case_id)
        with self.transaction() as db:
            db.execute("INSERT INTO notes (case_id, written_on, body) VALUES (?, ?, ?)",
                       (case_id, today().isoformat(), body))

    def set_tags(self, case_id: str, text: str) -> list[str]:
        """Replace a case's tags with the comma-separated ``text``; return them."""
        tags = sorted({t.strip().casefold() for t in text.split(",") if t.strip()})
        bad = [t for t in tags if not _TAG.match(t)]
        if bad or len(tags) > 30:
            raise CasebookError(f"tags are up to 30 words of 1 to {MAX_TAG} characters, comma-separated")
        self._require(case_id)
        with self.transaction() as db:
            db.execute("DELETE FROM tags WHERE case_id = ?", (case_id,))
            db.executemany("INSERT INTO tags (case_id, tag) VALUES (?, ?)", [(case_id, t) for t in tags])
        return tags

    def set_assignee(self, case_id: str, name: str) -> None:
        """Set (or clear, with an empty name) who handles a case."""
        name = " ".join(name.split())
        if len(name) > MAX_ASSIGNEE or re.search(r"[\x00-\x1f\x7f-\x9f]", name):
            raise CasebookError(f"an assignee is at most {MAX_ASSIGNEE} printable characters")
        self._require(case_id)
        with self.transaction() as db:
            db.execute("UPDATE cases SET assignee = ? WHERE id = ?", (name, case_id))

    def link(self, case_id: str, other: str) -> str:
        """Link two cases (both ways); ``other`` may be an id prefix. Return the other's id."""
        target = self.find_case(other.strip().lower())["id"]
        self._require(case_id)
        if target == case_id:
            raise CasebookError("a case cannot be linked to itself")
        a, b = sorted((case_id, target))
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO links (a, b) VALUES (?, ?)", (a, b))
        return str(target)

    def unlink(self, case_id: str, other: str) -> None:
        """Remove the link between two cases."""
        a, b = sorted((case_id, other))
        with self.transaction() as db:
            db.execute("DELETE FROM links WHERE a = ? AND b = ?", (a, b))

    def mark_seen(self, case_id: str) -> None:
        """The case was opened: its items are no longer new."""
        with self.transaction() as db:
            db.execute("UPDATE items SET seen = 1 WHERE case_id = ? AND seen = 0", (case_id,))
            db.execute("UPDATE cases SET unread = 0 WHERE id = ? AND unread != 0", (case_id,))

    # --- replies -------------------------------------------------------------------------------

    def next_reply_seq(self, case_id: str) -> int:
        """The number of the case's next reply: one more than the replies the server held at the
        last import or the casebook has written, whichever is more (v2 spec, section 2)."""
        row = self.db.execute(
            "SELECT c.server_replies, (SELECT max(seq) FROM replies r WHERE r.case_id = c.id), "
            "(SELECT count(*) FROM replies r WHERE r.case_id = c.id) FROM cases c WHERE c.id = ?",
            (case_id,)).fetchone()
        if row is None:
            raise CasebookError(f"case {case_id[:70]} is not in this casebook")
        return max(int(row[0]), int(row[1] or 0), int(row[2])) + 1

    def record_reply(self, case_id: str, *, seq: int | None, purpose: str, body: str,
                     recipient: bytes, sealed: bytes, signature: bytes) -> int:
        """Record a sealed reply (sent, pending import on the server) and update the deadlines."""
        if purpose not in deadlines.PURPOSES:
            raise CasebookError("unknown reply purpose")
        day = today().isoformat()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO replies (case_id, seq, purpose, body, written_on, recipient, sealed, "
                "signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (case_id, seq, purpose, body, day, recipient, sealed, signature))
            self._refresh_deadlines(db, case_id)
            db.execute("UPDATE cases SET last_activity = max(last_activity, ?) WHERE id = ?",
                       (day, case_id))
        return int(cur.lastrowid or 0)

    def _refresh_deadlines(self, db: sqlite3.Connection, case_id: str) -> None:
        row = db.execute(
            "SELECT received_on, (SELECT min(written_on) FROM replies WHERE case_id = c.id), "
            "(SELECT min(written_on) FROM replies WHERE case_id = c.id AND purpose = 'feedback') "
            "FROM cases c WHERE id = ?", (case_id,)).fetchone()
        received, ack_on, feedback_on = row[0], row[1], row[2]
        db.execute("UPDATE cases SET ack_on = ?, feedback_due = ?, feedback_on = ? WHERE id = ?",
                   (ack_on, deadlines.feedback_due(received, ack_on), feedback_on, case_id))

    def mark_collected(self, reply_ids: list[int], out_name: str) -> None:
        """The replies were written into the replies file ``out_name`` for the USB stick."""
        with self.transaction() as db:
            db.executemany("UPDATE replies SET collected_on = ?, collected_to = ? WHERE id = ?",
                           [(today().isoformat(), out_name, rid) for rid in reply_ids])


def row_dict(row: Row | None) -> dict[str, Any]:
    """A row as a plain dict (for templates and JSON)."""
    return dict(row) if row is not None else {}
