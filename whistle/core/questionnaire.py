# SPDX-License-Identifier: AGPL-3.0-or-later
"""The deployment's structured questions: a small TOML file, read once, validated strictly.

A report's free text stays the heart of it; these optional questions (where, when, which
medication, whether money was demanded) let the unit find patterns offline. The answers travel only
inside the sealed envelope as ``fields`` (docs/protocol.md section 2); the server validates a
JavaScript-off form's answers with :meth:`Questionnaire.validate_answers` before sealing them and
the workstation labels them with the same file. docs/deploy.md documents the format; the default
(``whistle/core/questionnaires/default.toml``) fits an IESS-like deployment.

The file, format 1::

    format = 1

    [transparency]                    # optional
    place_level = "province"          # the finest place the public transparency page may show

    [[question]]
    id = "province"                   # ^[a-z][a-z0-9_]{0,31}$, unique in the file
    type = "choice"                   # choice | text | month | yesno
    categories = ["medication"]       # optional: the category codes that ask it (default: all)
    role = "place"                    # optional: "place" (needs level) or "month"
    level = "province"                # with role = "place": "province" or "facility"
    label = { es = "Provincia", en = "Province" }
    help = { es = "…", en = "…" }     # optional
    options = [ { code = "azuay", label = "Azuay" }, … ]   # choice only; label: text or {es, en}
    suggestions = "facilities.txt"    # text only, optional: one suggestion a line, beside this file

Answers: a choice is an option's code; a text at most 200 characters on one line; a month
``YYYY-MM``; a yes/no question ``yes``, ``no`` or ``unknown``. Every question is optional. Nothing
here imports outside the standard library: the workstation reads the same file.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from whistle.core.errors import WhistleError

FORMAT = 1
DEFAULT_PATH = Path(__file__).resolve().parent / "questionnaires" / "default.toml"
QUESTION_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
TYPES = ("choice", "text", "month", "yesno")
ROLES = ("place", "month")
# Place levels, coarsest first: the order of :attr:`Questionnaire.place_fields`.
PLACE_LEVELS = ("province", "facility")
LANGS = ("es", "en")
YESNO = ("yes", "no", "unknown")
YESNO_LABELS: Mapping[str, Mapping[str, str]] = {
    "yes": {"es": "Sí", "en": "Yes"},
    "no": {"es": "No", "en": "No"},
    "unknown": {"es": "No sé", "en": "I don't know"},
}
# The envelope's bounds (docs/protocol.md section 2): at most 32 answers of at most 200 characters.
MAX_QUESTIONS = 32
MAX_ANSWER_CHARS = 200
MAX_LABEL_CHARS = 200
MAX_HELP_CHARS = 500
MAX_OPTIONS = 500
MAX_SUGGESTIONS = 5000
MAX_FILE_BYTES = 1024 * 1024
MONTH = re.compile(r"^(\d{4})-(\d{2})\Z")
MIN_YEAR = 1990
MAX_YEAR = 2100
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class QuestionnaireError(WhistleError):
    """The questionnaire file is invalid; the message is one line naming the file and the problem."""


class AnswerError(WhistleError):
    """An answer was refused; ``question_id`` names the question (None: not a question at all)."""

    def __init__(self, message: str, question_id: str | None = None) -> None:
        super().__init__(message)
        self.question_id = question_id


# Builds the one-line error naming the file (passed to the helpers below).
_Fail = Callable[[str], "QuestionnaireError"]


@dataclass(frozen=True)
class Option:
    """One choice: the code stored in the envelope and its label in each language."""

    code: str
    labels: Mapping[str, str]

    def label(self, lang: str) -> str:
        return self.labels.get(lang) or self.labels["es"]


@dataclass(frozen=True)
class Question:
    """One optional question of the questionnaire."""

    id: str
    type: str
    labels: Mapping[str, str]
    help: Mapping[str, str] = field(default_factory=dict)
    categories: tuple[str, ...] | None = None  # None: every category asks it
    role: str | None = None
    level: str | None = None
    options: tuple[Option, ...] = ()
    suggestions: tuple[str, ...] = ()

    def label(self, lang: str) -> str:
        return self.labels.get(lang) or self.labels["es"]

    def help_text(self, lang: str) -> str:
        return self.help.get(lang) or self.help.get("es", "")

    def applies_to(self, category: str) -> bool:
        return self.categories is None or category in self.categories

    def choices(self, lang: str) -> tuple[tuple[str, str], ...]:
        """(code, label) of a choice's options or a yes/no question's three answers."""
        if self.type == "yesno":
            return tuple((code, YESNO_LABELS[code][lang if lang in LANGS else "es"]) for code in YESNO)
        return tuple((o.code, o.label(lang)) for o in self.options)

    def answer_label(self, value: str, lang: str) -> str:
        """An answer as a person reads it: a choice's label, otherwise the value itself."""
        return dict(self.choices(lang)).get(value, value) if self.type in ("choice", "yesno") else value

    def check(self, value: str) -> str:
        """The answer normalised (NFC, trimmed), or raise :class:`AnswerError`."""
        text = unicodedata.normalize("NFC", value).strip()
        if self.type == "choice":
            if text not in {o.code for o in self.options}:
                raise AnswerError(f"{self.id}: not one of the choices", self.id)
        elif self.type == "yesno":
            if text not in YESNO:
                raise AnswerError(f"{self.id}: must be yes, no or unknown", self.id)
        elif self.type == "month":
            if not is_month(text):
                raise AnswerError(f"{self.id}: must be a month written YYYY-MM", self.id)
        else:
            if len(text) > MAX_ANSWER_CHARS:
                raise AnswerError(f"{self.id}: longer than {MAX_ANSWER_CHARS} characters", self.id)
            if _CONTROL.search(text):
                raise AnswerError(f"{self.id}: must be one line of text", self.id)
        return text


def is_month(text: str) -> bool:
    """``YYYY-MM`` with a year from 1990 to 2100 and a month from 01 to 12."""
    m = MONTH.match(text)
    return m is not None and MIN_YEAR <= int(m.group(1)) <= MAX_YEAR and 1 <= int(m.group(2)) <= 12


@dataclass(frozen=True)
class Questionnaire:
    """The deployment's questions, in file order. Build it with :func:`load_questionnaire`."""

    questions: tuple[Question, ...] = ()
    source: str = "<none>"
    publish_place_level: str | None = None

    def question(self, question_id: str) -> Question | None:
        return next((q for q in self.questions if q.id == question_id), None)

    def questions_for(self, category: str) -> tuple[Question, ...]:
        """The questions a report of ``category`` asks, in file order."""
        return tuple(q for q in self.questions if q.applies_to(category))

    @property
    def categories_named(self) -> frozenset[str]:
        """Every category code some question names (the server checks they all exist)."""
        return frozenset(c for q in self.questions for c in (q.categories or ()))

    @property
    def place_fields(self) -> tuple[str, ...]:
        """The ids of the place questions, coarsest level first (province, then facility)."""
        places = [q for q in self.questions if q.role == "place"]
        return tuple(q.id for q in sorted(places, key=lambda q: PLACE_LEVELS.index(q.level or "")))

    @property
    def month_field(self) -> str | None:
        """The id of the question that asks the month, or None."""
        return next((q.id for q in self.questions if q.role == "month"), None)

    @property
    def publish_place_field(self) -> str | None:
        """The place question the transparency file may count by (a choice at the allowed level)."""
        if self.publish_place_level is None:
            return None
        return next((q.id for q in self.questions
                     if q.role == "place" and q.level == self.publish_place_level), None)

    def groups(self, categories: Iterable[str]) -> list[tuple[tuple[str, ...] | None, list[Question]]]:
        """Questions grouped by the categories that ask them, for a form without script: first the
        questions every category asks (key None), then each set of categories in file order."""
        known = tuple(categories)
        out: dict[tuple[str, ...] | None, list[Question]] = {}
        for q in self.questions:
            key = None if q.categories is None else tuple(c for c in known if c in q.categories)
            if key == ():
                continue
            out.setdefault(key, []).append(q)
        return sorted(out.items(), key=lambda kv: kv[0] is not None)

    def check_categories(self, codes: Iterable[str]) -> None:
        """Raise :class:`QuestionnaireError` if a question names a category not in ``codes`` (the
        deployment's categories): a typo would otherwise silently never ask the question."""
        unknown = sorted(self.categories_named - set(codes))
        if unknown:
            raise QuestionnaireError(f"questionnaire {self.source}: category {unknown[0]!r} is not one "
                                     "of the deployment's categories (WHISTLE_CATEGORIES)")

    def validate_answers(self, category: str, answers: Mapping[str, str]) -> dict[str, str]:
        """The answers a report of ``category`` may carry, normalised, in questionnaire order.

        Empty answers are dropped (every question is optional); an id this category does not ask,
        or a value its question does not allow, raises :class:`AnswerError`.
        """
        asked = {q.id: q for q in self.questions_for(category)}
        for key in answers:
            if key not in asked:
                raise AnswerError(f"{key!r} is not a question of category {category!r}", None)
        out: dict[str, str] = {}
        for qid, q in asked.items():
            raw = answers.get(qid)
            if raw is None:
                continue
            if not isinstance(raw, str):
                raise AnswerError(f"{qid}: an answer is text", qid)
            if not raw.strip():
                continue
            out[qid] = q.check(raw)
        return out


def load_questionnaire(path: Path | None) -> Questionnaire:
    """Read and validate the questionnaire at ``path`` (None: the default shipped with whistle).

    Raises :class:`QuestionnaireError` with one line that names the file and what to fix.
    """
    path = DEFAULT_PATH if path is None else path
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise QuestionnaireError(f"questionnaire {name}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise QuestionnaireError(f"questionnaire {name}: larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise QuestionnaireError(f"questionnaire {name}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise QuestionnaireError(f"questionnaire {name}: not valid TOML ({exc})") from None
    return parse_questionnaire(doc, name=name, folder=path.parent)


def parse_questionnaire(doc: Mapping[str, object], *, name: str = "<questionnaire>",
                        folder: Path | None = None) -> Questionnaire:
    """Validate an already-parsed TOML document (``folder``: where suggestion files live)."""

    def fail(message: str) -> QuestionnaireError:
        return QuestionnaireError(f"questionnaire {name}: {message}")

    _keys(doc, {"format", "question", "transparency"}, "the file", fail)
    if doc.get("format") != FORMAT or isinstance(doc.get("format"), bool):
        raise fail(f"format = {FORMAT} is required (the version of this file format)")
    raw_questions = doc.get("question", [])
    if not isinstance(raw_questions, list):
        raise fail("[[question]] must be an array of tables")
    if len(raw_questions) > MAX_QUESTIONS:
        raise fail(f"more than {MAX_QUESTIONS} questions")
    questions: list[Question] = []
    for n, item in enumerate(raw_questions, 1):
        questions.append(_question(item, n, folder, fail))
    ids = [q.id for q in questions]
    for qid in ids:
        if ids.count(qid) > 1:
            raise fail(f"question id {qid!r} is used twice")
    for level in PLACE_LEVELS:
        if sum(1 for q in questions if q.role == "place" and q.level == level) > 1:
            raise fail(f"more than one question has role = \"place\", level = {level!r}")
    if sum(1 for q in questions if q.role == "month") > 1:
        raise fail("more than one question has role = \"month\"")
    publish_level = None
    transparency = doc.get("transparency")
    if transparency is not None:
        if not isinstance(transparency, dict):
            raise fail("[transparency] must be a table")
        _keys(transparency, {"place_level"}, "[transparency]", fail)
        publish_level = transparency.get("place_level")
        if publish_level is not None:
            place = next((q for q in questions if q.role == "place" and q.level == publish_level), None)
            if place is None:
                raise fail(f"[transparency] place_level {publish_level!r} names no place question")
            if place.type != "choice":
                raise fail("[transparency] place_level must name a choice question (a fixed list "
                           "of places: free text is never published)")
    return Questionnaire(questions=tuple(questions), source=name, publish_place_level=publish_level)


def _keys(table: Mapping[str, object], allowed: set[str], where: str, fail: _Fail) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise fail(f"{where}: unknown key {extra[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _labels(raw: object, where: str, fail: _Fail, *, plain_ok: bool, limit: int) -> dict[str, str]:
    """A label: a table with es and en, or (where allowed) one text for both languages."""
    if isinstance(raw, str) and plain_ok:
        raw = {"es": raw, "en": raw}
    if not isinstance(raw, dict):
        raise fail(f"{where} must be a table {{ es = \"…\", en = \"…\" }}")
    _keys(raw, set(LANGS), where, fail)
    out: dict[str, str] = {}
    for lang in LANGS:
        text = raw.get(lang)
        if not isinstance(text, str) or not text.strip():
            raise fail(f"{where} needs a non-empty {lang!r} text")
        if len(text) > limit or _CONTROL.search(text.replace("\n", " ")):
            raise fail(f"{where}.{lang} must be one short text (at most {limit} characters)")
        out[lang] = unicodedata.normalize("NFC", text.strip())
    return out


def _question(item: object, n: int, folder: Path | None, fail: _Fail) -> Question:
    if not isinstance(item, dict):
        raise fail(f"question {n} is not a table")
    qid = item.get("id")
    if not isinstance(qid, str) or not QUESTION_ID.match(qid):
        raise fail(f"question {n}: id must match ^[a-z][a-z0-9_]{{0,31}}$, got {qid!r}")
    where = f"question {qid!r}"
    _keys(item, {"id", "type", "label", "help", "categories", "role", "level", "options",
                 "suggestions"}, where, fail)
    qtype = item.get("type")
    if qtype not in TYPES:
        raise fail(f"{where}: type must be one of {', '.join(TYPES)}, got {qtype!r}")
    assert isinstance(qtype, str)  # noqa: S101 - narrowed by the membership test above
    labels = _labels(item.get("label"), f"{where}: label", fail, plain_ok=False, limit=MAX_LABEL_CHARS)
    help_ = ({} if item.get("help") is None else
             _labels(item["help"], f"{where}: help", fail, plain_ok=False, limit=MAX_HELP_CHARS))
    categories = item.get("categories")
    if categories is not None:
        if (not isinstance(categories, list) or not categories
                or not all(isinstance(c, str) and QUESTION_ID.match(c) for c in categories)):
            raise fail(f"{where}: categories must be a non-empty list of category codes")
        if len(set(categories)) != len(categories):
            raise fail(f"{where}: categories lists a code twice")
        categories = tuple(categories)
    role, level = item.get("role"), item.get("level")
    if role is not None and role not in ROLES:
        raise fail(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    if role == "place":
        if level not in PLACE_LEVELS:
            raise fail(f"{where}: a place question needs level = one of {', '.join(PLACE_LEVELS)}")
        if qtype not in ("choice", "text"):
            raise fail(f"{where}: a place question is a choice or a text")
    elif level is not None:
        raise fail(f"{where}: level is only for role = \"place\"")
    if role == "month" and qtype != "month":
        raise fail(f"{where}: role = \"month\" needs type = \"month\"")
    options: list[Option] = []
    if qtype == "choice":
        raw_options = item.get("options")
        if not isinstance(raw_options, list) or not raw_options:
            raise fail(f"{where}: a choice needs a non-empty options list")
        if len(raw_options) > MAX_OPTIONS:
            raise fail(f"{where}: more than {MAX_OPTIONS} options")
        for k, opt in enumerate(raw_options, 1):
            if not isinstance(opt, dict):
                raise fail(f"{where}: option {k} is not a table {{ code = …, label = … }}")
            _keys(opt, {"code", "label"}, f"{where}: option {k}", fail)
            code = opt.get("code")
            if not isinstance(code, str) or not QUESTION_ID.match(code):
                raise fail(f"{where}: option {k} code must match ^[a-z][a-z0-9_]{{0,31}}$, got {code!r}")
            if code in (o.code for o in options):
                raise fail(f"{where}: option code {code!r} is used twice")
            options.append(Option(code, _labels(opt.get("label"), f"{where}: option {code!r} label",
                                                  fail, plain_ok=True, limit=MAX_LABEL_CHARS)))
    elif "options" in item:
        raise fail(f"{where}: options are only for type = \"choice\"")
    suggestions: tuple[str, ...] = ()
    if "suggestions" in item:
        if qtype != "text":
            raise fail(f"{where}: suggestions are only for type = \"text\"")
        suggestions = _suggestions(item["suggestions"], folder, where, fail)
    return Question(id=qid, type=qtype, labels=labels, help=help_, categories=categories,
                    role=role, level=level if role == "place" else None, options=tuple(options),
                    suggestions=suggestions)


def _suggestions(raw: object, folder: Path | None, where: str, fail: _Fail) -> tuple[str, ...]:
    """A suggestions file beside the questionnaire: UTF-8, one suggestion a line, ``#`` comments."""
    if not isinstance(raw, str) or not raw or "/" in raw or "\\" in raw or raw.startswith("."):
        raise fail(f"{where}: suggestions must be a file name in the questionnaire's folder")
    if folder is None:
        raise fail(f"{where}: suggestions need the questionnaire's folder")
    path = folder / raw
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        raise fail(f"{where}: cannot read suggestions file {str(path)!r} as UTF-8 text") from None
    if len(data) > MAX_FILE_BYTES:
        raise fail(f"{where}: suggestions file {str(path)!r} is larger than {MAX_FILE_BYTES} bytes")
    out: list[str] = []
    for line in text.splitlines():
        entry = unicodedata.normalize("NFC", line.strip())
        if not entry or entry.startswith("#"):
            continue
        if len(entry) > MAX_ANSWER_CHARS or _CONTROL.search(entry):
            raise fail(f"{where}: suggestion {entry[:40]!r} is not one line of at most "
                       f"{MAX_ANSWER_CHARS} characters")
        if entry not in out:
            out.append(entry)
    if len(out) > MAX_SUGGESTIONS:
        raise fail(f"{where}: more than {MAX_SUGGESTIONS} suggestions")
    return tuple(out)
