# SPDX-License-Identifier: AGPL-3.0-or-later
"""The structured answers of each report (docs/protocol.md section 2, ``fields``) in the casebook,
and what the deployment's questionnaire says about them (whistle.core.questionnaire): which
questions are the place (coarsest first) and the month.

Answers are stored at import, one row per question, with a folded ``key`` for grouping and
filtering: accents, capitals and runs of spaces do not matter, so a free-text facility typed
"Hospital  Andrade Marín" and "hospital andrade marin" count as one place. Pages show the value
as the source gave it (escaped, as every text a stranger wrote).
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from whistle.core.questionnaire import Questionnaire, QuestionnaireError, load_questionnaire
from whistle.workstation.casebook.store import Casebook, CasebookError

_SPACES = re.compile(r"\s+")
# A place or month filter value in a query string (a folded key): bounded, never trusted.
MAX_KEY = 200
# Place levels shown in the filters, the spikes and the charts, when the questionnaire has none:
# the default questionnaire's ids.
DEFAULT_PLACE_FIELDS = ("province", "facility")
DEFAULT_MONTH_FIELD = "month"


def fold(value: str) -> str:
    """An answer folded for grouping: NFKD without combining marks, casefolded, spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", value)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", bare.casefold()).strip()[:MAX_KEY]


def store(db: sqlite3.Connection, case_id: str, answers: Mapping[str, str]) -> None:
    """Record a report's answers (the envelope already checked ids and lengths); an answer
    recorded before is kept (importing the same bundle again changes nothing)."""
    db.executemany("INSERT OR IGNORE INTO answers (case_id, field, value, key) VALUES (?, ?, ?, ?)",
                   [(case_id, field, value, fold(value)) for field, value in answers.items()
                    if value.strip()])


@dataclass(frozen=True)
class Fields:
    """The questionnaire as the casebook's analysis uses it."""

    questionnaire: Questionnaire | None
    place_fields: tuple[str, ...]
    month_field: str

    def label(self, field: str, lang: str) -> str:
        """A question's label in ``lang``, else its id."""
        q = self.questionnaire.question(field) if self.questionnaire else None
        return q.label(lang) if q else field

    def answer_label(self, field: str, value: str, lang: str) -> str:
        """An answer as a person reads it (a choice's label), else the value."""
        q = self.questionnaire.question(field) if self.questionnaire else None
        return q.answer_label(value, lang) if q else value

    @property
    def publish_place_field(self) -> str | None:
        """The place question the transparency file may count by (None: places are not published)."""
        return self.questionnaire.publish_place_field if self.questionnaire else None


def fields_of(questionnaire: Questionnaire | None) -> Fields:
    """The place and month ids of ``questionnaire``; the default ids when it names none."""
    if questionnaire is None:
        return Fields(None, DEFAULT_PLACE_FIELDS, DEFAULT_MONTH_FIELD)
    return Fields(questionnaire, questionnaire.place_fields or DEFAULT_PLACE_FIELDS,
                  questionnaire.month_field or DEFAULT_MONTH_FIELD)


def load_fields(path: str | Path | None) -> Fields:
    """The questionnaire at ``path`` (None: the one shipped with whistle), as :class:`Fields`;
    an invalid file raises :class:`CasebookError` with its one-line reason."""
    try:
        return fields_of(load_questionnaire(Path(path) if path else None))
    except QuestionnaireError as exc:
        raise CasebookError(str(exc)) from exc


def of_case(book: Casebook, case_id: str, fields: Fields) -> list[tuple[str, str]]:
    """A case's answers as (question id, value): the questionnaire's order, then any other id."""
    rows = dict(book.db.execute("SELECT field, value FROM answers WHERE case_id = ?", (case_id,)))
    order = [q.id for q in fields.questionnaire.questions] if fields.questionnaire else []
    known = [(f, rows[f]) for f in order if f in rows]
    return known + sorted((f, v) for f, v in rows.items() if f not in order)


def choices(book: Casebook, field: str, limit: int = 300) -> list[tuple[str, str, int]]:
    """The answers given to ``field``: (key, a value as given, how many cases), most frequent
    first (for a filter's list)."""
    return [(r[0], r[1], int(r[2])) for r in book.db.execute(
        "SELECT key, min(value), count(*) AS n FROM answers WHERE field = ? GROUP BY key "
        "ORDER BY n DESC, key LIMIT ?", (field, limit))]
