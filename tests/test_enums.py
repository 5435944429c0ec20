# SPDX-License-Identifier: AGPL-3.0-or-later
"""whistle.core.enums: each vocabulary defined once, every member labelled, no Flask needed."""

from __future__ import annotations

import subprocess
import sys
from enum import StrEnum

import pytest

from whistle.core.enums import (
    LANGUAGE_NAMES,
    SEALED_IN,
    Channel,
    ItemKind,
    Language,
    Outcome,
    Status,
    channel_text,
    label,
)

VOCABULARIES: list[type[StrEnum]] = [ItemKind, Channel, Language, Status, Outcome]


@pytest.mark.parametrize("vocabulary", VOCABULARIES)
def test_enums_every_member_has_a_label_for_both_audiences(vocabulary: type[StrEnum]) -> None:
    for member in vocabulary:
        assert label(member).strip() and label(member, "source").strip()


def test_enums_values_unique_across_vocabularies() -> None:
    """A StrEnum member hashes like its text: one label table holds them all only if no two
    vocabularies share a value."""
    values = [m.value for v in VOCABULARIES for m in v]
    assert len(values) == len(set(values))


def test_enums_stored_values_unchanged() -> None:
    """These texts are in databases and bundle manifests: changing one needs a migration."""
    assert [s.value for s in Status] == ["received", "acknowledged", "investigating", "closed"]
    assert [k.value for k in ItemKind] == ["report", "message", "reply"]
    assert [c.value for c in Channel] == ["browser", "server-form", "whatsapp"]
    assert [lang.value for lang in Language] == ["es", "en"]
    assert [o.value for o in Outcome] == ["substantiated", "not_substantiated", "referred",
                                          "insufficient_information", "duplicate", "out_of_scope"]


def test_enums_source_labels_differ_where_the_source_reads_them() -> None:
    assert label(Status.RECEIVED) == "Received"
    assert label(Status.RECEIVED, "source").startswith("Received — waiting")
    assert label(ItemKind.REPORT, "source") == "You filed your report"
    # Nothing source-specific for a channel: the staff label serves.
    assert label(Channel.BROWSER, "source") == label(Channel.BROWSER)


@pytest.mark.parametrize(("value", "expected"), [("en", Language.EN), ("es", Language.ES),
                                                 ("fr", Language.ES), (None, Language.ES),
                                                 ("", Language.ES), (3, Language.ES)])
def test_enums_language_coerce_falls_back_to_spanish(value: object, expected: Language) -> None:
    assert Language.coerce(value) is expected


def test_enums_language_names_are_autonyms() -> None:
    assert label(Language.ES) == LANGUAGE_NAMES[Language.ES] == "Español"


def test_enums_channel_text_for_report_txt() -> None:
    assert channel_text("browser") == f"Browser ({SEALED_IN[Channel.BROWSER]})"
    assert channel_text("server-form").startswith("Form without JavaScript (encrypted in server memory")
    assert channel_text("whatsapp") == (
        "WhatsApp (encrypted in server memory on arrival; Meta saw the number and the text)")
    # A channel a newer server added is shown as its code, not refused.
    assert channel_text("signal") == "signal"


def test_enums_import_nothing_outside_the_standard_library() -> None:
    """The workstation reads these labels; importing them must pull in no Flask or database."""
    code = ("import sys, whistle.core.enums; "
            "print(sorted(m for m in ('flask', 'flask_babel', 'sqlalchemy', 'nacl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)  # noqa: S603
    assert out.stdout.strip() == "[]"


def test_enums_spanish_table_matches_the_catalogue() -> None:
    """The workstation's Spanish (no gettext there) says what the server's catalogue says."""
    from pathlib import Path

    from babel.messages.pofile import read_po

    from whistle.core.enums import SPANISH

    po = Path(__file__).resolve().parent.parent / "whistle/translations/es/LC_MESSAGES/messages.po"
    with po.open("rb") as fh:
        catalog = read_po(fh, locale="es")
    assert {msgid: catalog.get(msgid).string for msgid in SPANISH} == dict(SPANISH)  # type: ignore[union-attr]


def test_enums_category_label_default_table_else_code() -> None:
    from whistle.core.enums import category_label

    assert category_label("corruption") == "Corruption"
    assert category_label("medication", Language.ES) == "Medicamentos no entregados"
    assert category_label("fraude_fiscal", Language.ES) == "fraude_fiscal"
    assert channel_text("browser", Language.ES) == "Navegador (cifrado en el navegador antes del envío)"
