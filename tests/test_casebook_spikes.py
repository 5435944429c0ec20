# SPDX-License-Identifier: AGPL-3.0-or-later
"""Spikes (whistle/workstation/casebook/spikes.py): planted spikes are found, flat noise gives
none, and the Poisson tail is right."""

from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path

import pytest
from support import CASEBOOK_PORT, casebook_client

from whistle.workstation.casebook import spikes, store
from whistle.workstation.casebook.answers import load_fields
from whistle.workstation.casebook.answers import store as store_answers
from whistle.workstation.casebook.store import Casebook

TODAY = dt.date(2026, 6, 20)
FIELDS = load_fields(None)
CATEGORIES = ("poor_service", "medication", "irregularities", "corruption", "other")
PROVINCES = ("pichincha", "guayas", "azuay", "manabi", "loja", "el_oro")
FACILITIES = ("Hospital General Manta", "Hospital Carlos Andrade Marín", "Dispensario Loja",
              "Centro de Salud Cuenca")


def _poisson(rng: random.Random, rate: float) -> int:
    # Knuth's method: fine for the small rates used here.
    limit, k, p = math.exp(-rate), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _fill(book: Casebook, seed: int, planted: list[tuple[str, str, str, str, int]]) -> None:
    """Twelve months of flat Poisson noise per category × province × facility (each cell its own
    rate), plus ``planted`` extra reports: (category, province, facility, month, count)."""
    rng = random.Random(seed)  # noqa: S311 - generated test data, not secrets
    rows: list[tuple[str, str, str, str]] = []
    start = dt.date(2025, 7, 1)
    for category in CATEGORIES:
        for province in PROVINCES:
            rate = rng.uniform(0.2, 3.0)
            facility = rng.choice(FACILITIES)
            for m in range(12):
                month = spikes.month_add(start.strftime("%Y-%m"), m)
                for _ in range(_poisson(rng, rate)):
                    rows.append((category, province, facility, month))
    for category, province, facility, month, count in planted:
        rows += [(category, province, facility, month)] * count
    db = book.db
    db.execute("BEGIN")
    for n, (category, province, facility, month) in enumerate(rows):
        day = f"{month}-{rng.randint(1, 28):02d}"
        if day > TODAY.isoformat():
            day = TODAY.isoformat()
        cid = f"{seed:04x}{n:012x}"
        db.execute("INSERT INTO cases (id, received_on, status, status_on, channel, category, "
                   "manifest_key, ack_due, feedback_due, last_activity) VALUES (?,?,?,?,?,?,?,?,?,?)",
                   (cid, day, "received", day, "browser", category, "x", day, day, day))
        store_answers(db, cid, {"province": province, "facility": facility})
    db.execute("COMMIT")


def test_casebook_spikes_binomial_tail() -> None:
    assert spikes.binomial_tail(0, 5, 0.3) == 1.0
    assert spikes.binomial_tail(6, 5, 0.3) == 0.0
    assert spikes.binomial_tail(1, 4, 0.5) == pytest.approx(1 - 0.5**4)
    exact = sum(math.comb(20, k) * (1 / 7) ** k * (6 / 7) ** (20 - k) for k in range(9, 21))
    assert spikes.binomial_tail(9, 20, 1 / 7) == pytest.approx(exact, rel=1e-9)
    assert 0 < spikes.binomial_tail(60, 60, 1 / 7) < 1e-40


def test_casebook_spikes_planted_are_found(tmp_path: Path) -> None:
    planted = [("medication", "manabi", "Hospital General Manta", "2026-06", 14),
               ("corruption", "loja", "Dispensario Loja", "2026-05", 12)]
    with Casebook.open(tmp_path / "cb") as book:
        _fill(book, 1, planted)
        result = spikes.find_spikes(book, FIELDS, TODAY)
    found = {(s.category, s.field, s.key, s.month) for s in result.spikes}
    assert ("medication", "province", "manabi", "2026-06") in found
    assert ("corruption", "province", "loja", "2026-05") in found
    assert result.months == ["2026-04", "2026-05", "2026-06"] and result.tested > 100
    assert result.threshold == pytest.approx(spikes.ALPHA / result.tested)
    for spike in result.spikes:
        assert spike.p_value < result.threshold and spike.count >= spikes.MIN_COUNT
        assert spike.count >= spikes.MIN_RATIO * max(spike.baseline, spikes.MIN_RATE)
    # Only cells touched by a planted spike are listed: the noise stays quiet.
    assert {(s.category, s.month) for s in result.spikes} <= {("medication", "2026-06"),
                                                              ("corruption", "2026-05")}


@pytest.mark.parametrize("seed", range(2, 12))
def test_casebook_spikes_flat_noise_gives_none(tmp_path: Path, seed: int) -> None:
    with Casebook.open(tmp_path / "cb") as book:
        _fill(book, seed, [])
        result = spikes.find_spikes(book, FIELDS, TODAY)
    assert result.spikes == [], result.spikes


def test_casebook_spikes_page_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "today", lambda: TODAY)
    root = tmp_path / "cb"
    with Casebook.open(root) as book:
        _fill(book, 1, [("medication", "manabi", "Hospital General Manta", "2026-06", 14)])
    client, _ = casebook_client(root)
    # Computed in the background (web/precompute.py): wait for it, as a reload would.
    assert client.application.extensions["casebook_precompute"].wait(60)
    html = client.get("/spikes?lang=en", base_url=f"http://127.0.0.1:{CASEBOOK_PORT}").get_data(as_text=True)
    assert "binomial" in html and "Bonferroni" in html
    assert "Manabí" in html and "a_province=manabi" in html and "2026-06" in html
