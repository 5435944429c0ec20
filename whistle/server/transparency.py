# SPDX-License-Identifier: AGPL-3.0-or-later
"""The published transparency figures (docs/protocol.md section 10) on the server.

An administrator uploads the file ``whistle casebook publish`` wrote; :func:`accept` validates it
strictly against this deployment (its categories, the place level its questionnaire allows) and
stores it with an atomic write in the data folder, replacing the previous one only when the new
one is valid. :func:`published` reads it back for the public ``/transparencia`` page, validating
it again (a file edited on disk, or made stale by a change of categories, is not shown).
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from whistle.core.enums import ItemKind
from whistle.core.files import atomic_write
from whistle.core.transparency import MAX_BYTES, Transparency, TransparencyError, parse_transparency
from whistle.server.casework import add_months
from whistle.server.config import Config
from whistle.server.models import Item, Report

if TYPE_CHECKING:
    from whistle.server.state import State

FILE_NAME = "transparency.json"
_cache_lock = threading.Lock()
_cache: dict[Path, tuple[tuple[int, int], Transparency | None]] = {}


def path_of(config: Config) -> Path:
    return config.data_dir / FILE_NAME


def this_month(today: dt.date | None = None) -> str:
    day = today or dt.datetime.now(dt.UTC).date()
    return f"{day.year:04d}-{day.month:02d}"


def months_until(count: int, today: dt.date | None = None) -> tuple[str, ...]:
    """The ``count`` months ending with the current one, oldest first."""
    day = today or dt.datetime.now(dt.UTC).date()
    index = day.year * 12 + day.month - 1
    return tuple(f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index - count + 1, index + 1))


def validate(config: Config, raw: bytes, *, today: dt.date | None = None) -> Transparency:
    """``raw`` as a transparency file this deployment may publish, or :class:`TransparencyError`."""
    questionnaire = config.questionnaire
    place_field = questionnaire.publish_place_field
    place = questionnaire.question(place_field) if place_field else None
    return parse_transparency(
        raw,
        categories=config.category_codes,
        place_level=questionnaire.publish_place_level if place else None,
        place_codes=tuple(o.code for o in place.options) if place else (),
        current_month=this_month(today),
    )


def accept(config: Config, raw: bytes, *, today: dt.date | None = None) -> Transparency:
    """Validate ``raw`` and store it (atomically) as the published figures; on a refusal the file
    already published stays as it was."""
    if len(raw) > MAX_BYTES:
        raise TransparencyError(f"the file is larger than {MAX_BYTES} bytes")
    figures = validate(config, raw, today=today)
    atomic_write(path_of(config), raw, mode=0o640)
    return figures


def published(config: Config) -> Transparency | None:
    """The figures stored, validated again, or None when there are none (or they no longer fit
    this deployment). Parsed once per change of the file."""
    path = path_of(config)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    key = (stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        hit = _cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
    try:
        figures: Transparency | None = validate(config, path.read_bytes())
    except (TransparencyError, OSError):
        figures = None
    with _cache_lock:
        _cache[path] = (key, figures)
    return figures


@dataclass(frozen=True)
class LiveShare:
    """The server's own timeliness for reports received in ``month``: the shares acknowledged
    within the deadline and answered within the feedback deadline (None: fewer than the
    threshold due, or fewer than the threshold on one side of the share)."""

    month: str
    ack: float | None
    feedback: float | None


_live_lock = threading.Lock()
_live_cache: dict[tuple[str, tuple[str, ...], int, dt.date], tuple[LiveShare, ...]] = {}


def live_timeliness(state: State, months: tuple[str, ...], threshold: int,
                    today: dt.date | None = None) -> tuple[LiveShare, ...]:
    """Timeliness from what the server itself records — the day each report arrived, the day it
    was acknowledged, the day its first reply was imported — for ``months``. Only shares are
    given, never counts (a month's total could otherwise be set against the published category
    counts to recover a suppressed one), and only where at least ``threshold`` reports were due.
    Acknowledged in time: the status left "received", or a first reply arrived, within the
    acknowledgement deadline; answered in time: a first reply arrived within the feedback
    deadline, both counted from the day the server received the report. Computed once a day per
    process."""
    day = today or dt.datetime.now(dt.UTC).date()
    key = (str(state.config.data_dir), months, threshold, day)
    with _live_lock:
        if key in _live_cache:
            return _live_cache[key]
    if not months:
        return ()
    first, last = _month_bounds(months[0])[0], _month_bounds(months[-1])[1]
    config = state.config
    first_reply = (select(Item.report_id, func.min(Item.created_on).label("on"))
                   .where(Item.kind == ItemKind.REPLY.value).group_by(Item.report_id).subquery())
    query = (select(Report.received_on, Report.acknowledged_on, first_reply.c.on)
             .outerjoin(first_reply, first_reply.c.report_id == Report.id)
             .where(Report.received_on >= first, Report.received_on <= last))
    tally: dict[str, list[int]] = {m: [0, 0, 0, 0] for m in months}
    with state.sessions() as db:
        for received, acknowledged, replied in db.execute(query):
            month = f"{received.year:04d}-{received.month:02d}"
            if month not in tally:
                continue
            counts = tally[month]
            ack_due = received + dt.timedelta(days=config.ack_days)
            if ack_due < day:
                counts[0] += 1
                acks = [d for d in (acknowledged, replied) if d is not None]
                counts[1] += bool(acks) and min(acks) <= ack_due
            feedback_due = add_months(received, config.feedback_months)
            if feedback_due < day:
                counts[2] += 1
                counts[3] += replied is not None and replied <= feedback_due

    def share(due: int, in_time: int) -> float | None:
        return in_time / due if due >= threshold else None

    result = tuple(LiveShare(m, share(c[0], c[1]), share(c[2], c[3])) for m, c in tally.items())
    with _live_lock:
        if len(_live_cache) > 64:
            _live_cache.clear()
        _live_cache[key] = result
    return result


def _month_bounds(month: str) -> tuple[dt.date, dt.date]:
    year, mon = (int(x) for x in month.split("-"))
    start = dt.date(year, mon, 1)
    return start, add_months(start, 1) - dt.timedelta(days=1)
