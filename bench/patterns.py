# SPDX-License-Identifier: AGPL-3.0-or-later
"""The casebook's pattern pages at 100,000 reports (issue 13): similar reports, groups, spikes,
charts — build time and page p95, against the casebook's inbox page measured in the same run.

A casebook is filled with ``--cases`` (100,000) generated Spanish reports with structured
answers and planted groups (tests/casebook_corpus.py: ordinary complaints from many sentence
templates, campaigns of the same complaint in different words, floods of near-identical junk),
straight into the casebook's tables, as bench/casebook.py does. Then:

1. **Build**: the similar-reports index from nothing (``similar.refresh``: vectors, every
   report against every other, groups), then an incremental refresh after ``--more`` (1,000)
   further reports.
2. **Pages**, through the web UI's test client at its own address (the full page: query,
   template, headers), each path ``--rounds`` times after one warm-up: case pages (with their
   similar reports), the groups pages, the spikes page, the charts page (both periods), each
   chart's SVG and CSV, and the inbox filtered by place and month — against the plain inbox page
   (the baseline). Target: every pattern page's p95 under 1 s. Charts and spikes are computed in
   the background (web/precompute.py): the first request answers that they are being computed;
   how long the computation takes, and the first requests after it, are recorded.

    .venv/bin/python bench/patterns.py [--cases 100000] [--more 1000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import MiB, Result, banner, emit, median, percentile, tempdir  # noqa: E402
from casebook import time_pages  # noqa: E402

PAGE_P95_MS = 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--more", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    banner("patterns")

    import casebook_corpus as corpus_mod

    from whistle.workstation.casebook import similar, store
    from whistle.workstation.casebook.answers import load_fields
    from whistle.workstation.casebook.store import Casebook
    from whistle.workstation.casebook.web import ServeState, create_app

    today = dt.date(2026, 6, 20)
    store.today = lambda: today  # type: ignore[assignment]
    fields = load_fields(None)
    results: list[Result] = []
    with tempdir("whistle-bench-patterns-") as tmp:
        root = tmp / "casebook"
        t0 = time.perf_counter()
        scale = args.cases / 100_000
        corpus = corpus_mod.generate(21, int(args.cases * 0.985), campaigns=int(100 * scale) or 2,
                                     spam=int(15 * scale) or 1, start=dt.date(2024, 7, 1), days=715,
                                     spam_sizes=(20, 150))
        corpus.reports = corpus.reports[:args.cases]
        with Casebook.open(root) as book:
            ids = corpus_mod.fill(book, corpus)
            book.db.execute("ANALYZE")
        size = (root / "casebook.sqlite3").stat().st_size
        print(f"casebook: {len(ids)} reports generated in {time.perf_counter() - t0:.1f} s, "
              f"database {size / MiB:.0f} MiB")
        with Casebook.open(root) as book:
            built = similar.refresh(book, fields)
            edges = book.db.execute("SELECT count(*) FROM sim_edges").fetchone()[0]
        print(f"similar index: {built.total} reports in {built.seconds:.1f} s (full), {edges} pairs "
              f"kept, {built.groups} groups")
        more = corpus_mod.generate(22, args.more, campaigns=2)
        with Casebook.open(root) as book:
            ids += corpus_mod.fill(book, more, seed=99)
            step = similar.refresh(book, fields)
        print(f"incremental: {step.added} reports in {step.seconds:.2f} s (full: {step.full})")
        size = (root / "casebook.sqlite3").stat().st_size
        results.append(Result(
            "patterns", f"similar-reports index, full build at {built.total} reports", built.seconds,
            "s", f"incremental refresh of {step.added} more", step.seconds,
            built.seconds / max(step.seconds, 1e-9), "recorded", True,
            {"pairs kept": edges, "groups": built.groups, "database MiB": size / MiB}))

        state = ServeState(root=root, host="127.0.0.1", port=47001, token=secrets.token_hex(8),
                           signing_key=None, run_id=secrets.token_hex(8), fields=fields)
        app = create_app(state)
        client = app.test_client()
        precompute = app.extensions["casebook_precompute"]
        base = state.origin
        assert client.get(f"/login?token={state.token}", base_url=base).status_code == 303
        rng = random.Random(5)  # noqa: S311 - which pages to time
        with Casebook.open(root) as book:
            grouped = [r[0] for r in book.db.execute("SELECT case_id FROM sim_members LIMIT 2000")]
            group_ids = [r[0] for r in book.db.execute(
                "SELECT id FROM sim_groups ORDER BY size DESC LIMIT 3")]
        cases = [f"/case/{c}" for c in rng.sample(ids, 6) + rng.sample(grouped, min(4, len(grouped)))]
        pattern_paths = cases + [
            "/groups", "/groups?kind=spam", "/groups?page=3", *[f"/groups/{g}" for g in group_ids],
            "/spikes", "/charts", "/charts?period=week",
            *[f"/charts/{c}.svg" for c in ("reports-category", "reports-place", "ack", "open")],
            "/charts/reports-place.svg?period=week", "/charts/reports-category.csv",
            "/?a_province=pichincha", "/?a_month=2025-11&category=medication",
            "/search?q=insulina&a_province=guayas"]
        baseline_paths = ["/", "/?sort=ack&dir=asc", "/?category=medication", "/?page=200"]
        # The cold costs. Charts and spikes are computed in the background (web/precompute.py):
        # the first request after a change answers at once that they are being computed and
        # starts the computation; the first requests once it is done draw the SVG.
        cold = {}
        for path in ("/spikes", "/charts"):
            t0 = time.perf_counter()
            answer = client.get(path, base_url=base)
            assert answer.status_code == 200 and "Refresh" in answer.headers
            cold[path + " (being computed)"] = round((time.perf_counter() - t0) * 1000, 1)
        t0 = time.perf_counter()
        assert precompute.wait(600)
        waited = time.perf_counter() - t0
        cold["background computation s"] = round(precompute.seconds or 0.0, 2)
        print(f"charts and spikes computed in the background in {precompute.seconds:.2f} s "
              f"(ready {waited:.2f} s after the first request)")
        for path in ("/spikes", "/charts", "/charts/reports-category.svg"):
            t0 = time.perf_counter()
            answer = client.get(path, base_url=base)
            assert answer.status_code == 200 and "Refresh" not in answer.headers
            cold[path] = round((time.perf_counter() - t0) * 1000, 1)
        base_timings, _ = time_pages(client, base, baseline_paths, args.rounds)
        timings, per_path = time_pages(client, base, pattern_paths, args.rounds)
        p95, base_p95 = percentile(timings, 95), percentile(base_timings, 95)
        worst = max(per_path, key=lambda p: per_path[p])
        print(f"inbox (baseline): p95 {base_p95:.1f} ms; pattern pages: p95 {p95:.1f} ms, slowest "
              f"{worst} (p95 {per_path[worst]:.1f} ms); first requests {cold}")
        results.append(Result(
            "patterns", f"pattern pages p95 at {len(ids)} reports (full page)", p95, "ms",
            "inbox page p95, same run", base_p95, p95 / base_p95 if base_p95 else 0.0,
            f"< {PAGE_P95_MS:.0f} ms", per_path[worst] < PAGE_P95_MS,
            {"median ms": median(timings), "first request ms": cold,
             "per path p95 ms": {p: round(v, 1) for p, v in per_path.items()}}))
    for result in results:
        emit(result)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
