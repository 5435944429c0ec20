# SPDX-License-Identifier: AGPL-3.0-or-later
"""The casebook's pages: inbox, search, case, quarantine list, replies waiting to be carried."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request, send_file
from flask.typing import ResponseReturnValue

from whistle.workstation.casebook import answers, deadlines, metadata, queries
from whistle.workstation.casebook.export import attachment_findings
from whistle.workstation.casebook.store import today
from whistle.workstation.casebook.web import PACKAGE, book, require_case, state
from whistle.workstation.casebook.web import login as do_login

bp = Blueprint("views", __name__)

STYLES = {"whistle.css", "casebook.css"}


@bp.get("/login")
def login() -> ResponseReturnValue:
    """The one-time link: token in, session cookie out."""
    return do_login(request.args.get("token", ""))


@bp.get("/static/<name>")
def style(name: str) -> Response:
    """The two stylesheets, and nothing else of the package's static folder."""
    if name not in STYLES:
        return Response("Not found.\n", status=404, mimetype="text/plain")
    response = send_file(PACKAGE / "static" / "css" / name, mimetype="text/css", max_age=3600)
    return response


@bp.get("/")
def inbox() -> str:
    """Every case, filtered, sorted and one page at a time."""
    filters = queries.Filters.from_args(request.args)
    page = queries.inbox(book(), filters, today())
    return render_template("casebook/inbox.html", page=page, filters=filters,
                           tags=book().all_tags(), sorts=list(queries.SORTS),
                           page_sizes=queries.PAGE_SIZES)


@bp.get("/search")
def search() -> str:
    """Full-text search over reports and messages, with the inbox's filters."""
    text = request.args.get("q", "")[:500]
    args = dict(request.args)
    args.setdefault("sort", "relevance")
    filters = queries.Filters.from_args(args)
    page = queries.search(book(), text, filters, today())
    return render_template("casebook/search.html", page=page, filters=filters, q=text,
                           tags=book().all_tags(), page_sizes=queries.PAGE_SIZES)


@bp.get("/case/<case_id>")
def case(case_id: str) -> str:
    """One case: the conversation in order, attachments, notes, tags, assignee, links, replies."""
    row = require_case(case_id)
    cb = book()
    items = cb.items(case_id)
    attachments = cb.attachments(case_id)
    by_item: dict[str, list[dict[str, object]]] = {}
    for att in attachments:
        entry = dict(att)
        entry["findings"] = attachment_findings(cb, att)
        entry["preview"] = is_text(att["type"], att["name"]) and bool(att["sha256"])
        by_item.setdefault(att["item_id"], []).append(entry)
    replies = cb.replies(case_id)
    # The conversation: the source's items and the replies written here, by day then number.
    entries: list[tuple[str, int, str, object]] = [
        (i["created_on"], 0, "item", dict(i) | {"attachments": by_item.get(i["id"], [])}) for i in items]
    entries += [(r["written_on"], 1, "reply", dict(r)) for r in replies]
    entries.sort(key=lambda e: (e[0], e[1]))
    new_items = {i["id"] for i in items if not i["seen"]}
    day = today()
    links = [(other, cb.case(other)) for other in cb.links(case_id)]
    quarantined = cb.db.execute("SELECT * FROM quarantine WHERE report_id = ? AND resolved = 0 "
                                "ORDER BY id", (case_id,)).fetchall()
    from whistle.workstation.casebook.web.patterns import similar_for_case

    html = render_template(
        "casebook/case.html", case=row, entries=entries, new_items=new_items,
        answers=answers.of_case(cb, case_id, state().fields), similar=similar_for_case(case_id),
        ack=deadlines.ack_deadline(row, day), feedback=deadlines.feedback_deadline(row, day),
        notes=cb.notes(case_id), tags=cb.tags(case_id), links=links, quarantined=quarantined,
        has_findings=any(a["findings"] for entries_ in by_item.values() for a in entries_),
        mat2=metadata.mat2_path() is not None, next_seq=cb.next_reply_seq(case_id),
        default_purpose="feedback" if (replies or row["server_replies"]) else "acknowledgement",
        bound=row["source_key"] is not None and row["case_tag"] is not None,
        replies_enabled=state().signing_key is not None)
    if new_items:
        cb.mark_seen(case_id)
    return html


@bp.get("/quarantine")
def quarantine() -> str:
    """Every part of a bundle that was not imported as it came, and why."""
    return render_template("casebook/quarantine.html", rows=book().quarantine())


@bp.get("/replies")
def replies() -> str:
    """Replies sealed here: those still to collect, and those on their way to the server."""
    rows = book().db.execute(
        "SELECT * FROM replies WHERE on_server = 0 ORDER BY id DESC LIMIT 500").fetchall()
    return render_template("casebook/replies.html", rows=rows)


TEXT_TYPES = ("text/", "application/json", "application/xml", "application/csv")
TEXT_SUFFIXES = (".txt", ".csv", ".md", ".log", ".json", ".xml", ".eml", ".html", ".htm", ".svg")


def is_text(mime: str, name: str) -> bool:
    """Whether an attachment gets a plain-text preview (shown as text, whatever it holds)."""
    return mime.lower().startswith(TEXT_TYPES) or name.lower().endswith(TEXT_SUFFIXES)

