# SPDX-License-Identifier: AGPL-3.0-or-later
"""The JavaScript-off submission form (Flask-WTF: CSRF token, validation)."""

from __future__ import annotations

import unicodedata

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import Field, MultipleFileField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

from whistle.core.crypto import MAX_BODY_CHARS
from whistle.server.i18n import category_choices


class SealedLength:
    """At most ``max`` characters as the envelope will hold the text: Unicode code points after
    CRLF → LF and NFC (common.seal_form, docs/protocol.md section 2), the same count as the
    page's script. NFC can lengthen a text (U+FB2C becomes 3 characters) and the envelope
    refuses more than MAX_BODY_CHARS, which was a 500. A line break counts once, as in the
    browser's text box and on the JavaScript path, although a form post sends it as CRLF.
    Anything but text (a file part or a JSON number posted as the field) is refused too."""

    def __init__(self, max: int, message: object) -> None:
        self.max, self.message = max, message

    def __call__(self, form: object, field: Field) -> None:
        data = field.data
        if not isinstance(data, str):
            if data:
                raise ValidationError(self.message)
            return
        sealed = unicodedata.normalize("NFC", data.replace("\r\n", "\n"))
        if len(sealed) > self.max:
            raise ValidationError(self.message)


class SubmitForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no type hints
    category = SelectField(_l("What is it about?"), validators=[DataRequired()])
    body = TextAreaField(
        _l("Describe what happened"),
        validators=[
            DataRequired(message=_l("Please describe what happened.")),
            SealedLength(max=MAX_BODY_CHARS, message=_l("The description is too long.")),
        ],
    )
    attachments = MultipleFileField(_l("Attach files (optional)"))

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # An empty first choice: a source who skips the field is asked, not filed under the first
        # category by accident.
        self.category.choices = [("", _l("Choose one…")), *category_choices()]


class PassphraseField(StringField):  # type: ignore[misc]  # WTForms ships no type hints
    """A text box for the receipt passphrase that never writes what was typed back into a page.

    It is a text box, not a password box, so that a source sees a typo in seven words (the page
    offers a hide control); but unlike a plain text field, a re-rendered form comes back empty on
    every path (wrong passphrase, refusal, busy server), so the passphrase is never in a response."""

    def _value(self) -> str:
        return ""


class FollowupForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no type hints
    passphrase = PassphraseField(
        _l("Your receipt passphrase"),
        validators=[DataRequired(message=_l("Please type your passphrase.")), Length(max=500)],
    )


class MessageForm(FlaskForm):  # type: ignore[misc]
    body = TextAreaField(
        _l("Add information or answer the investigation unit"),
        validators=[
            DataRequired(message=_l("Please write a message.")),
            SealedLength(max=MAX_BODY_CHARS, message=_l("The message is too long.")),
        ],
    )
    attachments = MultipleFileField(_l("Attach files (optional)"))
