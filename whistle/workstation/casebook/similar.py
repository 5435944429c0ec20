# SPDX-License-Identifier: AGPL-3.0-or-later
"""Similar reports and groups of them (docs/investigators.md, "Similar reports and groups").

**Text similarity** is the cosine of TF-IDF vectors (scikit-learn's HashingVectorizer, so a
report's vector never changes once made and the index grows one report at a time). A report's
words are folded (accents and capitals do not matter), the commonest Spanish and English words are
dropped (and numbers of one or two digits: counts of hours, days, times), each word is cut to
its first 6 letters (a crude stem: *medicamento*, *medicamentos* and
*medicación* become one) and pairs of neighbouring words count too. A word found in more than
``COMMON_SHARE`` of the reports (and at least ``COMMON_MIN`` of them) is a common word: it still
weighs in a report's length but never makes two reports similar, which keeps the index fast on
100,000 reports.

**Structured answers** then move the score: each answer both reports gave — category, each
place level, the month — adds ``ANSWER_WEIGHT`` when they agree and takes it away when they
differ. ``score = text + 0.1 × (answers that agree − answers that differ)``, between 0 and 1.

**Thresholds** (tested on a generated corpus with planted groups, tests/test_casebook_similar.py):
a case page lists the reports scoring at least ``SHOW_MIN``; two reports scoring at least
``GROUP_MIN`` — or at least ``LINK_MIN`` while sharing ``SHARED_NEIGHBOURS`` neighbours that
score ``LINK_MIN`` with both — are in the same group (groups are the connected sets of such
pairs); a group whose
pairs have a mean *text* similarity of at least ``SPAM_TEXT`` is a flood of near-identical texts —
spam, or a copy-paste campaign: read a few — and any other group is a **pattern**: the same
complaint in different words.

The index lives in the casebook's database (``sim_docs``, ``sim_edges``, ``sim_groups``,
``sim_members``) and is brought up to date by :func:`refresh`: ``casebook serve`` runs it at start
and the pages run it when an import added reports since. Each new report is compared with every
report; scores are computed with the word weights of that moment, and the whole index is
recomputed whenever the casebook has doubled since its last full computation.
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from whistle.workstation.casebook.answers import Fields
from whistle.workstation.casebook.store import Casebook

SHOW_MIN = 0.3
GROUP_MIN = 0.5
LINK_MIN = 0.4
SHARED_NEIGHBOURS = 2
SPAM_TEXT = 0.5
# What an answer both reports gave adds when equal (takes away when different): the finest place
# (a facility) weighs most, then the month; the category and a coarser place (a province) a little.
FINEST_PLACE_WEIGHT = 0.15
MONTH_WEIGHT = 0.1
OTHER_WEIGHT = 0.05
# Pairs below this text similarity are not considered at all (answers cannot lift them).
TEXT_FLOOR = 0.15
# Each new report keeps at most this many neighbours (the best scores).
NEIGHBOURS = 20
COMMON_SHARE = 0.05
COMMON_MIN = 1000
STEM = 6
BIGRAMS = True
N_FEATURES = 2**20
CHUNK = 1000

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset((  # noqa: SIM905 - a text of words reads better than a list
    "a al algo algun alguna algunas alguno algunos ante antes aqui asi aun bien cada como con contra "
    "cual cuando de del desde donde dos el ella ellas ellos en entre era eran es esa esas ese eso "
    "esos esta estaba estaban estan estar este esto estos fue fueron ha habia han hasta hay la las le "
    "les lo los mas me mi mis mucho muy nada ni no nos nuestra nuestro o otra otras otro otros para "
    "pero poco por porque que quien se sea ser si sido sin sobre son su sus tambien tan tanto te "
    "tiene tienen todo todos tu un una uno unos usted ustedes y ya yo about after all also an and any "
    "are as at be been but by can could did do does for from had has have he her his how i if in into "
    "is it its me my no not of on or our she so than that the their them then there they this to up "
    "us was we were what when which who will with would you your"
).split())

_lock = threading.Lock()
# Per casebook folder: how many documents the cached term-count matrix holds, and the matrix.
_cache: dict[str, tuple[int, Any]] = {}


def tokens(text: str) -> list[str]:
    """A report's terms: folded words without the commonest, cut to ``STEM`` letters, and each
    pair of neighbouring words."""
    bare = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    words = [w[:STEM] for w in _WORD.findall(bare.casefold())
             if len(w) > 1 and w not in STOPWORDS and not (w.isdigit() and len(w) < 3)]
    if not BIGRAMS:
        return words
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


def _vectorizer() -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(analyzer=tokens, n_features=N_FEATURES, alternate_sign=False,
                             norm=None, dtype="float32")


@dataclass(frozen=True)
class Refreshed:
    """What one refresh did."""

    added: int
    total: int
    full: bool
    seconds: float
    groups: int


def _meta(book: Casebook, key: str) -> int:
    row = book.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


def needs_refresh(book: Casebook) -> bool:
    """Whether reports were imported since the index was last brought up to date."""
    top = book.db.execute("SELECT max(rowid) FROM items").fetchone()[0] or 0
    return int(top) > _meta(book, "sim_rowid")


def refresh(book: Casebook, fields: Fields, *, progress: Callable[[int, int], None] | None = None,
            full: bool = False) -> Refreshed:
    """Index the reports imported since the last refresh and recompute the groups."""
    with _lock:
        return _refresh(book, fields, progress, full)


def _refresh(book: Casebook, fields: Fields, progress: Callable[[int, int], None] | None,
             full: bool) -> Refreshed:
    import numpy as np

    t0 = time.perf_counter()
    db = book.db
    top = int(db.execute("SELECT max(rowid) FROM items").fetchone()[0] or 0)
    done = _meta(book, "sim_rowid")
    if top <= done and not full:
        return Refreshed(0, _count(book), False, 0.0, 0)
    new = db.execute("SELECT i.case_id, i.body FROM items i WHERE i.kind = 'report' AND "
                     "i.rowid > ? AND i.case_id NOT IN (SELECT case_id FROM sim_docs) "
                     "ORDER BY i.rowid", (done,)).fetchall()
    vec = _vectorizer()
    with book.transaction():
        for start in range(0, len(new), CHUNK):
            part = new[start:start + CHUNK]
            counts = vec.transform([r["body"] for r in part]).tocsr()
            counts.sort_indices()
            rows = []
            for k, r in enumerate(part):
                lo, hi = counts.indptr[k], counts.indptr[k + 1]
                rows.append((r["case_id"], counts.indices[lo:hi].astype(np.int32).tobytes(),
                             counts.data[lo:hi].astype(np.float32).tobytes()))
            db.executemany("INSERT INTO sim_docs (case_id, features, weights) VALUES (?, ?, ?)", rows)
        matrix, ids = _matrix(book)
        total = len(ids)
        first_new = total - len(new)
        full_n = _meta(book, "sim_full_n")
        full = full or full_n == 0 or total >= 2 * full_n
        if full:
            db.execute("DELETE FROM sim_edges")
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sim_full_n', ?)", (str(total),))
            rows_to_do = range(total)
        else:
            rows_to_do = range(first_new, total)
        if total:
            weighted = _weigh(matrix)
            transposed = weighted.T.tocsr()
            codes = _answer_codes(book, ids, fields)
            for start in range(rows_to_do.start, rows_to_do.stop, CHUNK):
                stop = min(start + CHUNK, rows_to_do.stop)
                edges = _edges(weighted, transposed, codes, start, stop)
                db.executemany("INSERT OR REPLACE INTO sim_edges (a, b, text, score) "
                               "VALUES (?, ?, ?, ?)", edges)
                if progress is not None:
                    progress(stop - rows_to_do.start, len(rows_to_do))
        groups = _regroup(book, ids, fields)
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sim_rowid', ?)", (str(top),))
    return Refreshed(len(new), total, full, time.perf_counter() - t0, groups)


def _count(book: Casebook) -> int:
    return int(book.db.execute("SELECT count(*) FROM sim_docs").fetchone()[0])


def _matrix(book: Casebook) -> tuple[Any, list[int]]:
    """The term counts of every indexed report (rows in ``n`` order) and their ``n``; the rows
    read before stay cached for the next refresh."""
    import numpy as np
    import scipy.sparse as sp

    key = str(book.root.resolve())
    have, cached = _cache.get(key, (0, None))
    last_n = int(book.db.execute("SELECT coalesce(max(n), 0) FROM sim_docs").fetchone()[0])
    if cached is not None and have > last_n:
        have, cached = 0, None
    indptr, indices, data = [0], [], []
    for row in book.db.execute("SELECT features, weights FROM sim_docs WHERE n > ? ORDER BY n", (have,)):
        f = np.frombuffer(row[0], dtype=np.int32)
        indices.append(f)
        data.append(np.frombuffer(row[1], dtype=np.float32))
        indptr.append(indptr[-1] + len(f))
    fresh = sp.csr_matrix((np.concatenate(data) if data else np.zeros(0, np.float32),
                           np.concatenate(indices) if indices else np.zeros(0, np.int32),
                           np.array(indptr, dtype=np.int64)), shape=(len(indptr) - 1, N_FEATURES))
    matrix = fresh if cached is None else sp.vstack([cached, fresh], format="csr")
    _cache[key] = (last_n, matrix)
    ids = [int(r[0]) for r in book.db.execute("SELECT n FROM sim_docs ORDER BY n")]
    return matrix, ids


def _weigh(counts: Any) -> Any:
    """TF-IDF rows of unit length, without the common words (they count in the length only)."""
    import numpy as np
    import scipy.sparse as sp

    n = counts.shape[0]
    tf = counts.copy()
    tf.data = 1.0 + np.log(tf.data)
    df = np.bincount(tf.indices, minlength=N_FEATURES)
    idf = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
    tf.data *= idf[tf.indices]
    norms = np.sqrt(np.asarray(tf.multiply(tf).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    tf = sp.diags(1.0 / norms) @ tf
    common = df > max(COMMON_SHARE * n, COMMON_MIN)
    rare = tf.copy()
    rare.data[common[rare.indices]] = 0.0
    rare.eliminate_zeros()
    return rare.tocsr()


def _answer_codes(book: Casebook, ids: list[int], fields: Fields) -> Any:
    """One row per structured field (category, each place level, month), one column per indexed
    report: a small integer per distinct answer, -1 where the report gave none."""
    import numpy as np

    names = ["\x00category", *fields.place_fields, fields.month_field]
    codes = np.full((len(names), len(ids)), -1, dtype=np.int32)
    where = {n: k for k, n in enumerate(ids)}
    vocab: dict[tuple[int, str], int] = {}

    def code(f: int, key: str) -> int:
        return vocab.setdefault((f, key), len(vocab))

    for n, category in book.db.execute("SELECT d.n, c.category FROM sim_docs d JOIN cases c "
                                       "ON c.id = d.case_id"):
        codes[0, where[n]] = code(0, category)
    marks = ",".join("?" * (len(names) - 1))
    for n, field, key in book.db.execute(
            f"SELECT d.n, a.field, a.key FROM sim_docs d JOIN answers a ON a.case_id = d.case_id "  # noqa: S608 - placeholders only  # nosec B608
            f"WHERE a.field IN ({marks})", names[1:]):
        codes[names.index(field), where[n]] = code(names.index(field), key)
    return codes


def answer_weights(rows: int) -> list[float]:
    """The weight of each row of the answer codes: category, places (coarsest first), month."""
    places = rows - 2
    return [OTHER_WEIGHT] + [OTHER_WEIGHT] * (places - 1) + [FINEST_PLACE_WEIGHT] * (places > 0) \
        + [MONTH_WEIGHT]


def _edges(weighted: Any, transposed: Any, codes: Any, start: int,
           stop: int) -> list[tuple[int, int, float, float]]:
    """The pairs of rows ``start``..``stop`` with every report, scored; each row's best
    ``NEIGHBOURS``. Returned as (a, b, text, score) with a < b (row numbers + 1 = ``n``)."""
    import numpy as np

    products = (weighted[start:stop] @ transposed).tocoo()
    keep = (products.data >= TEXT_FLOOR) & (products.col != products.row + start)
    rows = products.row[keep] + start
    cols = products.col[keep]
    text = np.minimum(products.data[keep], 1.0)
    both = (codes[:, rows] >= 0) & (codes[:, cols] >= 0)
    same = both & (codes[:, rows] == codes[:, cols])
    weights = np.array(answer_weights(codes.shape[0]), dtype=np.float32)[:, None]
    agree = (weights * same).sum(axis=0) - (weights * (both & ~same)).sum(axis=0)
    score = np.clip(text + agree, 0.0, 1.0)
    out: list[tuple[int, int, float, float]] = []
    order = np.lexsort((-score, rows))
    rows, cols, text, score = rows[order], cols[order], text[order], score[order]
    bounds = np.flatnonzero(np.diff(rows)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(rows)], strict=True):
        for k in range(lo, min(hi, lo + NEIGHBOURS)):
            if score[k] < SHOW_MIN:
                break
            a, b = sorted((int(rows[k]) + 1, int(cols[k]) + 1))
            out.append((a, b, round(float(text[k]), 4), round(float(score[k]), 4)))
    return out


def _regroup(book: Casebook, ids: list[int], fields: Fields) -> int:
    """Recompute the groups: connected sets of reports joined by pairs scoring ``GROUP_MIN``."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    db = book.db
    db.execute("DELETE FROM sim_members")
    db.execute("DELETE FROM sim_groups")
    pairs = db.execute("SELECT a, b, text, score FROM sim_edges WHERE score >= ?", (LINK_MIN,)).fetchall()
    if not pairs:
        return 0
    size = len(ids)
    a = np.array([p[0] - 1 for p in pairs])
    b = np.array([p[1] - 1 for p in pairs])
    texts = np.array([p[2] for p in pairs])
    scores = np.array([p[3] for p in pairs])
    # A pair between LINK_MIN and GROUP_MIN joins a group only when the two reports share at
    # least SHARED_NEIGHBOURS neighbours: campaigns are dense, coincidences are not.
    adjacency = sp.coo_matrix((np.ones(len(a), dtype=np.float32), (a, b)), shape=(size, size)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float32)
    shared = np.asarray((adjacency @ adjacency)[a, b]).ravel()
    keep = (scores >= GROUP_MIN) | (shared >= SHARED_NEIGHBOURS)
    a, b, texts = a[keep], b[keep], texts[keep]
    if not len(a):
        return 0
    graph = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(size, size))
    _count_, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    sums = np.bincount(labels[a], weights=texts, minlength=len(sizes))
    edges = np.bincount(labels[a], minlength=len(sizes))
    members: dict[int, list[int]] = {}
    for row in np.flatnonzero(sizes[labels] >= 2):
        members.setdefault(int(labels[row]), []).append(int(row) + 1)
    place_field = fields.place_fields[-1] if fields.place_fields else ""
    for label, ns in members.items():
        mean_text = float(sums[label] / max(edges[label], 1))
        info = _describe(book, ns, place_field, fields.month_field)
        cur = db.execute(
            "INSERT INTO sim_groups (size, kind, mean_text, first_on, last_on, sample, category, "
            "place, month) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (len(ns), "spam" if mean_text >= SPAM_TEXT else "pattern", round(mean_text, 3), *info))
        db.executemany("INSERT INTO sim_members (case_id, group_id) SELECT case_id, ? FROM sim_docs "
                       "WHERE n = ?", [(cur.lastrowid, n) for n in ns])
    return len(members)


def _describe(book: Casebook, ns: list[int], place_field: str, month_field: str) -> tuple[str, ...]:
    """A group's first and last received days, a sample case, and its commonest category, place
    and month (each only when at least half of the group shares it)."""
    rows: list[Any] = []
    for start in range(0, len(ns), 500):
        chunk = ns[start:start + 500]
        marks = ",".join("?" * len(chunk))
        rows += book.db.execute(
            f"SELECT c.id, c.received_on, c.category, (SELECT value FROM answers WHERE case_id = c.id "  # noqa: S608 - placeholders only  # nosec B608
            f"AND field = ?), (SELECT value FROM answers WHERE case_id = c.id AND field = ?) "
            f"FROM sim_docs d JOIN cases c ON c.id = d.case_id WHERE d.n IN ({marks})",
            [place_field, month_field, *chunk]).fetchall()
    days = sorted(r[1] for r in rows)

    def common(values: Iterable[str | None]) -> str:
        value, n = (Counter(v for v in values if v).most_common(1) or [("", 0)])[0]
        return value if n * 2 >= len(rows) else ""

    sample = min(rows, key=lambda r: (r[1], r[0]))[0]
    return (days[0], days[-1], sample, common(r[2] for r in rows), common(r[3] for r in rows),
            common(r[4] for r in rows))
