# SPDX-License-Identifier: AGPL-3.0-or-later
"""Text the workstation writes for a person, made inert, and the layout of the files it writes.

Everything in a report comes from a stranger, and the bundle's manifest from a server assumed
hostile some day. A text file is read with ``cat`` or ``less -R``, a name is printed in a terminal:
an ``ESC]52`` sequence there writes the investigator's clipboard, ``ESC[2J`` clears the screen, a
carriage return overwrites a line that looks checked, a U+202E (right-to-left override) makes
``invoice<U+202E>fdp.exe`` display as ``invoiceexe.pdf``. So every character that could act rather than
be read is written visibly as an escape instead: C0 controls but newline and tab (and a
carriage return just before a newline, a Windows line ending), DEL, the C1 controls (U+0080 to
U+009F: U+009B alone starts a CSI sequence in some terminals), the bidirectional controls, the
Unicode line and paragraph separators and lone surrogates (which cannot even be written as UTF-8).
A backslash is left as it is: the escapes are for reading, not for decoding back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from whistle.core.crypto import Binding
from whistle.core.enums import Language

# Bidirectional formatting characters (Unicode UAX #9): embeddings, overrides, isolates, marks.
_BIDI = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_OTHER = r"\x7f-\x9f\u2028\u2029\ud800-\udfff" + _BIDI
# In text with lines: every C0 control but tab (0x09) and newline (0x0a).
_TEXT_HOSTILE = re.compile(r"[\x00-\x08\x0b-\x1f" + _OTHER + "]")
# On one line (a field, a name, a terminal line): tab and newline too.
_LINE_HOSTILE = re.compile(r"[\x00-\x1f" + _OTHER + "]")


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"  # every character matched is in the Basic Multilingual Plane


def inert_text(text: str) -> str:
    """``text`` with its lines kept and every other control or bidi character made visible."""
    return _TEXT_HOSTILE.sub(_visible, text.replace("\r\n", "\n"))


def inert_line(text: str, limit: int | None = None) -> str:
    """``text`` as one inert line: newlines and tabs made visible too; at most ``limit``
    characters of the original, then an ellipsis."""
    if limit is not None and len(text) > limit:
        return _LINE_HOSTILE.sub(_visible, text[:limit]) + "…"
    return _LINE_HOSTILE.sub(_visible, text)


@dataclass(frozen=True)
class SavedAttachment:
    """An attachment written to disk: the name it was saved under and the name it was sent as."""

    saved: str
    sent_as: str


# The words of report.txt and message-NNN.txt, in the unit's language (``whistle decrypt
# --lang``). A plain table rather than gettext: the workstation installs without catalogues, and
# these lines are read only here.
_WORDS: Mapping[Language, Mapping[str, str]] = {
    Language.EN: {
        "report": "Report {id}", "message": "Message {seq} on report {id}", "date": "Date",
        "category": "Category", "channel": "Channel", "attachments": "Attachments",
        "sent_as": "was sent as", "quarantined": "Quarantined", "see": "see",
        "invalid_category": "invalid category \"{code}\" (quarantined)",
        "binding": "Binding",
        "binding_none_report": "none (filed before protocol v2)",
        "binding_none_message": "none (sent before protocol v2)",
        "binding_report": "checked (item 1 of the case; its source key matches the manifest's)",
        "binding_message": "checked (item {seq} from the source; same case tag and source key as "
                           "the report, key matches the manifest's)",
        "binding_message_no_report": "checked (item {seq} from the source; key matches the "
                                     "manifest's, case tag this bundle's other messages'; the "
                                     "report is not in this bundle: export with --all to check "
                                     "against it)",
        "binding_message_v1_report": "checked (item {seq} from the source; key matches the "
                                     "manifest's, case tag this bundle's other messages'; the "
                                     "report was filed before protocol v2)",
    },
    Language.ES: {
        "report": "Denuncia {id}", "message": "Mensaje {seq} de la denuncia {id}",
        "date": "Fecha", "category": "Categoría", "channel": "Canal", "attachments": "Adjuntos",
        "sent_as": "se envió como", "quarantined": "En cuarentena", "see": "ver",
        "invalid_category": "categoría no válida \"{code}\" (en cuarentena)",
        "binding": "Vínculo",
        "binding_none_report": "ninguno (enviada antes del protocolo v2)",
        "binding_none_message": "ninguno (enviado antes del protocolo v2)",
        "binding_report": "comprobado (elemento 1 del caso; su clave de la fuente es la del "
                          "manifiesto)",
        "binding_message": "comprobado (elemento {seq} de la fuente; misma etiqueta de caso y "
                           "clave de la fuente que la denuncia, clave igual a la del manifiesto)",
        "binding_message_no_report": "comprobado (elemento {seq} de la fuente; clave igual a la "
                                     "del manifiesto, etiqueta de caso igual a la de los demás "
                                     "mensajes del paquete; la denuncia no está en este paquete: "
                                     "exporte con --all para comprobarlo con ella)",
        "binding_message_v1_report": "comprobado (elemento {seq} de la fuente; clave igual a la "
                                     "del manifiesto, etiqueta de caso igual a la de los demás "
                                     "mensajes del paquete; la denuncia se envió antes del "
                                     "protocolo v2)",
    },
}


def words(lang: Language) -> Mapping[str, str]:
    """The fixed words of the files the workstation writes, in ``lang``."""
    return _WORDS[lang]


# What the ``Binding:`` line can say (whistle.workstation.checks.CaseCheck.check).
BINDING_STATES = ("none_report", "none_message", "report", "message", "message_no_report",
                  "message_v1_report")


def binding_text(state: str, binding: Binding | None, lang: Language = Language.EN) -> str:
    """The value of an item's ``Binding:`` line in ``lang``: ``state`` is one of
    :data:`BINDING_STATES`, ``binding`` the envelope's binding (None for an unbound item),
    whose ``seq`` the line names."""
    if state not in BINDING_STATES:
        raise ValueError(f"unknown binding state {state!r}")
    seq = binding.seq if binding is not None else None
    return _WORDS[lang][f"binding_{state}"].format(seq=seq)


def render_item(
    *,
    report_id: str,
    kind: str,
    seq: int,
    day: str,
    channel: str,
    category: str | None,
    body: str,
    attachments: list[SavedAttachment],
    quarantined: list[str],
    lang: Language = Language.EN,
    binding: str | None = None,
) -> str:
    """The text of ``report.txt`` (``kind`` "report") or ``message-NNN.txt``, in ``lang``.

    ``category`` and ``channel`` are the lines' values already labelled in ``lang`` (or the
    category marked invalid) by the caller; every field that came from the bundle is made inert
    here. ``binding`` is the value of the ``Binding:`` line (:func:`binding_text`), if any.
    """
    w = _WORDS[lang]
    is_report = kind == "report"
    lines = [w["report"].format(id=report_id) if is_report
             else w["message"].format(seq=seq, id=report_id),
             f"{w['date']}: {inert_line(day)}"]
    if is_report:
        lines.append(f"{w['category']}: {inert_line(category or '')}")
        # The channel's label and where it was encrypted, from the same table the investigators'
        # pages translate (core.enums).
        lines.append(f"{w['channel']}: {inert_line(channel)}")
    if binding is not None:
        lines.append(f"{w['binding']}: {inert_line(binding)}")
    if attachments:
        lines.append(f"{w['attachments']}: " + ", ".join(f"attachments/{inert_line(a.saved)}"
                                                        for a in attachments))
        for a in attachments:
            sent = inert_line(a.sent_as, 300)
            if sent != a.saved:
                lines.append(f"  attachments/{inert_line(a.saved)} {w['sent_as']} \"{sent}\"")
    for line in quarantined:
        lines.append(f"{w['quarantined']}: {inert_line(line)} ({w['see']} QUARANTINE.txt)")
    text = inert_text(body)
    return "\n".join(lines) + "\n\n" + text + ("\n" if not text.endswith("\n") else "")


def render_quarantine(bundle_name: str, created_on: str, entries: list[str]) -> str:
    """One section of ``QUARANTINE.txt``: which parts of a bundle were not written, and why."""
    head = [f"Bundle {inert_line(bundle_name)} (created {inert_line(created_on)}): "
            f"{len(entries)} part(s) quarantined.",
            "Their bytes stay in the bundle; nothing that failed to decrypt was copied here.",
            ""]
    return "\n".join(head + [inert_line(e) for e in entries]) + "\n"
