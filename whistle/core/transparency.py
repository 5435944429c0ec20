# SPDX-License-Identifier: AGPL-3.0-or-later
"""The transparency file (docs/protocol.md section 10): suppressed aggregate counts that the unit
publishes with ``whistle casebook publish`` and the server shows on ``/transparencia``.

:func:`parse_transparency` is the strict reader: the server runs it on every upload, and a writer
can run it on what it wrote. It refuses, with one line naming the first problem, anything the
format does not allow — a text field beyond the documented codes, a count below the threshold,
a date finer than a month, a single suppressed count that subtraction would give away. Nothing
here imports outside the standard library.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from whistle.core.enums import Outcome
from whistle.core.errors import WhistleError

FORMAT = "whistle-transparency"
VERSION = 1
MAX_BYTES = 1024 * 1024
MAX_MONTHS = 120
MIN_THRESHOLD, MAX_THRESHOLD = 3, 1000
MAX_COUNT = 1_000_000_000
MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])\Z")
CODE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
MEASURES = ("received", "ack_due", "ack_in_time", "feedback_due", "feedback_in_time")
OUTCOMES = tuple(o.value for o in Outcome)
# Each row kind's keys besides "kind" and "count" (and "suppressed" when the count is withheld).
ROW_KEYS: Mapping[str, tuple[str, ...]] = {
    "reports": ("month", "category"),
    "timeliness": ("month", "measure"),
    "closed": ("outcome",),
    "places": ("level", "place"),
}


class TransparencyError(WhistleError):
    """The file is not a valid transparency file; the message is one line."""


@dataclass(frozen=True)
class Row:
    """One count; ``count`` is None when it is suppressed (below the threshold)."""

    kind: str
    key: tuple[str, ...]
    count: int | None


@dataclass(frozen=True)
class Transparency:
    """A validated transparency file."""

    period_from: str
    period_to: str
    threshold: int
    published_on: str
    rows: tuple[Row, ...]

    @property
    def months(self) -> tuple[str, ...]:
        return months_between(self.period_from, self.period_to)

    def of(self, kind: str) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.kind == kind)

    @cached_property
    def _index(self) -> dict[tuple[str, tuple[str, ...]], int | None]:
        return {(r.kind, r.key): r.count for r in self.rows}

    def count(self, kind: str, *key: str) -> int | None:
        """A row's count (None: suppressed or absent)."""
        return self._index.get((kind, key))

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories of the ``reports`` rows, in order of first appearance."""
        return tuple(dict.fromkeys(r.key[1] for r in self.of("reports")))


def month_index(month: str) -> int:
    year, mon = month.split("-")
    return int(year) * 12 + int(mon) - 1


def months_between(first: str, last: str) -> tuple[str, ...]:
    """Every ``YYYY-MM`` from ``first`` to ``last`` included."""
    return tuple(f"{i // 12:04d}-{i % 12 + 1:02d}"
                 for i in range(month_index(first), month_index(last) + 1))


def parse_transparency(
    raw: bytes,
    *,
    categories: Iterable[str],
    place_level: str | None = None,
    place_codes: Iterable[str] = (),
    current_month: str | None = None,
) -> Transparency:
    """Read and validate a transparency file against the deployment: ``categories`` (its
    category codes), ``place_level`` and ``place_codes`` (what its questionnaire allows to
    publish; None: no places) and ``current_month`` (``YYYY-MM``: no month may be later)."""
    if len(raw) > MAX_BYTES:
        raise TransparencyError(f"the file is larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TransparencyError("the file is not UTF-8 JSON (or repeats a key)") from None
    if not isinstance(doc, dict):
        raise TransparencyError("the file is not a JSON object")
    _exact(doc, ("format", "v", "period", "threshold", "published_on", "series"), "the file")
    if doc["format"] != FORMAT:
        raise TransparencyError(f"format must be {FORMAT!r}")
    if type(doc["v"]) is not int or doc["v"] != VERSION:
        raise TransparencyError(f"v must be the integer {VERSION}")
    period = doc["period"]
    if not isinstance(period, dict):
        raise TransparencyError("period must be an object")
    _exact(period, ("from", "to"), "period")
    first = _month(period["from"], "period.from")
    last = _month(period["to"], "period.to")
    published = _month(doc["published_on"], "published_on")
    if not month_index(first) <= month_index(last) <= month_index(published):
        raise TransparencyError("period.from, period.to and published_on must be in that order")
    if month_index(last) - month_index(first) + 1 > MAX_MONTHS:
        raise TransparencyError(f"the period is longer than {MAX_MONTHS} months")
    if current_month is not None and month_index(published) > month_index(current_month):
        raise TransparencyError(f"published_on {published} is in the future")
    threshold = doc["threshold"]
    if type(threshold) is not int or not MIN_THRESHOLD <= threshold <= MAX_THRESHOLD:
        raise TransparencyError(f"threshold must be an integer from {MIN_THRESHOLD} to {MAX_THRESHOLD}")
    series = doc["series"]
    if not isinstance(series, list):
        raise TransparencyError("series must be a list")
    months = months_between(first, last)
    allowed = {
        "month": set(months),
        "category": set(categories),
        "measure": set(MEASURES),
        "outcome": set(OUTCOMES),
        "level": {place_level} if place_level else set(),
        "place": set(place_codes) if place_level else set(),
    }
    rows: list[Row] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for n, item in enumerate(series):
        row = _row(item, f"series[{n}]", threshold, allowed)
        if (row.kind, row.key) in seen:
            raise TransparencyError(f"series[{n}]: the same {row.kind} row appears twice")
        seen.add((row.kind, row.key))
        rows.append(row)
    result = Transparency(first, last, threshold, published, tuple(rows))
    _check_complete(result, allowed)
    _check_consistent(result)
    return result


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("duplicate key")
    return doc


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _exact(obj: Mapping[str, object], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in obj]
    extra = sorted(set(obj) - set(keys))
    if missing:
        raise TransparencyError(f"{where}: missing key {missing[0]!r}")
    if extra:
        raise TransparencyError(f"{where}: unexpected key {extra[0][:40]!r}")


def _month(value: object, where: str) -> str:
    if not isinstance(value, str) or not MONTH.match(value):
        raise TransparencyError(f"{where} must be a month written YYYY-MM (nothing finer)")
    return value


def _row(item: object, where: str, threshold: int, allowed: Mapping[str, set[str]]) -> Row:
    if not isinstance(item, dict):
        raise TransparencyError(f"{where}: a row is an object")
    kind = item.get("kind")
    if not isinstance(kind, str) or kind not in ROW_KEYS:
        raise TransparencyError(f"{where}: kind must be one of {', '.join(ROW_KEYS)}")
    fields = ROW_KEYS[kind]
    suppressed = "suppressed" in item
    _exact(item, ("kind", *fields, "count", *(("suppressed",) if suppressed else ())), where)
    key: list[str] = []
    for name in fields:
        value = item[name]
        if name == "month":
            value = _month(value, f"{where}: month")
        elif not isinstance(value, str) or not CODE.match(value):
            raise TransparencyError(f"{where}: {name} must be a code")
        if value not in allowed[name]:
            shown = value if len(value) <= 40 else value[:40] + "…"
            raise TransparencyError(f"{where}: {name} {shown!r} is not one this server publishes")
        key.append(value)
    count = item["count"]
    if suppressed:
        if item["suppressed"] is not True or count is not None:
            raise TransparencyError(f"{where}: a suppressed row has \"count\": null, \"suppressed\": true")
        return Row(kind, tuple(key), None)
    if type(count) is not int:
        raise TransparencyError(f"{where}: count must be an integer (or null, suppressed)")
    if count < threshold:
        raise TransparencyError(f"{where}: count {count} is below the threshold {threshold} "
                                "and not suppressed")
    if count > MAX_COUNT:
        raise TransparencyError(f"{where}: count is larger than {MAX_COUNT}")
    return Row(kind, tuple(key), count)


def _check_complete(t: Transparency, allowed: Mapping[str, set[str]]) -> None:
    reports = {r.key for r in t.of("reports")}
    cats = t.categories
    for month in t.months:
        for cat in cats:
            if (month, cat) not in reports:
                raise TransparencyError(f"reports: no row for {month} and category {cat!r}")
    timeliness = {r.key for r in t.of("timeliness")}
    for month in t.months:
        for measure in MEASURES:
            if (month, measure) not in timeliness:
                raise TransparencyError(f"timeliness: no row for {month} and measure {measure!r}")
    closed = {r.key for r in t.of("closed")}
    for outcome in OUTCOMES:
        if (outcome,) not in closed:
            raise TransparencyError(f"closed: no row for outcome {outcome!r}")
    places = {r.key for r in t.of("places")}
    if places:
        (level,) = allowed["level"]
        for place in sorted(allowed["place"]):
            if (level, place) not in places:
                raise TransparencyError(f"places: no row for {place!r}")


def _check_consistent(t: Transparency) -> None:
    by_month: dict[str, list[int | None]] = defaultdict(list)
    for r in t.of("reports"):
        by_month[r.key[0]].append(r.count)
    for month in t.months:
        received = t.count("timeliness", month, "received")
        counts = by_month.get(month, [])
        if received is None:
            continue
        if sum(1 for c in counts if c is None) == 1:
            raise TransparencyError(f"reports of {month}: exactly one suppressed count with the "
                                    "month's total shown (suppress another: docs/protocol.md 10)")
        if sum(c for c in counts if c is not None) > received:
            raise TransparencyError(f"reports of {month}: the shown counts add up to more than "
                                    "the month's received total")
        for due in ("ack_due", "feedback_due"):
            d = t.count("timeliness", month, due)
            if d is not None and d > received:
                raise TransparencyError(f"timeliness of {month}: {due} is more than received")
    for month in t.months:
        for due, in_time in (("ack_due", "ack_in_time"), ("feedback_due", "feedback_in_time")):
            d, i = t.count("timeliness", month, due), t.count("timeliness", month, in_time)
            if d is not None and i is not None and i > d:
                raise TransparencyError(f"timeliness of {month}: {in_time} is more than {due}")
