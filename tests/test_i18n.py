# SPDX-License-Identifier: AGPL-3.0-or-later
"""Translations: the Spanish catalogue is complete and compiled, and pages speak Spanish by default.

The catalogue checks run without the app; they are what fails CI when someone adds a visible string
without translating it or forgets ``pybabel compile`` (see docs/translating.md).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from flask.testing import FlaskClient
from support import file_report

from whistle.core.passphrase import wordlist

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "whistle" / "translations"
# The same keywords as `pybabel extract -k _l -k N_` (N_ is a Babel default; listed for clarity).
KEYWORDS = {**DEFAULT_KEYWORDS, "_l": None, "N_": None}
FIX_COMPILE = "run `pybabel compile -d whistle/translations` and commit the .mo files"


def _po_path(locale: str) -> Path:
    return TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"


def _read_po(locale: str) -> Catalog:
    with _po_path(locale).open("rb") as fh:
        return read_po(fh, locale=locale)


def _translations(catalog: Catalog) -> dict[tuple[object, object], object]:
    """What a compiled catalogue holds: translated, non-fuzzy messages (as ``write_mo`` keeps them)."""
    return {(m.id, m.context): m.string for m in catalog if m.id and m.string and not m.fuzzy}


def _assert_mo_matches_po(locale: str) -> None:
    catalog = _read_po(locale)
    fresh = io.BytesIO()
    write_mo(fresh, catalog)
    mo_path = _po_path(locale).with_suffix(".mo")
    assert mo_path.exists(), f"{mo_path.relative_to(ROOT)} is missing: {FIX_COMPILE}"
    committed = mo_path.read_bytes()
    if fresh.getvalue() == committed:
        return
    # The bytes also differ when only the Babel version differs (its "Generated-By" header), so
    # compare what gettext would actually serve before failing.
    compiled = read_mo(io.BytesIO(committed))
    expected = _translations(catalog)
    actual = _translations(compiled)
    stale = sorted(str(key[0]) for key in expected.keys() | actual.keys()
                   if expected.get(key) != actual.get(key))
    assert not stale, (
        f"{mo_path.relative_to(ROOT)} is older than its .po ({len(stale)} message(s) differ, "
        f"e.g. {stale[:3]}): {FIX_COMPILE}"
    )
    assert compiled.plural_forms == catalog.plural_forms, f"stale .mo header: {FIX_COMPILE}"


def test_catalogue_complete() -> None:
    catalog = _read_po("es")
    assert not catalog.fuzzy, "the Spanish catalogue's header is marked fuzzy (pybabel compile skips it)"
    untranslated = [m.id for m in catalog if m.id and not all(
        m.string if isinstance(m.string, tuple) else (m.string,))]
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert not untranslated, f"untranslated in es/messages.po: {untranslated}"
    assert not fuzzy, f"fuzzy (needs review, then remove the flag) in es/messages.po: {fuzzy}"
    # Placeholder mismatches, e.g. a translation that dropped or renamed %(mb)s.
    problems = [(m.id, [str(e) for e in errors]) for m, errors in catalog.check()]
    assert not problems, f"format errors in es/messages.po: {problems}"
    _assert_mo_matches_po("es")


def test_english_catalogue_compiled() -> None:
    # English msgstrs stay empty (the source strings are English); the .mo must still exist.
    _assert_mo_matches_po("en")


def test_catalogue_covers_templates() -> None:
    with (ROOT / "babel.cfg").open() as fh:
        method_map, options_map = parse_mapping_cfg(fh, str(ROOT / "babel.cfg"))
    # Walk only the top-level folders babel.cfg names (never .venv or node_modules), skipping
    # dot and underscore folders like pybabel does.
    tops = {pattern.split("/", 1)[0] for pattern, _method in method_map}

    def wanted(dirpath: str) -> bool:
        parts = Path(dirpath).relative_to(ROOT).parts
        return parts[0] in tops and not any(p.startswith((".", "_")) for p in parts)

    extracted: dict[str, str] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        ROOT, method_map, options_map, keywords=KEYWORDS, directory_filter=wanted
    ):
        msgid = message[0] if isinstance(message, tuple) else message
        extracted.setdefault(msgid, f"{filename}:{lineno}")
    assert any(loc.startswith("templates/") for loc in extracted.values()), "no template scanned"
    assert any(loc.startswith("whistle/") for loc in extracted.values()), "no Python file scanned"
    assert "Poor service" in extracted, "the default category labels are not marked with N_()"

    catalog = _read_po("es")
    missing = {msgid: where for msgid, where in extracted.items() if catalog.get(msgid) is None}
    assert not missing, (
        "strings not in es/messages.po — re-extract, `pybabel update`, translate and compile "
        f"(docs/translating.md): {missing}"
    )


def _html(client: FlaskClient, path: str, **kwargs: object) -> str:
    resp = client.get(path, **kwargs)
    assert resp.status_code == 200, path
    return resp.get_data(as_text=True)


def test_pages_spanish_by_default(client: FlaskClient) -> None:
    # Accept-Language is ignored on purpose (Tor Browser sends en-US for everyone).
    index = _html(client, "/", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert '<html lang="es">' in index
    assert "Canal de denuncias confidencial" in index
    assert "Presentar una denuncia" in index
    assert "Confidential reporting channel" not in index
    assert 'href="?lang=en"' in index  # the switch offers the other language

    submit = _html(client, "/submit")
    assert '<html lang="es">' in submit
    assert "Cifrar y enviar" in submit
    assert "¿De qué se trata?" in submit
    for label in ("Mala atención", "Medicamentos no entregados", "Irregularidades", "Corrupción",
                  "Otro"):
        assert f">{label}</option>" in submit, label
    assert "Poor service" not in submit


def test_pages_english_on_request(client: FlaskClient) -> None:
    index = _html(client, "/?lang=en")
    assert '<html lang="en">' in index
    assert "Confidential reporting channel" in index
    assert "File a report" in index
    assert "Canal de denuncias confidencial" not in index
    assert 'href="?lang=es"' in index

    # Remembered in the session: no ?lang on the next page.
    submit = _html(client, "/submit")
    assert '<html lang="en">' in submit
    assert "Encrypt and send" in submit
    assert ">Poor service</option>" in submit
    assert ">Medication not delivered</option>" in submit
    assert "Mala atención" not in submit

    # And back again.
    assert '<html lang="es">' in _html(client, "/?lang=es")
    assert '<html lang="es">' in _html(client, "/submit")


@pytest.mark.parametrize("unknown", ["fr", "", "EN"])
def test_unknown_language_falls_back_to_spanish(client: FlaskClient, unknown: str) -> None:
    assert '<html lang="es">' in _html(client, f"/?lang={unknown}")


def test_error_pages_translated(client: FlaskClient) -> None:
    resp = client.get("/no-such-page")
    assert resp.status_code == 404
    html = resp.get_data(as_text=True)
    assert '<html lang="es">' in html
    assert "Error 404" in html
    assert "Esta página no existe." in html
    assert "Volver a la página de inicio" in html

    resp = client.get("/no-such-page?lang=en")
    assert resp.status_code == 404
    assert "This page does not exist." in resp.get_data(as_text=True)


def test_passphrase_follows_the_page_language(client: FlaskClient) -> None:
    """Issue 11, item 9: a report filed from an English page gets an English passphrase; Spanish
    stays the default. On the JavaScript path the page draws it from the list of its own language
    (both are published, /api/v1/params); on the form path the server uses the session's."""
    params = client.get("/api/v1/params").get_json()["passphrase"]
    assert set(params) == {"es", "en"}
    for lang in ("es", "en"):
        served = client.get(params[lang]["url"]).get_data(as_text=True).split()
        assert tuple(served) == wordlist(lang)
    english, spanish = set(wordlist("en")), set(wordlist("es"))
    assert set(file_report(client).split()) <= spanish  # no page chose a language: Spanish
    client.get("/submit?lang=en")
    assert set(file_report(client).split()) <= english  # the session's language
