# SPDX-License-Identifier: AGPL-3.0-or-later
"""What an investigator changes from the case page: notes, tags, assignee, links (local to the
casebook, never sent anywhere) and replies (sealed to the source and signed the moment they are
written). Every POST here passed the host, session and CSRF checks of the app; each answers with
a redirect back to the case (post/redirect/get), a flashed message saying what happened."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from whistle.workstation.casebook.replies import UnboundCaseError, write_reply
from whistle.workstation.casebook.store import CasebookError
from whistle.workstation.casebook.web import book, require_case, state

bp = Blueprint("actions", __name__, url_prefix="/case/<case_id>")


def _back(case_id: str, anchor: str = "") -> ResponseReturnValue:
    return redirect(url_for("views.case", case_id=case_id) + (f"#{anchor}" if anchor else ""), code=303)


def _change(case_id: str, apply: Callable[[str], object], field: str, *, done: str, refused: str,
            anchor: str) -> ResponseReturnValue:
    """Apply one change from the case page's form field ``field``; flash ``done``, or ``refused``
    when the store refuses the value (nothing changed), and go back to the case at ``anchor``."""
    require_case(case_id)
    try:
        apply(request.form.get(field, ""))
    except CasebookError:
        flash(refused, "error")
        return _back(case_id, anchor)
    flash(done, "success")
    return _back(case_id, anchor)


@bp.post("/note")
def note(case_id: str) -> ResponseReturnValue:
    """Add a note to the case."""
    return _change(case_id, lambda body: book().add_note(case_id, body), "body",
                   done=_("Note added."),
                   refused=_("A note needs some text (at most 20,000 characters)."), anchor="notes")


@bp.post("/tags")
def tags(case_id: str) -> ResponseReturnValue:
    """Replace the case's tags."""
    return _change(case_id, lambda text: book().set_tags(case_id, text), "tags",
                   done=_("Tags saved."),
                   refused=_("Tags are words of at most 40 characters, separated by commas (30 at "
                             "most)."), anchor="triage")


@bp.post("/assignee")
def assignee(case_id: str) -> ResponseReturnValue:
    """Set who handles the case."""
    return _change(case_id, lambda name: book().set_assignee(case_id, name), "assignee",
                   done=_("Assignee saved."),
                   refused=_("An assignee is a name of at most 80 characters."), anchor="triage")


@bp.post("/link")
def link(case_id: str) -> ResponseReturnValue:
    """Link another case (by its id or the first 8+ characters of it)."""
    return _change(case_id, lambda other: book().link(case_id, other), "other",
                   done=_("Cases linked."),
                   refused=_("No single other case has that id (give at least its first 8 "
                             "characters)."), anchor="links")


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
