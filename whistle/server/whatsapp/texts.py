# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the bridge writes to a source, in the conversation's language (English msgids, Spanish in
the catalogue like every page). Call these inside :func:`speaking`. WhatsApp's own markup:
``*bold*``; a text message holds at most 4,096 characters."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import flask_babel
from flask import Flask
from flask_babel import force_locale

from whistle.core.questionnaire import Question


def gettext(msgid: str, **variables: object) -> str:
    return str(flask_babel.gettext(msgid, **variables))


def ngettext(singular: str, plural: str, num: int, **variables: object) -> str:
    return str(flask_babel.ngettext(singular, plural, num, **variables))


@contextlib.contextmanager
def speaking(app: Flask, lang: str) -> Iterator[None]:
    """An application context whose gettext answers in ``lang``."""
    with app.app_context(), force_locale(lang):
        yield


def welcome(address: str, lang: str) -> str:
    # Each offer in the language it offers, untranslated: it is for someone who cannot read the rest.
    switch = "Write *english* for English." if lang == "es" else "Escriba *español* para español."
    return "\n\n".join([
        gettext("This is the investigation unit's reporting channel on WhatsApp."),
        gettext("It is *confidential, not anonymous*: Meta, WhatsApp's owner, sees your phone "
                "number and this conversation. What you send is encrypted for the investigation "
                "unit the moment it arrives here, and your number is not kept."),
        gettext("If you need to stay anonymous, do not continue here: use the web channel with "
                "Tor Browser, %(address)s", address=address),
        gettext("Do not send details that only you could know if they would give you away. "
                "Nothing is kept until you choose a category. Write *cancel* at any moment "
                "to delete everything you sent."),
        switch,
    ])


def category_menu(choices: list[tuple[str, str]]) -> str:
    lines = [gettext("What is your report about? Answer with the number:")]
    lines += [f"{n}. {label}" for n, (_code, label) in enumerate(choices, 1)]
    return "\n".join(lines)


def not_a_category() -> str:
    return gettext("Please answer with one of the numbers of the list.")


def question(q: Question, number: int, total: int, lang: str) -> str:
    lines = [gettext("Question %(n)d of %(total)d (optional): *%(label)s*", n=number, total=total,
                     label=q.label(lang))]
    if q.help_text(lang):
        lines.append(q.help_text(lang))
    lines += [f"{n}. {label}" for n, (_code, label) in enumerate(q.choices(lang), 1)]
    lines.append(answer_hint(q))
    return "\n".join(lines)


def answer_hint(q: Question) -> str:
    if q.type in ("choice", "yesno"):
        return gettext("Answer with a number, or 0 to skip.")
    if q.type == "month":
        return gettext("Write the month as YYYY-MM (for example 2025-03), or 0 to skip.")
    return gettext("Answer in one line, or 0 to skip.")


def account_prompt() -> str:
    return gettext("Now tell what happened: what, where, when, who was involved. You can send "
                   "several messages, photos, documents and voice notes; each is encrypted as it "
                   "arrives. When you have finished, write *done*.")


def media_received(count: int) -> str:
    return ngettext("Attachment received and encrypted (%(num)d so far).",
                    "Attachment received and encrypted (%(num)d so far).", count)


def media_refused(too_large_mb: int | None) -> str:
    if too_large_mb is not None:
        return gettext("This file is larger than this channel accepts (%(mb)d MB). Nothing of it "
                       "was kept.", mb=too_large_mb)
    return gettext("This file could not be received. Nothing of it was kept; please send it again.")


def media_too_early() -> str:
    return gettext("Files can be sent once you tell what happened (after the category and the "
                   "questions). This one was not kept.")


def unsupported() -> str:
    return gettext("This kind of message cannot be received here (text, photos, documents, voice "
                   "notes, videos and locations can). Nothing of it was kept.")


def nothing_yet() -> str:
    return gettext("You have not told anything yet. Describe what happened, then write *done*.")


def confirm(texts: int, files: int) -> str:
    return "\n\n".join([
        ngettext("Your report has %(num)d message", "Your report has %(num)d messages", texts)
        + " " + ngettext("and %(num)d attachment.", "and %(num)d attachments.", files),
        gettext("Write *send* to send it to the investigation unit, *more* to add something, "
                "or *cancel* to delete everything."),
    ])


def receipt(address: str) -> str:
    return "\n\n".join([
        gettext("Your report was filed. Thank you."),
        gettext("The next message is your receipt passphrase. Write it on paper and keep it "
                "safe, then delete this chat. Nobody can recover it: it is not stored anywhere."),
        gettext("With it you can read the investigation unit's replies and add messages on the "
                "web, anonymously with Tor Browser: %(address)s", address=address),
    ])


def cancelled() -> str:
    return gettext("Everything you sent in this conversation was deleted. Nothing was filed.")


def lost() -> str:
    return gettext("This conversation was interrupted on our side and an attachment was lost. "
                   "Nothing was filed and everything was deleted; please start again.")


def busy() -> str:
    return gettext("Something went wrong on our side. This message was not kept; please send it "
                   "again in a minute.")


def filing_failed() -> str:
    return gettext("Your report could not be filed because of a problem on our side. Nothing was "
                   "stored yet; please write *send* again in a few minutes.")


def too_many_items() -> str:
    return gettext("Your report holds as many messages as it can. This one was not kept: write "
                   "*done* to finish; once it is filed you can add more on the web.")


def number_limit(minutes: int) -> str:
    return ngettext("You have sent many messages in a short time. This one was not kept; please "
                    "wait %(num)d minute.",
                    "You have sent many messages in a short time. This one was not kept; please "
                    "wait %(num)d minutes.", minutes)


def reports_limit(minutes: int = 0) -> str:
    return gettext("This number has filed as many reports as are accepted in a day. Nothing was "
                   "kept; please write again tomorrow, or use the web channel.")


def global_limit(minutes: int) -> str:
    return ngettext("Many people are writing to this channel right now. This message was not "
                    "kept; please try again in %(num)d minute.",
                    "Many people are writing to this channel right now. This message was not "
                    "kept; please try again in %(num)d minutes.", minutes)


def location_label() -> str:
    return gettext("Location shared:")
