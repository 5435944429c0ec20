# SPDX-License-Identifier: AGPL-3.0-or-later
"""The deployment's structured questions on the submission form (whistle/core/questionnaire.py).

Without JavaScript the form shows every question at once: first those every category asks, then
each group a few categories ask under a heading that names them ("Only for: Corruption"), so one
page works for any category and a source skips what does not apply. The server keeps only the
answers to the questions of the category chosen, validates them and seals them as the envelope's
``fields``; with JavaScript on, the page's script does the same in the browser (submit.js reads
the ``q_<id>`` fields of the groups whose ``data-categories`` name the category chosen).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import request
from flask_babel import get_locale

from whistle.core.enums import Language
from whistle.core.questionnaire import AnswerError, Question, Questionnaire
from whistle.server.i18n import category_choices
from whistle.server.state import get_state

FIELD_PREFIX = "q_"


@dataclass(frozen=True)
class ShownQuestion:
    """One question as the template draws it, in the page's language."""

    id: str
    name: str
    type: str
    label: str
    help: str
    choices: tuple[tuple[str, str], ...]
    suggestions: tuple[str, ...]
    value: str
    invalid: bool


@dataclass(frozen=True)
class ShownGroup:
    """Questions asked by the same categories; ``codes`` empty: every category asks them."""

    codes: tuple[str, ...]
    labels: tuple[str, ...]
    questions: tuple[ShownQuestion, ...]


def questionnaire() -> Questionnaire:
    return get_state().config.questionnaire


def _lang() -> str:
    return Language.coerce(str(get_locale())).value


def posted_answers(category: str) -> tuple[tuple[tuple[str, str], ...], AnswerError | None]:
    """The posted answers to the questions of ``category``, validated, in questionnaire order,
    or the first refusal. Answers to other categories' questions (a source who changed category
    after answering) are not kept: they were asked of another kind of report."""
    q = questionnaire()
    raw = {x.id: request.form.get(FIELD_PREFIX + x.id, "") for x in q.questions_for(category)}
    try:
        return tuple(q.validate_answers(category, raw).items()), None
    except AnswerError as exc:
        return (), exc


def error_label(error: AnswerError) -> str:
    """The label of the question an answer error is about, in the page's language."""
    question = questionnaire().question(error.question_id or "")
    return question.label(_lang()) if question else ""


def shown_groups(invalid: str | None = None) -> list[ShownGroup]:
    """The groups of questions for the form, with the values posted (a form shown again after a
    refusal keeps what the source typed, like the text box)."""
    lang = _lang()
    names = dict(category_choices())
    posted = request.form if request.method == "POST" else {}

    def shown(x: Question) -> ShownQuestion:
        value = posted.get(FIELD_PREFIX + x.id, "")
        return ShownQuestion(id=x.id, name=FIELD_PREFIX + x.id, type=x.type, label=x.label(lang),
                             help=x.help_text(lang), choices=x.choices(lang),
                             suggestions=x.suggestions, value=value if isinstance(value, str) else "",
                             invalid=x.id == invalid)

    groups = questionnaire().groups(names)
    return [ShownGroup(codes=codes or (), labels=tuple(str(names[c]) for c in codes or ()),
                       questions=tuple(shown(x) for x in questions))
            for codes, questions in groups]
