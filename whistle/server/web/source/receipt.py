# SPDX-License-Identifier: AGPL-3.0-or-later
"""The receipt page, shown once, and the one-time tokens of the source's forms (receipts.py).

Post/redirect/get: ``POST /submit`` files the report, keeps the passphrase (encrypted, in memory
or Redis, for minutes) under the form's one-time token, puts that token in the session and
redirects here. ``GET /receipt`` shows the passphrase once; a reload or a visit from history
then says the receipt was already shown, and never files anything. The one exception is the
language switch: the receipt page's language links carry a one-time *ticket* (``?show=…``) that
re-renders the same receipt in the other language once, with a fresh ticket for the next switch.
A ticket in browser history is spent, so the next user of a shared computer gets nothing from it.

Only the JavaScript-off form has a receipt here: on the JavaScript path the browser draws the
passphrase and shows it from its own memory; the server never has it (docs/protocol.md 5.2).
"""

from __future__ import annotations

import hmac
import secrets

from flask import render_template, request, session
from flask.typing import ResponseReturnValue

from whistle.core.enums import Channel
from whistle.server.intake import Receipt
from whistle.server.receipts import well_formed
from whistle.server.state import get_state
from whistle.server.web.source import bp

# The form field that carries a form's one-time token, and the session key of the receipt
# waiting to be shown (the token, never the passphrase).
FORM_TOKEN = "once"  # noqa: S105 - a field name, not a secret
RECEIPT_TOKEN = "receipt"  # noqa: S105 - a session key name, not a secret

# The states of an entry: a post is filing it; its receipt waits to be shown; shown (kept only for
# a language switch with the ticket); a follow-up message was sent.
FILING, READY, SHOWN, SENT = "filing", "ready", "shown", "sent"


def new_token() -> str:
    """A fresh one-time token for a form (or a receipt ticket)."""
    return secrets.token_urlsafe(32)


def posted_token() -> str | None:
    """The one-time token of the posted form, or None when it is missing or malformed."""
    token = request.form.get(FORM_TOKEN)
    return token if well_formed(token) else None


def claim(token: str, state: str = FILING) -> bool:
    """Take a form's token before filing; False when this form was already sent."""
    return get_state().once.claim(token, {"s": state})


def release(token: str) -> None:
    """Give a token back after a failed filing, so that the same form can be sent again."""
    get_state().once.drop(token)


def receipt_ready(token: str, receipt: Receipt) -> None:
    """Keep a filed report's receipt for the receipt page, and point this session at it."""
    get_state().once.put(token, {"s": READY, "p": receipt.passphrase, "c": receipt.channel.value})
    session[RECEIPT_TOKEN] = token


def point_at(token: str) -> None:
    """A second post of a form: its receipt (shown or not) is the first post's."""
    session[RECEIPT_TOKEN] = token


@bp.get("/receipt")
def receipt() -> ResponseReturnValue:
    """The receipt, once (or once more per language-switch ticket); otherwise a page saying it was
    already shown (or, while the first post of a double post is still filing, to wait)."""
    store = get_state().once
    token = session.get(RECEIPT_TOKEN)
    record = store.get(token) if isinstance(token, str) else None
    state = record.get("s") if record else None
    if record is None or not isinstance(token, str):
        return render_template("receipt.html", gone=True)
    if state == FILING:
        return render_template("receipt.html", filing=True)
    ticket = request.args.get("show", "")
    again = state == SHOWN and bool(ticket) and hmac.compare_digest(
        ticket.encode(), record.get("t", "").encode())
    if state != READY and not again:
        return render_template("receipt.html", gone=True)
    fresh = new_token()
    store.put(token, {"s": SHOWN, "p": record["p"], "c": record["c"], "t": fresh})
    try:
        channel = Channel(record["c"])
    except ValueError:
        channel = Channel.SERVER_FORM
    return render_template("receipt.html", passphrase=record["p"], channel=channel,
                           lang_query="&show=" + fresh)
