# SPDX-License-Identifier: AGPL-3.0-or-later
"""Languages: Spanish by default, English on request (``?lang=en``), remembered in the session.

The browser's Accept-Language is deliberately ignored: Tor Browser reports en-US for everyone,
and the institution's public is Spanish-speaking.
"""

from __future__ import annotations

from flask import Flask, request, session
from flask_babel import gettext

from whistle.server.config import LANGUAGES
from whistle.server.state import get_state

LANGUAGE_NAMES = {"es": "Español", "en": "English"}


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


def init_app(app: Flask) -> None:
    @app.context_processor
    def _inject() -> dict[str, object]:
        current = select_locale()
        return {
            "current_lang": current,
            "other_langs": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES if code != current],
        }
