# SPDX-License-Identifier: AGPL-3.0-or-later
"""Account administration (admins only): list, add, disable/enable, reset 2FA, reset password.

Generated passwords and TOTP enrolments are shown once, on the page that answers the POST that
made them, and never stored in readable form. Every change is written to the audit log.
Accounts are never deleted: the audit log names them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import abort, flash, redirect, render_template, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, StringField
from wtforms.validators import DataRequired

from whistle.server import accounts, audit
from whistle.server.models import Investigator
from whistle.server.state import get_state
from whistle.server.web.investigator import bp
from whistle.server.web.investigator.auth import SESSION_VERSION, admin_required, current_investigator

T = TypeVar("T")


class NewAccountForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no type hints
    name = StringField(_l("Name"), validators=[DataRequired()])
    is_admin = BooleanField(_l("Administrator (can manage accounts)"))


def _account_error(exc: accounts.AccountError) -> str:
    if exc.code == "name_taken":
        return str(_("An account with this name already exists."))
    return str(_("Use 1 to 64 characters: lowercase letters, digits, dot, dash or underscore."))


@bp.get("/admin/accounts")
@admin_required
def accounts_list() -> ResponseReturnValue:
    """Every account: name, role, state, creation day, and the actions on it."""
    with get_state().sessions() as db:
        rows = db.scalars(select(Investigator).order_by(Investigator.name)).all()
    return render_template("investigator/accounts.html", accounts=rows,
                           me=current_investigator().id)


@bp.route("/admin/accounts/new", methods=["GET", "POST"])
@admin_required
def account_new() -> ResponseReturnValue:
    """Add an account; the answer shows its password and TOTP enrolment, once."""
    form = NewAccountForm()
    if not form.validate_on_submit():
        return render_template("investigator/account_new.html", form=form), (
            400 if form.is_submitted() else 200)
    admin = current_investigator()
    with get_state().sessions() as db:
        try:
            new = accounts.create_investigator(db, form.name.data, is_admin=bool(form.is_admin.data))
        except accounts.AccountError as exc:
            form.name.errors = [_account_error(exc)]
            return render_template("investigator/account_new.html", form=form), 400
        audit.record(db, admin.name, audit.ACCOUNT_CREATE,
                     detail=f"account={new.name} admin={'yes' if form.is_admin.data else 'no'}")
        db.commit()
    return render_template("investigator/credentials.html", purpose="new", name=new.name,
                           password=new.password, totp_secret=new.totp_secret,
                           totp_uri=new.totp_uri, qr_svg=accounts.totp_qr_svg(new.totp_uri))


def _change(account_id: int, action: str, change: Callable[[Investigator], T]
            ) -> tuple[Investigator, T]:
    """Apply ``change`` to one account, audit it, commit; keep the acting admin's own session."""
    admin = current_investigator()
    with get_state().sessions() as db:
        # The route's <int:> takes any number of digits; the database's integers stop at 2**63.
        account = db.get(Investigator, account_id) if account_id < 2**63 else None
        if account is None:
            abort(404)
        result = change(account)
        audit.record(db, admin.name, action, detail=f"account={account.name}")
        db.commit()
    if account.id == admin.id:
        # The admin reset their own credentials from this session: it stays valid, others end.
        session[SESSION_VERSION] = account.session_version
    return account, result


@bp.post("/admin/accounts/<int:account_id>/disable")
@admin_required
def account_disable(account_id: int) -> ResponseReturnValue:
    """Disable an account: its sessions end and it cannot log in. Not one's own account."""
    if account_id == current_investigator().id:
        flash(_("You cannot disable your own account."), "error")
        return redirect(url_for("investigator.accounts_list"), 303)
    account = _change(account_id, audit.ACCOUNT_DISABLE, lambda a: accounts.set_disabled(a, True))[0]
    flash(_("The account %(name)s is disabled.", name=account.name), "success")
    return redirect(url_for("investigator.accounts_list"), 303)


@bp.post("/admin/accounts/<int:account_id>/enable")
@admin_required
def account_enable(account_id: int) -> ResponseReturnValue:
    """Enable a disabled account again."""
    account = _change(account_id, audit.ACCOUNT_ENABLE, lambda a: accounts.set_disabled(a, False))[0]
    flash(_("The account %(name)s is enabled.", name=account.name), "success")
    return redirect(url_for("investigator.accounts_list"), 303)


@bp.post("/admin/accounts/<int:account_id>/reset-2fa")
@admin_required
def account_reset_totp(account_id: int) -> ResponseReturnValue:
    """Replace the account's TOTP secret; the answer shows the new enrolment, once."""
    account, uri = _change(account_id, audit.TOTP_RESET, accounts.reset_totp)
    return render_template("investigator/credentials.html", purpose="totp", name=account.name,
                           password=None, totp_secret=account.totp_secret, totp_uri=uri,
                           qr_svg=accounts.totp_qr_svg(uri))


@bp.post("/admin/accounts/<int:account_id>/reset-password")
@admin_required
def account_reset_password(account_id: int) -> ResponseReturnValue:
    """Give the account a new generated password; the answer shows it, once."""
    account, password = _change(account_id, audit.PASSWORD_RESET, accounts.reset_password)
    return render_template("investigator/credentials.html", purpose="password", name=account.name,
                           password=password, totp_secret=None, totp_uri=None, qr_svg=None)
