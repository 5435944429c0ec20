# SPDX-License-Identifier: AGPL-3.0-or-later
"""The fixed vocabularies of whistle, each defined once, with their human labels once.

Item kinds, intake channels, languages, case statuses and outcomes are :class:`enum.StrEnum`, so a
member *is* the text stored in the database and the bundle manifest ("received", "server-form").
Their labels are English msgids marked with :func:`N_` for ``pybabel extract -k N_``: the server
translates them at render time (``whistle.server.i18n``, Flask-Babel); the workstation, which
imports no Flask and installs without the catalogues' tooling, translates the few it writes into
``report.txt`` with :data:`SPANISH` (tests/test_enums.py checks it agrees with the Spanish
catalogue). The default report categories live here too, so that the server's configuration and
the workstation read one table. Nothing here imports outside the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Literal


def N_(s: str) -> str:
    """Return ``s`` unchanged: this only marks a string for extraction (``pybabel extract -k N_``)."""
    return s


class ItemKind(StrEnum):
    """What one sealed item of a case is."""

    REPORT = "report"
    MESSAGE = "message"
    REPLY = "reply"


class Channel(StrEnum):
    """How a source's report or message reached the server: recorded on each, shown to the unit.

    ``browser``: the page's script sealed it before sending (JavaScript on). ``server-form``: the
    JavaScript-off form, sealed in server memory as the request was read. More channels will come
    (a chat bridge, a command-line import); the columns and the manifest take any short code.
    """

    BROWSER = "browser"
    SERVER_FORM = "server-form"
    # The WhatsApp bridge (whistle/server/whatsapp/): sealed in the bridge's memory on arrival.
    WHATSAPP = "whatsapp"


class Language(StrEnum):
    """The languages of the pages and of receipt passphrases; the first is the default."""

    ES = "es"
    EN = "en"

    @classmethod
    def coerce(cls, value: object, default: Language | None = None) -> Language:
        """``value`` as a language, or ``default`` (Spanish) when it is none of them."""
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        return default or cls.ES


class Status(StrEnum):
    """Where a case stands in the unit's workflow (the source sees it too)."""

    RECEIVED = "received"
    ACKNOWLEDGED = "acknowledged"
    INVESTIGATING = "investigating"
    CLOSED = "closed"


class Outcome(StrEnum):
    """Why a case was closed: a short, fixed list so the source sees a clear answer."""

    SUBSTANTIATED = "substantiated"
    NOT_SUBSTANTIATED = "not_substantiated"
    REFERRED = "referred"
    INSUFFICIENT_INFORMATION = "insufficient_information"
    DUPLICATE = "duplicate"
    OUT_OF_SCOPE = "out_of_scope"


Audience = Literal["staff", "source"]

# Labels for the investigation unit (investigator pages, the workstation's report.txt).
_STAFF: Mapping[StrEnum, str] = {
    ItemKind.REPORT: N_("Report"),
    ItemKind.MESSAGE: N_("Message from the source"),
    ItemKind.REPLY: N_("Reply from the unit"),
    Channel.BROWSER: N_("Browser"),
    Channel.SERVER_FORM: N_("Form without JavaScript"),
    Channel.WHATSAPP: N_("WhatsApp"),
    Status.RECEIVED: N_("Received"),
    Status.ACKNOWLEDGED: N_("Acknowledged"),
    Status.INVESTIGATING: N_("Under investigation"),
    Status.CLOSED: N_("Closed"),
    Outcome.SUBSTANTIATED: N_("Substantiated"),
    Outcome.NOT_SUBSTANTIATED: N_("Not substantiated"),
    Outcome.REFERRED: N_("Referred to another authority"),
    Outcome.INSUFFICIENT_INFORMATION: N_("Insufficient information"),
    Outcome.DUPLICATE: N_("Duplicate"),
    Outcome.OUT_OF_SCOPE: N_("Out of scope"),
}
# The same things in the words a source reads on the case page; what is missing here falls back
# to the staff label.
_SOURCE: Mapping[StrEnum, str] = {
    ItemKind.REPORT: N_("You filed your report"),
    ItemKind.MESSAGE: N_("You sent a message"),
    ItemKind.REPLY: N_("Reply from the investigation unit"),
    Status.RECEIVED: N_("Received — waiting for the investigation unit"),
    Status.ACKNOWLEDGED: N_("Acknowledged by the investigation unit"),
    Status.INVESTIGATING: N_("Under investigation"),
    Status.CLOSED: N_("Closed"),
    Outcome.SUBSTANTIATED: N_("The facts were confirmed and action is being taken"),
    Outcome.NOT_SUBSTANTIATED: N_("The facts could not be confirmed"),
    Outcome.REFERRED: N_("Referred to the competent authority"),
    Outcome.INSUFFICIENT_INFORMATION: N_("Not enough information to investigate"),
    Outcome.DUPLICATE: N_("Already being handled under another report"),
    Outcome.OUT_OF_SCOPE: N_("Outside the unit's competence"),
}
# Where each channel's content was encrypted: report.txt and the case page say it next to the
# channel, because that is what the unit weighs when it judges what the server could have seen.
SEALED_IN: Mapping[Channel, str] = {
    Channel.BROWSER: N_("encrypted in the browser before sending"),
    Channel.SERVER_FORM: N_("encrypted in server memory on arrival (JavaScript off)"),
    Channel.WHATSAPP: N_("encrypted in server memory on arrival; Meta saw the number and the text"),
}
# The report categories of the institution's announcement, used when WHISTLE_CATEGORIES is not
# set: (code, English label as a msgid). The server's configuration starts from this table; the
# workstation, which never sees a deployment's configuration, labels these codes with it and
# writes any other code as it is.
DEFAULT_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("poor_service", N_("Poor service")),
    ("medication", N_("Medication not delivered")),
    ("irregularities", N_("Irregularities")),
    ("corruption", N_("Corruption")),
    ("other", N_("Other")),
)
# Spanish for the labels the workstation writes (categories, kinds, channels, where a channel
# encrypted): the same msgstrs as whistle/translations/es (tests/test_enums.py compares them).
SPANISH: Mapping[str, str] = {
    "Poor service": "Mala atención",
    "Medication not delivered": "Medicamentos no entregados",
    "Irregularities": "Irregularidades",
    "Corruption": "Corrupción",
    "Other": "Otro",
    "Report": "Denuncia",
    "Message from the source": "Mensaje de la persona denunciante",
    "Browser": "Navegador",
    "Form without JavaScript": "Formulario sin JavaScript",
    "encrypted in the browser before sending": "cifrado en el navegador antes del envío",
    "encrypted in server memory on arrival (JavaScript off)":
        "cifrado en la memoria del servidor al llegar (JavaScript desactivado)",
    "WhatsApp": "WhatsApp",
    "encrypted in server memory on arrival; Meta saw the number and the text":
        "cifrado en la memoria del servidor al llegar; Meta vio el número y el texto",
}
# Each language's name in itself: a language menu is read by those who cannot read the page's.
LANGUAGE_NAMES: Mapping[Language, str] = {Language.ES: "Español", Language.EN: "English"}


def label(member: StrEnum, audience: Audience = "staff") -> str:
    """The English label (a msgid) of ``member`` for ``audience``.

    Every member of the enums above has a staff label (tests/test_enums.py checks it); a KeyError
    here is a programming error, not bad input.
    """
    if isinstance(member, Language):
        return LANGUAGE_NAMES[member]
    if audience == "source" and member in _SOURCE:
        return _SOURCE[member]
    return _STAFF[member]


def translate(msgid: str, lang: Language = Language.EN) -> str:
    """``msgid`` in ``lang`` without gettext (for the workstation); English is the msgid itself."""
    return SPANISH.get(msgid, msgid) if lang is Language.ES else msgid


def category_label(code: str, lang: Language = Language.EN) -> str:
    """A default category's label in ``lang``; a code this table does not know (a deployment's
    own category) is shown as it is."""
    return translate(dict(DEFAULT_CATEGORIES).get(code, code), lang)


def channel_text(code: str, lang: Language = Language.EN) -> str:
    """A channel code as the workstation writes it: label and where it was encrypted; a code
    this version does not know (a newer server's channel) is shown as it is."""
    try:
        channel = Channel(code)
    except ValueError:
        return code
    return f"{translate(label(channel), lang)} ({translate(SEALED_IN[channel], lang)})"
