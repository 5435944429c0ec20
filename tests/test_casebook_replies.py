# SPDX-License-Identifier: AGPL-3.0-or-later
"""Replies written in the casebook: sealed to the key inside the report with its case tag and
number, signed, recorded as sent-pending-import, collected into the replies file that
``import-replies`` takes; and the deadlines they meet."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from support import (
    CASEBOOK_PORT,
    RECEIPT,
    Workstation,
    casebook_bundle,
    casebook_client,
    casebook_form_token,
    post_form,
    source_login,
)

from whistle import cli
from whistle.core.replies import open_reply, read_replies_file
from whistle.server.casework import import_replies
from whistle.workstation.casebook import deadlines, store
from whistle.workstation.casebook.importer import import_bundle
from whistle.workstation.casebook.replies import UnboundCaseError, collect_replies, write_reply
from whistle.workstation.casebook.store import Casebook

BASE = f"http://127.0.0.1:{CASEBOOK_PORT}"


@pytest.fixture
def filed(app: Flask, client: FlaskClient, workstation: Workstation, tmp_path: Path) -> tuple[str, Path]:
    """A report filed through the JavaScript-off form, imported into a casebook; returns the
    receipt passphrase and the casebook folder."""
    answer = post_form(client, "No hay insulina en la farmacia del hospital.", [])
    phrase = RECEIPT.search(answer.get_data(as_text=True))
    assert phrase
    root = tmp_path / "cb"
    with Casebook.open(root) as book:
        import_bundle(book, casebook_bundle(app, tmp_path / "b.zip"), [workstation.secret_key])
    return phrase.group(1), root


def _only_case(root: Path) -> str:
    with Casebook.open(root) as book:
        return str(book.db.execute("SELECT id FROM cases").fetchone()[0])


def test_casebook_reply_round_trip_source_reads_it(
    app: Flask, workstation: Workstation, filed: tuple[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    phrase, root = filed
    case_id = _only_case(root)
    web, _ = casebook_client(root, workstation.signing_key)
    token = casebook_form_token(web, f"/case/{case_id}")
    answer = web.post(f"/case/{case_id}/reply", base_url=BASE, data={
        "csrf_token": token, "body": "Gracias. Revisamos la farmacia esta semana.", "purpose": ""})
    assert answer.status_code == 303
    html = web.get(f"/case/{case_id}?lang=en", base_url=BASE).get_data(as_text=True)
    assert "Revisamos la farmacia" in html and "sent — pending import" in html
    with Casebook.open(root) as book:
        (row,) = book.replies(case_id)
        assert row["seq"] == 1 and row["purpose"] == "acknowledgement"
        case = book.case(case_id)
        assert case["ack_on"] == store.today().isoformat()
        tag = bytes(case["case_tag"])
    out = tmp_path / "usb" / "replies.json"
    out.parent.mkdir()
    assert cli.main(["casebook", "replies", "--out", str(out), "--casebook", str(root)]) == 0
    assert "1 reply written" in capsys.readouterr().out
    # Nothing new to collect a second time; --again writes nothing twice.
    assert cli.main(["casebook", "replies", "--out", str(out), "--casebook", str(root)]) == 0
    assert cli.main(["casebook", "replies", "--out", str(out), "--again", "--casebook", str(root)]) == 0
    (sealed,) = read_replies_file(out)
    assert out.stat().st_mode & 0o077 == 0
    state = app.extensions["whistle"]
    # On the server: import-replies, then the source reads it with the receipt passphrase.
    with state.sessions.begin() as db:
        assert import_replies(db, [sealed], "tester", state.unit_sign_key) == 1
    source = app.test_client()
    source_login(source, phrase)
    page = source.get("/case").get_data(as_text=True)
    assert "Revisamos la farmacia esta semana." in page
    # The next bundle tells the casebook the server holds it.
    with Casebook.open(root) as book:
        import_bundle(book, casebook_bundle(app, tmp_path / "b2.zip", include_all=True),
                      [workstation.secret_key])
        assert book.replies(case_id)[0]["on_server"] == 1
        assert book.next_reply_seq(case_id) == 2
    assert len(tag) == 16


def test_casebook_reply_numbers_and_seals_to_the_key_inside(
    workstation: Workstation, filed: tuple[str, Path],
) -> None:
    from whistle.core.replies import SealedReply

    _, root = filed
    case_id = _only_case(root)
    with Casebook.open(root) as book:
        case = book.case(case_id)
        # The manifest's key was swapped after import: the reply still goes to the key inside.
        book.db.execute("UPDATE cases SET manifest_key = ? WHERE id = ?", ("AAAA", case_id))
        first = write_reply(book, case_id, "Primera", workstation.signing_key)
        second = write_reply(book, case_id, "Segunda", workstation.signing_key, purpose="feedback")
        assert (first.seq, second.seq) == (1, 2) and first.bound
        rows = book.replies(case_id)
        assert [r["purpose"] for r in rows] == ["acknowledgement", "feedback"]
        assert bytes(rows[0]["recipient"]) == bytes(case["source_key"])
        refreshed = book.case(case_id)
        assert refreshed["feedback_on"] == store.today().isoformat()
        # The server already holds 5 replies (written elsewhere): the next one is 6.
        book.db.execute("UPDATE cases SET server_replies = 5 WHERE id = ?", (case_id,))
        assert write_reply(book, case_id, "Tercera", workstation.signing_key).seq == 6
        reply = SealedReply(case_id, bytes(rows[1]["recipient"]), bytes(rows[1]["sealed"]),
                            bytes(rows[1]["signature"]))
        with pytest.raises(Exception):  # noqa: B017,PT011 - the unit key cannot open a reply
            open_reply(reply, workstation.secret_key, workstation.signing_key.verify_key,
                       case_tag=bytes(case["case_tag"]))
        with pytest.raises(store.CasebookError):
            write_reply(book, case_id, "   ", workstation.signing_key)


def test_casebook_reply_to_a_report_without_its_own_key_is_refused(
    workstation: Workstation, filed: tuple[str, Path],
) -> None:
    _, root = filed
    case_id = _only_case(root)
    with Casebook.open(root) as book:
        book.db.execute("UPDATE cases SET report_version = 1, source_key = NULL, case_tag = NULL, "
                        "manifest_key = ? WHERE id = ?",
                        (workstation.secret_key.public_key.to_base64(), case_id))
        with pytest.raises(UnboundCaseError, match="before protocol v2"):
            write_reply(book, case_id, "Hola", workstation.signing_key)
        written = write_reply(book, case_id, "Hola", workstation.signing_key, trust_server_key=True)
        assert not written.bound and written.seq is None
        book.db.execute("UPDATE cases SET report_version = NULL WHERE id = ?", (case_id,))
        with pytest.raises(UnboundCaseError, match="export --all"):
            write_reply(book, case_id, "Hola", workstation.signing_key)


def test_casebook_collect_adds_to_an_existing_replies_file(
    workstation: Workstation, filed: tuple[str, Path], tmp_path: Path,
) -> None:
    _, root = filed
    case_id = _only_case(root)
    out = tmp_path / "replies.json"
    with Casebook.open(root) as book:
        write_reply(book, case_id, "Uno", workstation.signing_key)
        assert collect_replies(book, out) == 1
        write_reply(book, case_id, "Dos", workstation.signing_key)
        assert collect_replies(book, out) == 1
        assert collect_replies(book, out) == 0
        assert len(read_replies_file(out)) == 2
        assert book.pending_replies() == []


def test_casebook_deadlines() -> None:
    assert deadlines.ack_due("2026-01-25") == "2026-02-01"
    assert deadlines.add_months(dt.date(2026, 1, 31), 1) == dt.date(2026, 2, 28)
    assert deadlines.add_months(dt.date(2026, 11, 30), 3) == dt.date(2027, 2, 28)
    # Acknowledged in time: 3 months from the acknowledgement; late or never: from day 7.
    assert deadlines.feedback_due("2026-01-01", "2026-01-03") == "2026-04-03"
    assert deadlines.feedback_due("2026-01-01", "2026-01-20") == "2026-04-08"
    assert deadlines.feedback_due("2026-01-01", None) == "2026-04-08"
    today = dt.date(2026, 1, 9)
    row = {"ack_due": "2026-01-08", "ack_on": None, "feedback_due": "2026-04-08", "feedback_on": None}
    ack, feedback = deadlines.ack_deadline(row, today), deadlines.feedback_deadline(row, today)
    assert ack.overdue and not ack.soon and ack.days_left == -1
    assert not feedback.overdue and not feedback.soon
    row |= {"ack_on": "2026-01-09"}
    ack = deadlines.ack_deadline(row, today)
    assert not ack.overdue and ack.late and ack.met_on == "2026-01-09"
    soon = deadlines.ack_deadline({"ack_due": "2026-01-10", "ack_on": None}, today)
    assert soon.soon and not soon.overdue


def test_casebook_overdue_filter_and_flags(
    workstation: Workstation, filed: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, root = filed
    case_id = _only_case(root)
    web, _ = casebook_client(root, workstation.signing_key)
    assert case_id[:8] not in web.get("/?overdue=1", base_url=BASE).get_data(as_text=True)
    later = store.today() + dt.timedelta(days=8)
    monkeypatch.setattr(store, "today", lambda: later)
    from whistle.workstation.casebook.web import views

    monkeypatch.setattr(views, "today", lambda: later)
    html = web.get("/?overdue=1", base_url=BASE).get_data(as_text=True)
    assert case_id[:8] in html and 'class="overdue"' in html
    with Casebook.open(root) as book:
        write_reply(book, case_id, "Recibido", workstation.signing_key)
    html = web.get("/?overdue=1", base_url=BASE).get_data(as_text=True)
    assert case_id[:8] not in html  # acknowledged (late), feedback not yet due
