# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the casebook's templates show codes as: the labels of core.enums translated with the
server's catalogue (the same msgids), and text a stranger wrote made inert.

Jinja escapes every value (autoescape is on for .html templates), so markup in a report, a file
name or a category is shown as text; the ``inert`` filter also makes control and bidirectional
characters visible, as ``decrypt`` does in report.txt.
"""

from __future__ import annotations

from enum import StrEnum

from flask import Flask
from flask_babel import gettext

from whistle.core.enums import DEFAULT_CATEGORIES, SEALED_IN, Channel, ItemKind, Outcome, Status, label
from whistle.workstation.casebook import deadlines, queries
from whistle.workstation.casebook.answers import fold
from whistle.workstation.render import inert_line, inert_text

_CATEGORIES = dict(DEFAULT_CATEGORIES)


def category_label(code: str) -> str:
    """A default category's label in the page's language; any other code as it is."""
    msgid = _CATEGORIES.get(code)
    return str(gettext(msgid)) if msgid else inert_line(code, 64)


def enum_label(value: object, vocabulary: type[StrEnum]) -> str:
    """The staff label of a stored code of ``vocabulary``; an unknown code as it is."""
    try:
        return str(gettext(label(vocabulary(str(value)))))
    except ValueError:
        return inert_line(str(value), 64)


def channel_label(code: str) -> str:
    """A channel's label and where it was encrypted."""
    try:
        channel = Channel(code)
    except ValueError:
        return inert_line(code, 32)
    return f"{gettext(label(channel))} ({gettext(SEALED_IN[channel])})"


def purpose_label(purpose: str) -> str:
    """What a reply was for."""
    names = {"acknowledgement": gettext("Acknowledgement"), "feedback": gettext("Feedback"),
             "other": gettext("Other reply")}
    return str(names.get(purpose, purpose))


def human_size(size: int) -> str:
    """A byte count for a person: 1.2 MB, 340 KB, 12 bytes."""
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB"
    if size >= 1_000:
        return f"{size / 1_000:.0f} KB"
    return str(gettext("%(num)d bytes", num=size))


def init_app(app: Flask) -> None:
    """Register the filters and globals the casebook templates use."""
    app.add_template_filter(category_label, "category")
    app.add_template_filter(enum_label, "label")
    app.add_template_filter(channel_label, "channel")
    app.add_template_filter(purpose_label, "purpose")
    app.add_template_filter(human_size, "size")
    app.add_template_filter(inert_text, "inert")
    app.add_template_filter(inert_line, "inert_line")
    app.add_template_filter(queries.snippet_parts, "snippet_parts")
    app.jinja_env.globals.update(Status=Status, Outcome=Outcome, ItemKind=ItemKind, Channel=Channel,
                                 categories=[code for code, _ in DEFAULT_CATEGORIES],
                                 statuses=[s.value for s in Status],
                                 channels=[c.value for c in Channel],
                                 purposes=deadlines.PURPOSES,
                                 labels_category=category_label,
                                 labels_status=lambda v: enum_label(v, Status),
                                 labels_channel=lambda v: enum_label(v, Channel),
                                 labels_purpose=purpose_label)
    app.add_template_filter(lambda a, b: {**a, **b}, "combine")
    app.add_template_filter(fold, "fold")
