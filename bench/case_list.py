# SPDX-License-Identifier: AGPL-3.0-or-later
"""The investigators' case list with 100,000 reports: p95 latency, SQLite and PostgreSQL.

A fresh instance (the app's own schema and migrations) is filled with SQLAlchemy Core
executemany: 100,000 reports spread over two years, statuses by age (most old cases closed), one
report item each and, for 10 % of them, 1-3 follow-up messages and 0-2 replies; every item has a
tiny dummy blob. Then, over ~200 requests that cycle through filters (open, overdue, all, closed),
sorts (received, updated, status; ascending and descending) and pages (first, middle, last):

- ``whistle.server.casework.list_cases`` in a fresh session, as the view calls it;
- the full page ``GET /investigator/`` through Flask's test client with a logged-in investigator
  (real login: password and TOTP code);
- the baseline: a bare indexed ``SELECT … FROM reports ORDER BY received_on, id LIMIT 50``.

Target: p95 < 50 ms for both. The ratio p95 / baseline p95 is reported too.

    .venv/bin/python bench/case_list.py [--reports 100000] [--rounds 3] [--backend sqlite|postgresql|all]
    .venv/bin/python bench/case_list.py --explain    # query plans of the slowest requests
    .venv/bin/python bench/case_list.py --proposed-indexes   # plus the candidate DDL in PROPOSED_INDEXES
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Result,
    banner,
    emit,
    make_instance,
    median,
    percentile,
    postgres_database,
    postgres_url,
    tempdir,
)

TARGET_MS = 50.0
FILTERS = ("open", "overdue", "all", "closed")
SORTS = ("received", "updated", "status")
ORDERS = ("asc", "desc")
PAGES = ("first", "middle", "last")


def _status_for(age: int, rnd: random.Random) -> str:
    """Young cases are mostly open, old ones mostly closed."""
    if age < 14:
        weights = (60, 30, 10, 0)
    elif age < 90:
        weights = (5, 25, 50, 20)
    else:
        weights = (1, 4, 15, 80)
    return rnd.choices(("received", "acknowledged", "investigating", "closed"), weights)[0]


def populate(engine: Any, n_reports: int, today: dt.date, seed: int = 1) -> dict[str, int]:
    """Bulk-insert the reports, items and tiny blobs (Core executemany, batches of 5,000)."""
    from sqlalchemy import insert

    from whistle.core.enums import Outcome
    from whistle.server.models import Blob, BlobChunk, Item, Report

    rnd = random.Random(seed)
    counts = {"reports": 0, "items": 0, "messages": 0, "replies": 0}
    batch = 5000
    envelope = b"\0" * 1072

    def rid(nbytes: int) -> str:
        return rnd.getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()

    with engine.begin() as conn:
        for start in range(0, n_reports, batch):
            reports, items, blobs, chunks = [], [], [], []
            for _ in range(start, min(start + batch, n_reports)):
                age = rnd.randrange(730)
                received = today - dt.timedelta(days=age)
                status = _status_for(age, rnd)
                updated = received + dt.timedelta(days=rnd.randrange(min(age, 60) + 1))
                report_id = rid(8)
                reports.append({
                    "id": report_id, "received_on": received, "status": status,
                    "outcome": rnd.choice([o.value for o in Outcome]) if status == "closed" else None,
                    "acknowledged_on": None if status == "received" else received,
                    "updated_on": updated, "channel": rnd.choice(("browser", "server-form")),
                    "login_hash": rnd.randbytes(32), "source_public_key": rnd.randbytes(32),
                })
                kinds = ["report"]
                if rnd.random() < 0.10:
                    kinds += ["message"] * rnd.randint(1, 3) + ["reply"] * rnd.randint(0, 2)
                    rnd.shuffle(kinds[1:])
                # The case list's counters, as whistle.server.intake.add_item / export keep them.
                reports[-1]["replies"] = reports[-1]["new_messages"] = 0
                for seq, kind in enumerate(kinds, 1):
                    blob_id = rid(16)
                    blobs.append({"id": blob_id, "size": len(envelope)})
                    chunks.append({"blob_id": blob_id, "seq": 0, "data": envelope})
                    items.append({
                        "id": rid(8), "report_id": report_id, "seq": seq, "kind": kind,
                        "created_on": received + dt.timedelta(days=min(age, seq - 1)),
                        "channel": None if kind == "reply" else "browser",
                        "exported": kind == "report" or rnd.random() < 0.5,
                        "envelope_blob_id": blob_id,
                    })
                    if kind == "reply":
                        reports[-1]["replies"] += 1
                    elif kind == "message" and not items[-1]["exported"]:
                        reports[-1]["new_messages"] += 1
                    counts["messages" if kind == "message" else "replies" if kind == "reply"
                           else "items"] += 1
            conn.execute(insert(Report), reports)
            conn.execute(insert(Blob), blobs)
            conn.execute(insert(BlobChunk), chunks)
            conn.execute(insert(Item), items)
            counts["reports"] += len(reports)
    return counts


# Migration 0003 applied the indexes docs/performance.md proposed; --proposed-indexes now adds
# nothing (kept so the option and its label still work). Put candidate DDL here to measure it.
PROPOSED_INDEXES: tuple[str, ...] = ()


def request_plan(rounds: int) -> list[tuple[str, str, str, str]]:
    combos = list(itertools.product(FILTERS, SORTS, ORDERS, PAGES))
    plan = combos * rounds
    random.Random(2).shuffle(plan)
    return plan


def page_number(which: str, pages: int) -> int:
    return {"first": 1, "middle": max(1, (pages + 1) // 2), "last": pages}[which]


def login(client: Any, app: Any) -> None:
    """Create an investigator and log in through the form (password + TOTP), as a person would."""
    import pyotp

    from whistle.server.accounts import create_investigator

    with app.extensions["whistle"].sessions() as db:
        account = create_investigator(db, "bench")
        db.commit()
    page = client.get("/investigator/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token, "no csrf token on the login page"
    resp = client.post("/investigator/login", data={
        "csrf_token": token.group(1), "name": account.name, "password": account.password,
        "code": pyotp.TOTP(account.totp_secret).now()})
    assert resp.status_code == 303, resp.status_code


def bare_select(engine: Any, reps: int) -> list[float]:
    """Baseline: the same columns, no filter, first page of the received_on index."""
    from sqlalchemy import select

    from whistle.server.models import Report

    query = (select(Report.id, Report.received_on, Report.updated_on, Report.status,
                    Report.outcome, Report.channel)
             .order_by(Report.received_on, Report.id).limit(50))
    times = []
    with engine.connect() as conn:
        for _ in range(reps):
            t0 = time.perf_counter()
            rows = conn.execute(query).all()
            times.append(time.perf_counter() - t0)
            assert len(rows) == 50
    return times


def run_backend(name: str, database_url: str | None, root: Path, n_reports: int, rounds: int,
                explain: bool, proposed: bool) -> None:
    from sqlalchemy import text

    from whistle import create_app
    from whistle.server.casework import list_cases
    from whistle.server.intake import today

    inst = make_instance(root / name, database_url=database_url)
    app = create_app(inst.config())
    state = app.extensions["whistle"]
    engine = state.engine
    t0 = time.perf_counter()
    counts = populate(engine, n_reports, today())
    if proposed:
        with engine.begin() as conn:
            for ddl in PROPOSED_INDEXES:
                conn.execute(text(ddl))
        name += ", proposed indexes"
    if engine.dialect.name == "postgresql":
        # What autovacuum does on its own shortly after a bulk load (statistics, visibility map).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    print(f"[{name}] inserted {counts} in {time.perf_counter() - t0:.1f} s (not timed)")

    # Pages per filter, for "middle" and "last".
    pages = {}
    with state.sessions() as db:
        for f in FILTERS:
            pages[f] = list_cases(db, status=f, page=1).pages
    print(f"[{name}] pages of 50: {pages}")

    client = app.test_client()
    login(client, app)
    plan = request_plan(rounds)
    # Warm-up: templates, query compilation caches, database caches.
    for f, s, o, p in plan[:12]:
        with state.sessions() as db:
            list_cases(db, status=f, sort=s, descending=o == "desc", page=page_number(p, pages[f]))
        client.get(f"/investigator/?status={f}&sort={s}&order={o}&page={page_number(p, pages[f])}")
    bare_select(engine, 20)

    fn_times: dict[tuple[str, str, str, str], list[float]] = {}
    http_times: dict[tuple[str, str, str, str], list[float]] = {}
    for combo in plan:
        f, s, o, p = combo
        number = page_number(p, pages[f])
        t0 = time.perf_counter()
        with state.sessions() as db:
            result = list_cases(db, status=f, sort=s, descending=o == "desc", page=number)
        fn_times.setdefault(combo, []).append(time.perf_counter() - t0)
        assert result.rows or result.total == 0
        t0 = time.perf_counter()
        resp = client.get(f"/investigator/?status={f}&sort={s}&order={o}&page={number}")
        http_times.setdefault(combo, []).append(time.perf_counter() - t0)
        assert resp.status_code == 200, resp.status_code
    bare = bare_select(engine, len(plan))

    all_fn = [t * 1000 for ts in fn_times.values() for t in ts]
    all_http = [t * 1000 for ts in http_times.values() for t in ts]
    bare_p95 = percentile([t * 1000 for t in bare], 95)
    by_filter = {f: round(percentile([t * 1000 for c, ts in http_times.items() if c[0] == f
                                      for t in ts], 95), 1) for f in FILTERS}
    by_page = {p: round(percentile([t * 1000 for c, ts in http_times.items() if c[3] == p
                                    for t in ts], 95), 1) for p in PAGES}
    slowest = sorted(http_times.items(), key=lambda kv: -median(kv[1]))[:5]
    raw: dict[str, object] = {
        "requests": len(all_http), "reports": counts["reports"],
        "list_cases p50 / p95 / max ms": [round(median(all_fn), 1), round(percentile(all_fn, 95), 1),
                                          round(max(all_fn), 1)],
        "HTTP page p50 / p95 / max ms": [round(median(all_http), 1),
                                         round(percentile(all_http, 95), 1), round(max(all_http), 1)],
        "bare SELECT p50 / p95 ms": [round(median(bare) * 1000, 2), round(bare_p95, 2)],
        "HTTP p95 by filter ms": by_filter, "HTTP p95 by page ms": by_page,
        "slowest (filter, sort, order, page): median ms":
            {"/".join(c): round(median(ts) * 1000, 1) for c, ts in slowest},
    }
    fn_p95 = percentile(all_fn, 95)
    http_p95 = percentile(all_http, 95)
    for label, p95 in (("whistle.server.casework.list_cases", fn_p95),
                       ("GET /investigator/ (full page)", http_p95)):
        emit(Result(
            benchmark=f"case_list ({name})", metric=f"{label}, p95 over {len(all_fn)} requests, "
                                                    f"{counts['reports']:,} reports",
            value=p95, unit="ms (p95)", baseline="bare indexed SELECT … LIMIT 50 (p95, ms)",
            baseline_value=bare_p95, ratio=p95 / bare_p95, target=f"p95 < {TARGET_MS:.0f} ms",
            passed=p95 < TARGET_MS, raw=raw if label.startswith("GET") else {},
            note="ratio = p95 / bare SELECT p95 (information; the target is the absolute p95)"))
    if explain:
        explain_plans(engine, pages, [c for c, _ in slowest[:3]])
    engine.dispose()


def explain_plans(engine: Any, pages: dict[str, int], combos: list[tuple[str, str, str, str]]) -> None:
    """Print the plans of the statements list_cases runs for the slowest requests."""
    from sqlalchemy import event, text

    from whistle.server.casework import list_cases
    from whistle.server.db import make_sessionmaker

    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        for f, s, o, p in combos:
            statements.clear()
            with make_sessionmaker(engine)() as db:
                list_cases(db, status=f, sort=s, descending=o == "desc", page=page_number(p, pages[f]))
            captured = list(statements)
            print(f"\n--- plans for filter={f} sort={s} order={o} page={p}")
            for statement, params in captured:
                prefix = ("EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite"
                          else "EXPLAIN (ANALYZE, BUFFERS) ")
                with engine.connect() as conn:
                    t0 = time.perf_counter()
                    rows = conn.exec_driver_sql(prefix + statement, params).all()
                    took = (time.perf_counter() - t0) * 1000
                print(f"{statement.strip()[:300]}\n  [explain ran in {took:.1f} ms]")
                for row in rows:
                    print("   ", " | ".join(str(x) for x in row))
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    del text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3, help="passes over the 72 combinations")
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="all")
    ap.add_argument("--explain", action="store_true", help="print query plans of the slowest")
    ap.add_argument("--proposed-indexes", action="store_true",
                    help="also create the indexes docs/performance.md proposes (not in the app)")
    args = ap.parse_args()
    banner("case_list")
    os.environ.setdefault("WHISTLE_LIMIT_LOGIN_GLOBAL", "1000 per minute")
    with tempdir("whistle-bench-cases-") as root:
        if args.backend in ("sqlite", "all"):
            run_backend("sqlite", None, root, args.reports, args.rounds, args.explain,
                        args.proposed_indexes)
        if args.backend in ("postgresql", "all"):
            pg = postgres_url()
            if pg is None:
                print("PostgreSQL is not running on loopback: skipped (run `bash .ci/services`).")
            else:
                with postgres_database(pg) as url:
                    run_backend("postgresql", url, root, args.reports, args.rounds, args.explain,
                                args.proposed_indexes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
