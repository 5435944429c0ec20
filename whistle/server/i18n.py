# SPDX-License-Identifier: AGPL-3.0-or-later
"""Languages: Spanish by default, English on request (``?lang=en``), remembered in the session.

The browser's Accept-Language is deliberately ignored: Tor Browser reports en-US for everyone,
and the institution's public is Spanish-speaking.
"""

from __future__ import annotations

from enum import StrEnum

from flask import Flask, request, session
from flask_babel import gettext

from whistle.core.enums import (
    LANGUAGE_NAMES,
    SEALED_IN,
    Audience,
    Channel,
    ItemKind,
    Language,
    Outcome,
    Status,
    label,
)
from whistle.server.config import LANGUAGES
from whistle.server.state import get_state


def select_locale() -> str:
    wanted = request.args.get("lang", "")
    if wanted in LANGUAGES:
        session["lang"] = wanted
        return wanted
    stored = session.get("lang")
    if stored in LANGUAGES:
        return str(stored)
    return str(get_state().config.default_language)


def category_choices() -> list[tuple[str, str]]:
    """The deployment's categories with labels in the page's language where we have them."""
    config = get_state().config
    # gettext returns the label unchanged when the catalogue has no translation for it, so a
    # deployment's own labels show as configured.
    return [(code, gettext(label)) for code, label in config.categories]


def label_filter(value: object, vocabulary: type[StrEnum] | None = None,
                 audience: Audience = "staff") -> str:
    """Jinja filter ``label``: the label of an enum member, or of a stored code of
    ``vocabulary`` (``row.status|label(Status)``), in the page's language. A code this version
    does not know (a channel a newer server added) is shown as it is."""
    member = value
    if vocabulary is not None and not isinstance(value, vocabulary):
        try:
            member = vocabulary(str(value))
        except ValueError:
            return str(value)
    if not isinstance(member, StrEnum):
        return str(value)
    return str(gettext(label(member, audience)))


def labels(vocabulary: type[StrEnum], audience: Audience = "staff") -> dict[str, str]:
    """Jinja global ``labels``: every code of ``vocabulary`` with its label in the page's language
    (``labels(Status)``), for a select or a lookup by stored code."""
    return {member.value: str(gettext(label(member, audience))) for member in vocabulary}


def sealed_in(value: object) -> str:
    """Jinja filter ``sealed_in``: where a channel's content was encrypted, in the page's language."""
    try:
        return str(gettext(SEALED_IN[Channel(str(value))]))
    except ValueError:
        return ""


def init_app(app: Flask) -> None:
    # The vocabularies of core.enums, labelled once there: templates name them, never list them.
    app.add_template_filter(label_filter, "label")
    app.add_template_filter(sealed_in, "sealed_in")
    app.jinja_env.globals.update(Channel=Channel, ItemKind=ItemKind, Outcome=Outcome, Status=Status,
                                 labels=labels)

    @app.context_processor
    def _inject() -> dict[str, object]:
        current = select_locale()
        return {
            "current_lang": current,
            "other_langs": [(code, LANGUAGE_NAMES[Language(code)]) for code in LANGUAGES
                            if code != current],
        }
