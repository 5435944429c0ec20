# SPDX-License-Identifier: AGPL-3.0-or-later
"""The casebook's SQLite schema (one database file, ``casebook.sqlite3``, in the casebook folder).

Plaintext lives here and in ``files/`` only: the folder is 0700, every file 0600, and the
workstation's full-disk encryption protects it at rest (docs/workstation.md). Item ids are the
server's, so importing the same or an overlapping bundle again adds nothing twice. The search index
is an FTS5 table over the items' text with the ``unicode61`` tokenizer told to remove diacritics
(``remove_diacritics 2`` also folds the combining marks older versions kept) and fold case: "Corrupción"
is found by "corrupcion", "NIÑO" by "nino".
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 3

TOKENIZER = "unicode61 remove_diacritics 2"

DDL = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE cases (
    id TEXT PRIMARY KEY,
    received_on TEXT NOT NULL,
    status TEXT NOT NULL,
    status_on TEXT NOT NULL,
    channel TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT '',
    category_valid INTEGER NOT NULL DEFAULT 1,
    manifest_key TEXT NOT NULL,
    source_key BLOB,
    case_tag BLOB,
    report_version INTEGER,
    server_replies INTEGER NOT NULL DEFAULT 0,
    assignee TEXT NOT NULL DEFAULT '',
    ack_due TEXT NOT NULL,
    ack_on TEXT,
    feedback_due TEXT NOT NULL,
    feedback_on TEXT,
    last_activity TEXT NOT NULL,
    unread INTEGER NOT NULL DEFAULT 0,
    item_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX cases_received ON cases (received_on, id);
CREATE INDEX cases_activity ON cases (last_activity, id);
CREATE INDEX cases_status ON cases (status, received_on, id);
CREATE INDEX cases_category ON cases (category, received_on, id);
CREATE INDEX cases_channel ON cases (channel, received_on, id);
CREATE INDEX cases_assignee ON cases (assignee, received_on, id);
CREATE INDEX cases_ack ON cases (ack_due) WHERE ack_on IS NULL;
CREATE INDEX cases_feedback ON cases (feedback_due) WHERE feedback_on IS NULL;
CREATE INDEX cases_ack_sort ON cases (coalesce(ack_on, ack_due), id);
CREATE INDEX cases_feedback_sort ON cases (coalesce(feedback_on, feedback_due), id);
CREATE INDEX cases_unread ON cases (received_on, id) WHERE unread > 0;

CREATE TABLE items (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    case_id TEXT NOT NULL REFERENCES cases (id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    created_on TEXT NOT NULL,
    channel TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    names TEXT NOT NULL DEFAULT '',
    problems TEXT NOT NULL DEFAULT '',
    binding TEXT NOT NULL DEFAULT '',
    seen INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX items_case ON items (case_id, seq);

CREATE VIRTUAL TABLE items_fts USING fts5 (
    body, names, content='items', content_rowid='rowid', tokenize='{TOKENIZER}'
);

CREATE TABLE attachments (
    id INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL REFERENCES items (id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT,
    problem TEXT NOT NULL DEFAULT '',
    metadata TEXT,
    UNIQUE (item_id, idx)
);

CREATE TABLE replies (
    id INTEGER PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases (id),
    seq INTEGER,
    purpose TEXT NOT NULL,
    body TEXT NOT NULL,
    written_on TEXT NOT NULL,
    recipient BLOB NOT NULL,
    sealed BLOB NOT NULL,
    signature BLOB NOT NULL,
    collected_on TEXT,
    collected_to TEXT,
    on_server INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX replies_case ON replies (case_id, id);
CREATE INDEX replies_pending ON replies (collected_on);

CREATE TABLE notes (
    id INTEGER PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases (id),
    written_on TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX notes_case ON notes (case_id, id);

CREATE TABLE tags (
    case_id TEXT NOT NULL REFERENCES cases (id),
    tag TEXT NOT NULL,
    PRIMARY KEY (case_id, tag)
) WITHOUT ROWID;
CREATE INDEX tags_tag ON tags (tag, case_id);

CREATE TABLE links (
    a TEXT NOT NULL REFERENCES cases (id),
    b TEXT NOT NULL REFERENCES cases (id),
    PRIMARY KEY (a, b),
    CHECK (a < b)
) WITHOUT ROWID;
CREATE INDEX links_b ON links (b, a);

CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY,
    bundle TEXT NOT NULL,
    bundle_created_on TEXT NOT NULL,
    imported_on TEXT NOT NULL,
    report_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    part TEXT NOT NULL,
    reason TEXT NOT NULL,
    resolved INTEGER NOT NULL DEFAULT 0,
    UNIQUE (item_id, part, reason)
);

CREATE TABLE bundles (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    created_on TEXT NOT NULL,
    imported_on TEXT NOT NULL,
    items_added INTEGER NOT NULL,
    attachments_added INTEGER NOT NULL,
    quarantined INTEGER NOT NULL
);
"""

# Version 2: the structured answers of each report (docs/protocol.md section 2, ``fields``) and
# the similar-reports index (similar.py). ``key`` is the answer folded for grouping (accents,
# capitals and spaces do not matter: "Hospital  Andrade Marín" and "hospital andrade marin" are
# one place); ``value`` is the answer as the source gave it.
DDL_V2 = """
CREATE TABLE answers (
    case_id TEXT NOT NULL REFERENCES cases (id),
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (case_id, field)
) WITHOUT ROWID;
CREATE INDEX answers_key ON answers (field, key, case_id);

CREATE TABLE sim_docs (
    n INTEGER PRIMARY KEY,
    case_id TEXT NOT NULL UNIQUE REFERENCES cases (id),
    features BLOB NOT NULL,
    weights BLOB NOT NULL
);
CREATE TABLE sim_edges (
    a INTEGER NOT NULL,
    b INTEGER NOT NULL,
    text REAL NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (a, b)
) WITHOUT ROWID;
CREATE INDEX sim_edges_b ON sim_edges (b, score);
CREATE TABLE sim_groups (
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    kind TEXT NOT NULL,
    mean_text REAL NOT NULL,
    first_on TEXT NOT NULL,
    last_on TEXT NOT NULL,
    sample TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT '',
    place TEXT NOT NULL DEFAULT '',
    month TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sim_groups_size ON sim_groups (size DESC, last_on DESC, id);
CREATE TABLE sim_members (
    case_id TEXT PRIMARY KEY,
    group_id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sim_members_group ON sim_members (group_id, case_id);
"""

# Version 3: why a closed case was closed (the manifest's ``outcome``, docs/protocol.md section 6)
# and when the casebook learned it was closed (``closed_on``: the creation day of the first bundle
# that showed it closed; the server does not export the day it was closed), for the transparency
# file's ``closed`` rows. A case already closed keeps the day of the last bundle that showed it;
# its outcome comes with the next bundle that carries the case (``whistle export --all``).
# ``meta.casebook_id`` is a random id made once per casebook: what the web UI's caches are keyed
# on, so that they never show the numbers of another casebook (one made anew in the same folder).
DDL_V3 = """
ALTER TABLE cases ADD COLUMN outcome TEXT;
ALTER TABLE cases ADD COLUMN closed_on TEXT;
UPDATE cases SET closed_on = status_on WHERE status = 'closed';
CREATE INDEX cases_closed ON cases (closed_on, outcome) WHERE closed_on IS NOT NULL;
INSERT OR IGNORE INTO meta (key, value) VALUES ('casebook_id', lower(hex(randomblob(16))));
"""
# What each older version needs to become this one, in order.
UPGRADES = {1: DDL_V2 + DDL_V3, 2: DDL_V3}


def create(db: sqlite3.Connection) -> None:
    """Create every table of an empty database and record the schema version."""
    db.executescript("BEGIN;" + DDL + DDL_V2 + DDL_V3 + f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")


def migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring a casebook of an older schema to this one (in one transaction). A version-1
    casebook gains the answers table (empty: the reports imported before kept no answers; import
    their bundles again to have them) and the similar-reports index, built the next time the
    casebook is served; a version-1 or 2 casebook gains the cases' outcome and closing day."""
    if version in UPGRADES:
        db.executescript("BEGIN;" + UPGRADES[version] + f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")


def check_fts5(db: sqlite3.Connection) -> None:
    """Raise :class:`sqlite3.OperationalError` when this SQLite lacks FTS5 or the tokenizer option."""
    db.execute(f"CREATE VIRTUAL TABLE temp.fts_probe USING fts5 (x, tokenize='{TOKENIZER}')")
    db.execute("DROP TABLE temp.fts_probe")
