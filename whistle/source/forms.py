# SPDX-License-Identifier: AGPL-3.0-or-later
"""The JavaScript-off submission form (Flask-WTF: CSRF token, validation)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import MultipleFileField, PasswordField, SelectField, TextAreaField
from wtforms.validators import DataRequired, Length

from ..crypto import MAX_BODY_CHARS
from ..i18n import category_choices


class SubmitForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no type hints
    category = SelectField(_l("What is it about?"), validators=[DataRequired()])
    body = TextAreaField(
        _l("Describe what happened"),
        validators=[
            DataRequired(message=_l("Please describe what happened.")),
            Length(max=MAX_BODY_CHARS, message=_l("The description is too long.")),
        ],
    )
    attachments = MultipleFileField(_l("Attach files (optional)"))

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # An empty first choice: a source who skips the field is asked, not filed under the first
        # category by accident.
        self.category.choices = [("", _l("Choose one…")), *category_choices()]


class FollowupForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no type hints
    passphrase = PasswordField(
        _l("Your receipt passphrase"),
        validators=[DataRequired(message=_l("Please type your passphrase.")), Length(max=500)],
    )


class MessageForm(FlaskForm):  # type: ignore[misc]
    body = TextAreaField(
        _l("Add information or answer the investigation unit"),
        validators=[
            DataRequired(message=_l("Please write a message.")),
            Length(max=MAX_BODY_CHARS, message=_l("The message is too long.")),
        ],
    )
    attachments = MultipleFileField(_l("Attach files (optional)"))
