# SPDX-License-Identifier: AGPL-3.0-or-later
"""Charts and spikes computed ahead (whistle/workstation/casebook/web/precompute.py): a page never
counts them itself (it shows the numbers of the casebook's present state, or says they are being
computed and asks to be reloaded), ``serve``'s thread recomputes them after a change made by
another process, and no page ever shows the numbers of another casebook."""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import casebook_corpus as corpus_mod
import pytest
from support import CASEBOOK_PORT, casebook_client

from whistle.workstation.casebook import store
from whistle.workstation.casebook.store import Casebook
from whistle.workstation.casebook.web import precompute

BASE = f"http://127.0.0.1:{CASEBOOK_PORT}"
TODAY = dt.date(2026, 6, 20)


def _fill(root: Path, seed: int, reports: int, category: str | None = None) -> int:
    """Generated reports into the casebook (another connection, as an import); how many."""
    corpus = corpus_mod.generate(seed, reports, campaigns=1, spam=0, start=dt.date(2025, 9, 1), days=280)
    if category is not None:
        for report in corpus.reports:
            report.category = category
    with Casebook.open(root) as book:
        corpus_mod.fill(book, corpus, seed=seed)
    return len(corpus.reports)


def _categories_shown(client: Any) -> dict[str, int]:
    """The reports per category the charts page shows (its CSV: series and their totals)."""
    text = client.get("/charts/reports-category.csv?lang=en", base_url=BASE).get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))[1:]
    return {row[0]: sum(int(v) for v in row[1:]) for row in rows}


@pytest.fixture(autouse=True)
def _today(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "today", lambda: TODAY)


def test_casebook_pages_do_not_wait_for_the_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the numbers are being computed the pages answer at once and say so; then they show
    them; after an import they never show the numbers from before it."""
    root = tmp_path / "cb"
    _fill(root, 1, 150)
    gate = threading.Event()
    real = precompute.compute

    def slow(cb: Casebook, fields: Any) -> Any:
        gate.wait(30)
        return real(cb, fields)

    monkeypatch.setattr(precompute, "compute", slow)
    client, _ = casebook_client(root)
    pre = client.application.extensions["casebook_precompute"]
    for path, words in (("/charts?lang=en", "The charts are being computed"),
                        ("/spikes?lang=en", "The spikes are being computed")):
        started = time.perf_counter()
        page = client.get(path, base_url=BASE)
        assert time.perf_counter() - started < 2
        assert page.status_code == 200 and words in page.get_data(as_text=True)
        assert page.headers["Refresh"] == "3"
    svg = client.get("/charts/ack.svg", base_url=BASE)
    assert svg.status_code == 503 and svg.headers["Retry-After"] == "3"
    assert client.get("/charts/ack.csv", base_url=BASE).status_code == 503
    gate.set()
    assert pre.wait(60)
    page = client.get("/charts?lang=en", base_url=BASE)
    html = page.get_data(as_text=True)
    assert "being computed" not in html and "Refresh" not in page.headers
    assert 'src="/charts/reports-category.svg?period=month"' in html
    spikes = client.get("/spikes?lang=en", base_url=BASE).get_data(as_text=True)
    assert "Bonferroni" in spikes and "being computed" not in spikes
    before = _categories_shown(client)
    # An import (another connection, as another process): the old numbers are not shown.
    gate.clear()
    added = _fill(root, 2, 40, category="corruption")
    assert "being computed" in client.get("/charts?lang=en", base_url=BASE).get_data(as_text=True)
    gate.set()
    assert pre.wait(60)
    after = _categories_shown(client)
    assert after["Corruption"] == before.get("Corruption", 0) + added


def test_casebook_serve_recomputes_after_a_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` watches the casebook: an import made by another process is counted without
    any page asking for it."""
    root = tmp_path / "cb"
    _fill(root, 3, 60)
    runs: list[tuple[Any, ...]] = []
    real = precompute.compute

    def counted(cb: Casebook, fields: Any) -> Any:
        runs.append(precompute.stamp_of(cb))
        return real(cb, fields)

    monkeypatch.setattr(precompute, "compute", counted)
    client, _ = casebook_client(root)
    pre = client.application.extensions["casebook_precompute"]
    pre.watch(every=0.05)
    try:
        deadline = time.monotonic() + 30
        while not runs and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert len(runs) == 1  # computed once at start, not again while nothing changes
        _fill(root, 4, 20)
        while len(runs) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(runs) == 2 and runs[1][1] > runs[0][1]
    finally:
        pre.stop()


def test_casebook_numbers_never_of_another_casebook(tmp_path: Path) -> None:
    """A casebook made anew in the same folder, with as many items (so the same last item, reply
    and day): the pages show its numbers, not those of the one before."""
    root = tmp_path / "cb"
    _fill(root, 5, 120, category="medication")
    client, _ = casebook_client(root)
    pre = client.application.extensions["casebook_precompute"]
    assert pre.wait(60)
    first = _categories_shown(client)
    assert set(first) == {"Medication not delivered"}
    with Casebook.open(root) as book:
        old = precompute.stamp_of(book)
    shutil.rmtree(root)
    _fill(root, 5, 120, category="corruption")
    with Casebook.open(root) as book:
        new = precompute.stamp_of(book)
    assert new[1:] == old[1:] and new[0] != old[0]  # only the casebook's id differs
    assert "being computed" in client.get("/charts?lang=en", base_url=BASE).get_data(as_text=True)
    assert pre.wait(60)
    assert set(_categories_shown(client)) == {"Corruption"}
    # Another app over another casebook, in the same process: each its own numbers.
    other = tmp_path / "other"
    _fill(other, 6, 80, category="other")
    client2, _ = casebook_client(other)
    assert client2.application.extensions["casebook_precompute"].wait(60)
    assert set(_categories_shown(client2)) == {"Other"}
    assert set(_categories_shown(client)) == {"Corruption"}
