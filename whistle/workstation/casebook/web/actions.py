# SPDX-License-Identifier: AGPL-3.0-or-later
"""What an investigator changes from the case page: notes, tags, assignee, links (local to the
casebook, never sent anywhere) and replies (sealed to the source and signed the moment they are
written). Every POST here passed the host, session and CSRF checks of the app; each answers with
a redirect back to the case (post/redirect/get), a flashed message saying what happened."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from whistle.workstation.casebook.replies import UnboundCaseError, write_reply
from whistle.workstation.casebook.store import CasebookError
from whistle.workstation.casebook.web import book, require_case, state

bp = Blueprint("actions", __name__, url_prefix="/case/<case_id>")


def _back(case_id: str, anchor: str = "") -> ResponseReturnValue:
    return redirect(url_for("views.case", case_id=case_id) + (f"#{anchor}" if anchor else ""), code=303)


@bp.post("/note")
def note(case_id: str) -> ResponseReturnValue:
    """Add a note to the case."""
    require_case(case_id)
    try:
        book().add_note(case_id, request.form.get("body", ""))
    except CasebookError:
        flash(_("A note needs some text (at most 20,000 characters)."), "error")
        return _back(case_id, "notes")
    flash(_("Note added."), "success")
    return _back(case_id, "notes")


@bp.post("/tags")
def tags(case_id: str) -> ResponseReturnValue:
    """Replace the case's tags."""
    require_case(case_id)
    try:
        book().set_tags(case_id, request.form.get("tags", ""))
    except CasebookError:
        flash(_("Tags are words of at most 40 characters, separated by commas (30 at most)."), "error")
        return _back(case_id, "triage")
    flash(_("Tags saved."), "success")
    return _back(case_id, "triage")


@bp.post("/assignee")
def assignee(case_id: str) -> ResponseReturnValue:
    """Set who handles the case."""
    require_case(case_id)
    try:
        book().set_assignee(case_id, request.form.get("assignee", ""))
    except CasebookError:
        flash(_("An assignee is a name of at most 80 characters."), "error")
        return _back(case_id, "triage")
    flash(_("Assignee saved."), "success")
    return _back(case_id, "triage")


@bp.post("/link")
def link(case_id: str) -> ResponseReturnValue:
    """Link another case (by its id or the first 8+ characters of it)."""
    require_case(case_id)
    try:
        book().link(case_id, request.form.get("other", ""))
    except CasebookError:
        flash(_("No single other case has that id (give at least its first 8 characters)."), "error")
        return _back(case_id, "links")
    flash(_("Cases linked."), "success")
    return _back(case_id, "links")


@bp.post("/unlink")
def unlink(case_id: str) -> ResponseReturnValue:
    """Remove a link."""
    require_case(case_id)
    book().unlink(case_id, request.form.get("other", ""))
    flash(_("Link removed."), "success")
    return _back(case_id, "links")


@bp.post("/reply")
def reply(case_id: str) -> ResponseReturnValue:
    """Seal and sign a reply to the case's source, record it as sent, pending import."""
    require_case(case_id)
    signing_key = state().signing_key
    if signing_key is None:
        flash(_("Replies are off: start the casebook with --key to seal and sign them."), "error")
        return _back(case_id, "reply")
    try:
        written = write_reply(book(), case_id, request.form.get("body", ""), signing_key,
                              purpose=request.form.get("purpose", ""),
                              trust_server_key=request.form.get("trust_server_key") == "1")
    except UnboundCaseError:
        flash(_("This report was filed before protocol v2: it holds no key of the source's own. "
                "Tick the box to seal the reply to the key the server holds for it."), "error")
        return _back(case_id, "reply")
    except CasebookError:
        flash(_("The reply could not be sealed: it is empty or too long."), "error")
        return _back(case_id, "reply")
    if written.bound:
        flash(_("Reply %(seq)d sealed and signed. It is waiting to be carried to the server: "
                "collect it with 'whistle casebook replies --out FILE'.", seq=written.seq or 0),
              "success")
    else:
        flash(_("Reply sealed to the server's copy of the source key and signed. It is waiting to "
                "be carried to the server."), "warning")
    return _back(case_id, "reply")
