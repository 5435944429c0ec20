# SPDX-License-Identifier: AGPL-3.0-or-later
"""The charts' numbers and the spikes, computed ahead in a background thread.

At 100,000 reports the six charts take seconds to count and the spikes most of one: a page that
counted them on its first view after an import made the investigator wait. ``serve`` starts a
:class:`Precomputer` that computes them at once and again whenever the casebook changes (an import
or a reply in another process, a refresh of the similar-reports index, a new day): it looks every
few seconds. A page takes the numbers of the casebook's present state or, while they are being
computed, says so and asks to be reloaded; it never counts them itself.

Every result is kept with the **stamp** of the casebook state it was computed from: the
casebook's own random id (``meta.casebook_id``, made once per casebook, so that a casebook made
anew in the same folder is another one) and what changes when its numbers may change (the last
item imported, the last reply written, the last bundle imported, the day). A result is shown only
while the stamp of the casebook the page reads is the same: never the numbers of another casebook,
nor those from before an import.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from whistle.workstation.casebook import answers, charts, spikes, store
from whistle.workstation.casebook.answers import Fields
from whistle.workstation.casebook.store import Casebook

# How often ``serve``'s thread looks for a change made by another process.
POLL_SECONDS = 5.0
# Values made on demand (an SVG, a filter's choices) kept per stamp.
MAX_MEMO = 64

Stamp = tuple[str, int, int, int, int]


def stamp_of(cb: Casebook) -> Stamp:
    """The casebook's identity and what changes when its numbers may change."""
    row = cb.db.execute(
        "SELECT (SELECT value FROM meta WHERE key = 'casebook_id'), "
        "(SELECT coalesce(max(rowid), 0) FROM items), (SELECT coalesce(max(id), 0) FROM replies), "
        "(SELECT coalesce(max(id), 0) FROM bundles)").fetchone()
    return (str(row[0] or cb.root), int(row[1]), int(row[2]), int(row[3]), store.today().toordinal())


def compute(cb: Casebook, fields: Fields) -> dict[Hashable, Any]:
    """Everything the pattern pages show that takes long to count: each chart's numbers for each
    period (without words: the page puts them in its language), the spikes, the place choices."""
    today = store.today()
    out: dict[Hashable, Any] = {("spikes",): spikes.find_spikes(cb, fields, today)}
    for chart_id in charts.CHART_IDS:
        for period in charts.PERIODS:
            if chart_id.startswith("reports-") or period == charts.PERIODS[0]:
                out[("chart", chart_id, period)] = charts.numbers(cb, fields, chart_id, period, today)
            else:  # the same for every period
                out[("chart", chart_id, period)] = out[("chart", chart_id, charts.PERIODS[0])]
    for field in fields.place_fields:
        out[("choices", field)] = answers.choices(cb, field)
    return out


class Precomputer:
    """The background computation for one casebook folder, and its results."""

    def __init__(self, root: Path, fields: Fields) -> None:
        self.root = root
        self.fields = fields
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll: float | None = None
        self._stamp: Stamp | None = None
        self._results: dict[Hashable, Any] = {}
        self._memo: dict[Hashable, Any] = {}
        self._error = ""
        # How long the last computation took (seconds), for the bench and the log.
        self.seconds: float | None = None

    # --- pages -------------------------------------------------------------------------------

    def lookup(self, cb: Casebook, key: Hashable) -> tuple[Stamp, Any] | None:
        """The result for the state of the casebook ``cb`` reads, with that state's stamp; None
        while it is being computed (the computation is started if it is not running)."""
        stamp = stamp_of(cb)
        with self._lock:
            if self._stamp == stamp:
                if self._error:
                    raise RuntimeError(f"the casebook's charts could not be computed: {self._error}")
                if key in self._results:
                    return stamp, self._results[key]
        self.kick()
        return None

    def get(self, cb: Casebook, key: Hashable) -> Any | None:
        """The result alone (see :meth:`lookup`)."""
        found = self.lookup(cb, key)
        return None if found is None else found[1]

    def memo(self, stamp: Stamp, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()`` once per casebook state (or the precomputed result of that key): ``stamp``
        is the state ``make`` reads (a value derived from a result: the result's stamp)."""
        with self._lock:
            if self._stamp == stamp and key in self._results:
                return self._results[key]
            if (stamp, key) in self._memo:
                return self._memo[(stamp, key)]
        value = make()
        with self._lock:
            if len(self._memo) >= MAX_MEMO:
                self._memo.clear()
            self._memo[(stamp, key)] = value
        return value

    # --- the thread --------------------------------------------------------------------------

    def kick(self) -> None:
        """Compute now (in the background) if the casebook changed since the last results."""
        with self._lock:
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="casebook-precompute",
                                                daemon=True)
                self._thread.start()

    def watch(self, every: float = POLL_SECONDS) -> None:
        """Compute now, then whenever the casebook changes, until :meth:`stop` (``serve``)."""
        self._poll = every
        self.kick()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread (after the computation it is in, if any)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def wait(self, timeout: float) -> bool:
        """Until the results of the casebook's present state exist (tests, the bench)."""
        deadline = time.monotonic() + timeout
        cb = Casebook.attach(self.root)
        try:
            while time.monotonic() < deadline:
                stamp = stamp_of(cb)
                with self._lock:
                    if self._stamp == stamp:
                        return True
                self.kick()
                time.sleep(0.02)
        finally:
            cb.db.close()
        return False

    def _work(self) -> None:
        cb = Casebook.attach(self.root)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                if stamp_of(cb) != self._stamp:
                    self._compute(cb)
                with self._lock:
                    if self._poll is None and not self._wake.is_set():
                        self._thread = None
                        return
                self._wake.wait(self._poll or 0)
        finally:
            cb.db.close()
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _compute(self, cb: Casebook) -> None:
        started = time.perf_counter()
        # One read transaction: every number comes from the same state, the stamp's.
        cb.db.execute("BEGIN")
        try:
            stamp = stamp_of(cb)
            try:
                results, error = compute(cb, self.fields), ""
            except Exception as exc:  # noqa: BLE001 - shown by the pages, not lost in a thread
                results, error = {}, f"{type(exc).__name__}: {exc}"
                print(f"whistle: the casebook's charts could not be computed: {error}", file=sys.stderr)
        finally:
            cb.db.execute("COMMIT")
        with self._lock:
            self._stamp, self._results, self._error = stamp, results, error
            self._memo.clear()
        self.seconds = time.perf_counter() - started
