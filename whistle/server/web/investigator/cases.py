# SPDX-License-Identifier: AGPL-3.0-or-later
"""The investigators' case work: the list with deadlines, status changes, bundle downloads,
replies uploads and deletion. Investigators never see plaintext here: reading happens offline."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from flask import (
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import ngettext

from whistle.core.enums import Outcome, Status
from whistle.core.replies import MAX_REPLIES_FILE_BYTES, RepliesError, parse_replies
from whistle.server import audit, uploads
from whistle.server.casework import (
    FILTERS,
    SORTS,
    CaseError,
    Deadlines,
    ReplyRefusedError,
    delete_case,
    get_case,
    import_replies,
    list_cases,
    set_status,
)
from whistle.server.db import checkpoint_wal
from whistle.server.export import export_bundle
from whistle.server.intake import today
from whistle.server.state import get_state
from whistle.server.uploads import CiphertextSpool, UploadPolicy
from whistle.server.web.investigator import bp
from whistle.server.web.investigator.auth import current_investigator, login_required


def _deadlines() -> Deadlines:
    config = get_state().config
    return Deadlines(ack_days=config.ack_days, feedback_months=config.feedback_months)


@bp.get("/")
@login_required
def case_list() -> ResponseReturnValue:
    status = request.args.get("status", "open")
    sort = request.args.get("sort", "received")
    descending = request.args.get("order", "asc") == "desc"
    if status not in FILTERS or sort not in SORTS:
        abort(400)
    try:
        page = int(request.args.get("page", "1"))
    except ValueError:
        abort(400)
    with get_state().sessions() as db:
        result = list_cases(db, status=status, sort=sort, descending=descending, page=page,
                            per_page=50, deadlines=_deadlines())
    # A bundle made by download_bundle and not fetched yet: this page starts its download.
    token = session.get(SESSION_BUNDLE)
    bundle_url = (url_for("investigator.fetch_bundle", token=token)
                  if isinstance(token, str) and BUNDLE_TOKEN.fullmatch(token) else None)
    return render_template("investigator/cases.html", page=result, status=status, sort=sort,
                           order="desc" if descending else "asc", filters=FILTERS,
                           statuses=tuple(Status), outcomes=tuple(Outcome), today=today(),
                           bundle_url=bundle_url)


@bp.get("/case/<report_id>")
@login_required
def case_detail(report_id: str) -> ResponseReturnValue:
    with get_state().sessions() as db:
        try:
            report = get_case(db, report_id)
        except CaseError:
            abort(404)
        items = [{"seq": i.seq, "kind": i.kind, "created_on": i.created_on, "channel": i.channel,
                  "exported": i.exported, "attachments": len(i.attachments)} for i in report.items]
        deadlines = _deadlines()
        return render_template(
            "investigator/case.html", report=report, items=items, statuses=tuple(Status),
            outcomes=tuple(Outcome), ack_due=deadlines.ack_due(report.received_on),
            feedback_due=deadlines.feedback_due(report.received_on))


@bp.post("/case/<report_id>/status")
@login_required
def case_status(report_id: str) -> ResponseReturnValue:
    status = request.form.get("status", "")
    outcome = request.form.get("outcome") or None
    try:
        with get_state().sessions.begin() as db:
            set_status(db, report_id, status, outcome, current_investigator().name)
    except CaseError as exc:
        flash(str(exc) if str(exc) != "no such case" else _("No such case."), "error")
        return redirect(url_for("investigator.case_detail", report_id=report_id)), 303
    flash(_("Status updated."), "success")
    return redirect(url_for("investigator.case_detail", report_id=report_id)), 303


@bp.post("/case/<report_id>/delete")
@login_required
def case_delete(report_id: str) -> ResponseReturnValue:
    if request.form.get("confirm") != report_id[:8]:
        flash(_("To delete a case, type its short id to confirm."), "error")
        return redirect(url_for("investigator.case_detail", report_id=report_id)), 303
    state = get_state()
    try:
        with state.sessions.begin() as db:
            delete_case(db, report_id, current_investigator().name)
    except CaseError:
        abort(404)
    # After the commit: the deleted ciphertext must not linger in SQLite's WAL.
    checkpoint_wal(state.engine)
    flash(_("The case and all its encrypted files were deleted."), "success")
    return redirect(url_for("investigator.case_list")), 303


# Bundles made and not yet fetched wait here (ciphertext only), outside the spool's top level
# that every start sweeps; one not fetched within the hour is removed by the next download.
BUNDLE_TOKEN = re.compile(r"[0-9a-f]{32}")
BUNDLE_MAX_AGE_S = 3600
SESSION_BUNDLE = "bundle"


def _bundle_dir() -> Path:
    path = get_state().config.spool_dir / "bundles"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _sweep_bundles(folder: Path) -> None:
    cutoff = time.time() - BUNDLE_MAX_AGE_S
    for entry in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()


@bp.post("/bundle")
@login_required
def download_bundle() -> ResponseReturnValue:
    """Make a bundle of the selected cases (all their items), or of everything new, then go
    back to the case list, which fetches it.

    A file response would leave the list on the screen as it was before the export (new-message
    counts the export has just cleared) until a reload. So the bundle is written first, the
    browser is sent back to a freshly rendered list (post/redirect/get: a reload never exports
    again), and that page starts the download of the waiting file by itself (a meta refresh to
    :func:`fetch_bundle`, with a link for when it does not).
    """
    state = get_state()
    selected = request.form.getlist("report")
    scope = request.form.get("scope", "selected")
    # Anything but the page's two buttons is refused: an unknown scope exported everything new
    # (and marked it exported), a made-up id went into the audit log.
    if scope not in ("selected", "new") or not all(re.fullmatch(r"[0-9a-f]{8,32}", r) for r in selected):
        abort(400)
    if scope == "selected" and not selected:
        flash(_("Select at least one case, or download everything new."), "error")
        return redirect(url_for("investigator.case_list")), 303
    folder = _bundle_dir()
    _sweep_bundles(folder)
    token = secrets.token_hex(16)
    path = folder / f"{token}.zip"
    try:
        summary = export_bundle(
            state.sessions, path, unit_fingerprint=state.unit_key.fingerprint(),
            include_all=scope == "selected", report_ids=selected if scope == "selected" else None)
        with state.sessions.begin() as db:
            audit.record(db, current_investigator().name, audit.BUNDLE_DOWNLOAD, None,
                         f"{summary.items} item(s) of {summary.reports} report(s)"
                         + (": " + ", ".join(sorted(selected)) if scope == "selected" else ", new"))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    # The token lives in this investigator's session only: another account cannot fetch it.
    session[SESSION_BUNDLE] = token
    flash(ngettext("Bundle ready: %(num)d encrypted item. The download starts by itself.",
                   "Bundle ready: %(num)d encrypted items. The download starts by itself.",
                   summary.items), "success")
    return redirect(url_for("investigator.case_list")), 303


@bp.get("/bundle/<token>")
@login_required
def fetch_bundle(token: str) -> ResponseReturnValue:
    """The waiting bundle, once: sent, then removed; the list no longer asks for it."""
    if not BUNDLE_TOKEN.fullmatch(token) or session.get(SESSION_BUNDLE) != token:
        abort(404)
    session.pop(SESSION_BUNDLE, None)
    path = _bundle_dir() / f"{token}.zip"
    if not path.is_file():
        flash(_("That bundle was already downloaded or has expired. Download again: the items stay "
                "on the server."), "error")
        return redirect(url_for("investigator.case_list")), 303
    name = f"whistle-bundle-{today().isoformat()}.zip"
    return Response(stream_with_context(_stream_and_remove(str(path))), mimetype="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _refusal(exc: RepliesError) -> str:
    """Why a replies file was refused, in the investigator's language.

    casework raises :class:`ReplyRefusedError` with a code (it knows no translations); anything
    else comes from reading the file (core.replies) and gets one message: remake the file.
    """
    if not isinstance(exc, ReplyRefusedError):
        return str(_("This is not a replies file made with 'whistle reply' by this version of "
                     "whistle, or it was damaged on the way. Make it again on the workstation."))
    number, case = exc.number, exc.report_id[:8]
    if exc.code == "not_signed":
        text = _("Reply %(number)d (case %(case)s) is not signed with the unit's signing key: it "
                 "was not made with the unit's key, or it was altered.", number=number, case=case)
    elif exc.code == "no_report":
        text = _("Reply %(number)d is for case %(case)s, which is not on this server (deleted, or "
                 "the bundle came from another server).", number=number, case=case)
    elif exc.code == "wrong_source":
        text = _("Reply %(number)d is not sealed to the source of case %(case)s.",
                 number=number, case=case)
    elif exc.code == "already_imported":
        text = _("Reply %(number)d (case %(case)s) was imported before: this file was already "
                 "uploaded.", number=number, case=case)
    else:
        text = _("Reply %(number)d (case %(case)s) was refused.", number=number, case=case)
    return str(text)


def _stream_and_remove(path: str) -> Iterator[bytes]:
    # The bundle is ciphertext, but it is still removed as soon as it has been sent.
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(256 * 1024):
                yield chunk
    finally:
        os.unlink(path)


@bp.route("/replies", methods=["GET", "POST"])
@login_required
@uploads.accepts(UploadPolicy.CIPHERTEXT, fields=("replies",))
def upload_replies() -> ResponseReturnValue:
    if request.method == "GET":
        return render_template("investigator/replies.html")
    upload = request.files.get("replies")
    if upload is None or not isinstance(upload.stream, CiphertextSpool):
        return render_template("investigator/replies.html", refused=_(
            "Choose a replies file made with 'whistle reply' on the workstation.")), 400
    if upload.stream.size > MAX_REPLIES_FILE_BYTES:
        abort(413)
    data = b"".join(upload.stream.iter_chunks())
    try:
        replies = parse_replies(data)
        with get_state().sessions.begin() as db:
            count = import_replies(db, replies, current_investigator().name,
                                   get_state().unit_sign_key)
    except RepliesError as exc:
        # Shown in the error block of the page (templates/_macros.html), in the page's language:
        # the English detail of the exception is for the command line and the logs.
        return render_template("investigator/replies.html", refused=_(
            "The replies file was refused and nothing was imported."), reason=_refusal(exc)), 400
    flash(ngettext("%(num)d reply imported. The source will see it at their next login.",
                   "%(num)d replies imported. The sources will see them at their next login.", count),
          "success")
    return redirect(url_for("investigator.case_list")), 303
