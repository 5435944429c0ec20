# SPDX-License-Identifier: AGPL-3.0-or-later
"""The questionnaire file (whistle/core/questionnaire.py): the shipped default, the format's
rules (each refusal one line naming the file), and the validation of a source's answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from whistle.core.enums import DEFAULT_CATEGORIES
from whistle.core.questionnaire import (
    DEFAULT_PATH,
    AnswerError,
    QuestionnaireError,
    load_questionnaire,
)

CATEGORIES = [code for code, _ in DEFAULT_CATEGORIES]
PROVINCES = {
    "azuay", "bolivar", "canar", "carchi", "chimborazo", "cotopaxi", "el_oro", "esmeraldas",
    "galapagos", "guayas", "imbabura", "loja", "los_rios", "manabi", "morona_santiago", "napo",
    "orellana", "pastaza", "pichincha", "santa_elena", "santo_domingo", "sucumbios", "tungurahua",
    "zamora_chinchipe",
}


def write(tmp_path: Path, text: str, name: str = "q.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
format = 1
[[question]]
id = "where"
type = "choice"
role = "place"
level = "province"
label = { es = "Dónde", en = "Where" }
options = [ { code = "north", label = { es = "Norte", en = "North" } }, { code = "south", label = "Sur" } ]
"""


def test_default_questionnaire_fits_an_iess_deployment() -> None:
    q = load_questionnaire(None)
    assert q.source == str(DEFAULT_PATH)
    assert q.place_fields == ("province", "facility")
    assert q.month_field == "month"
    assert q.publish_place_field == "province"
    province = q.question("province")
    assert province is not None and province.type == "choice"
    assert {o.code for o in province.options} == PROVINCES and len(province.options) == 24
    assert province.answer_label("santo_domingo", "es") == "Santo Domingo de los Tsáchilas"
    facility = q.question("facility")
    assert facility is not None and facility.type == "text"
    assert any("Carlos Andrade Marín" in s for s in facility.suggestions)
    assert all(not s.startswith("#") for s in facility.suggestions)
    assert [x.id for x in q.questions_for("medication")] == ["province", "facility", "month", "medication"]
    assert "money_demanded" in [x.id for x in q.questions_for("corruption")]
    assert "medication" not in [x.id for x in q.questions_for("corruption")]
    assert [x.id for x in q.questions_for("other")] == ["province", "facility", "month"]
    q.check_categories(CATEGORIES)
    for question in q.questions:  # both languages everywhere
        assert question.label("es") and question.label("en")
        assert question.label("es") != question.label("en")


def test_validate_answers_normalises_drops_empty_and_keeps_questionnaire_order() -> None:
    q = load_questionnaire(None)
    got = q.validate_answers("corruption", {
        "money_demanded": "yes", "month": " 2026-01 ", "facility": "  ", "province": "guayas",
    })
    assert got == {"province": "guayas", "month": "2026-01", "money_demanded": "yes"}
    assert list(got) == ["province", "month", "money_demanded"]
    assert q.validate_answers("other", {}) == {}
    # NFC: a decomposed accent is stored composed.
    assert q.validate_answers("medication", {"facility": "Mari\u0301n"})["facility"] == "Marín"


@pytest.mark.parametrize(("category", "answers", "question"), [
    ("other", {"medication": "x"}, None),  # not a question of this category
    ("other", {"nonsense": "x"}, None),
    ("medication", {"province": "atlantis"}, "province"),
    ("medication", {"province": "Guayas"}, "province"),
    ("medication", {"month": "2026-13"}, "month"),
    ("medication", {"month": "2026-01-15"}, "month"),
    ("medication", {"month": "26-01"}, "month"),
    ("medication", {"month": "1850-01"}, "month"),
    ("corruption", {"money_demanded": "maybe"}, "money_demanded"),
    ("medication", {"facility": "x" * 201}, "facility"),
    ("medication", {"facility": "two\nlines"}, "facility"),
    ("medication", {"facility": "bell\x07"}, "facility"),
])
def test_validate_answers_refuses(category: str, answers: dict[str, str], question: str | None) -> None:
    with pytest.raises(AnswerError) as info:
        load_questionnaire(None).validate_answers(category, answers)
    assert info.value.question_id == question
    assert "\n" not in str(info.value)


def test_minimal_file_and_plain_option_label(tmp_path: Path) -> None:
    q = load_questionnaire(write(tmp_path, MINIMAL))
    where = q.question("where")
    assert where is not None
    assert where.choices("en") == (("north", "North"), ("south", "Sur"))
    assert q.place_fields == ("where",) and q.month_field is None and q.publish_place_field is None
    assert q.validate_answers("anything", {"where": "south"}) == {"where": "south"}


def test_suggestions_file_beside_the_questionnaire(tmp_path: Path) -> None:
    write(tmp_path, "# comment\n\nHospital A\nHospital B\nHospital A\n", "list.txt")
    q = load_questionnaire(write(tmp_path, """
format = 1
[[question]]
id = "facility"
type = "text"
label = { es = "Centro", en = "Centre" }
suggestions = "list.txt"
"""))
    facility = q.question("facility")
    assert facility is not None and facility.suggestions == ("Hospital A", "Hospital B")
    # A suggestion is only a suggestion: any short text is an answer.
    assert q.validate_answers("x", {"facility": "Centro de salud 7"}) == {"facility": "Centro de salud 7"}


def _question(extra: str, qtype: str = "text") -> str:
    return f"""
format = 1
[[question]]
id = "q1"
type = "{qtype}"
label = {{ es = "Pregunta", en = "Question" }}
{extra}
"""


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "format = 1 is required"),
    ("format = 2", "format = 1 is required"),
    ("format = 1\nextra = 3", "unknown key 'extra'"),
    ("format = 1\n[[question]\n", "not valid TOML"),
    (_question("").replace('id = "q1"', 'id = "Q1"'), "id must match"),
    (_question("").replace('id = "q1"', 'id = "1q"'), "id must match"),
    (_question("").replace('id = "q1"', f'id = "{"q" * 33}"'), "id must match"),
    (_question("", "date"), "type must be one of"),
    (_question("").replace('en = "Question"', 'en = ""'), "non-empty 'en'"),
    (_question("").replace(', en = "Question"', ""), "non-empty 'en'"),
    (_question("").replace('{ es = "Pregunta", en = "Question" }', '"Pregunta"'), "must be a table"),
    (_question("colour = 1"), "unknown key 'colour'"),
    (_question("", "choice"), "needs a non-empty options list"),
    (_question('options = [ { code = "a", label = "A" }, { code = "a", label = "B" } ]', "choice"),
     "used twice"),
    (_question('options = [ { code = "A b", label = "A" } ]', "choice"), "code must match"),
    (_question('options = [ { code = "a", label = "A" } ]'), "only for type = \"choice\""),
    (_question('role = "place"'), "needs level"),
    (_question('role = "place"\nlevel = "street"'), "needs level"),
    (_question('level = "province"'), "only for role"),
    (_question('role = "month"'), "needs type = \"month\""),
    (_question('role = "when"'), "role must be one of"),
    (_question('categories = []'), "non-empty list"),
    (_question('categories = ["Bad Code"]'), "non-empty list"),
    (_question('suggestions = "../etc/passwd"'), "file name in the questionnaire's folder"),
    (_question('suggestions = "missing.txt"'), "cannot read suggestions"),
    (_question('suggestions = "x.txt"', "choice").replace('type = "choice"', 'type = "month"'),
     "only for type = \"text\""),
    (_question("") + _question("").replace("format = 1", ""), "used twice"),
    ("format = 1\n[transparency]\nplace_level = \"province\"\n", "names no place question"),
    (_question('role = "place"\nlevel = "province"') + "[transparency]\nplace_level = \"province\"\n",
     "must name a choice question"),
])
def test_invalid_files_are_refused_with_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(QuestionnaireError) as info:
        load_questionnaire(path)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert str(path) in message


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(QuestionnaireError, match="cannot read it"):
        load_questionnaire(tmp_path / "absent.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"format = 1\n# \xe9\n")
    with pytest.raises(QuestionnaireError, match="not UTF-8"):
        load_questionnaire(bad)


def test_two_questions_of_the_same_place_level_or_month_are_refused(tmp_path: Path) -> None:
    twice = MINIMAL + MINIMAL.replace("format = 1", "").replace('"where"', '"where2"')
    with pytest.raises(QuestionnaireError, match="more than one question has role"):
        load_questionnaire(write(tmp_path, twice))


def test_unknown_category_is_caught_against_the_deployment(tmp_path: Path) -> None:
    q = load_questionnaire(write(tmp_path, _question('categories = ["medicaton"]')))
    with pytest.raises(QuestionnaireError, match="'medicaton' is not one of the deployment's categories"):
        q.check_categories(CATEGORIES)


def test_groups_for_a_form_without_script() -> None:
    groups = load_questionnaire(None).groups(CATEGORIES)
    assert groups[0][0] is None
    assert [x.id for x in groups[0][1]] == ["province", "facility", "month"]
    rest = {key: [x.id for x in qs] for key, qs in groups[1:]}
    assert rest == {("medication",): ["medication"], ("irregularities", "corruption"): ["money_demanded"]}
    # A category the deployment does not have drops out of the group (no empty heading).
    assert [key for key, _ in load_questionnaire(None).groups(["other"])] == [None]
