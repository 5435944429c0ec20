# SPDX-License-Identifier: AGPL-3.0-or-later
"""The casebook's local web UI (``whistle casebook serve``): a Flask app for one investigator at
the workstation, listening on the loopback address only.

Who may talk to it:

- only a request whose ``Host`` header is exactly the address and port it listens on (a page of
  another site that rebinds its DNS name to 127.0.0.1 sends its own name: refused);
- only a browser that opened the one-time link ``serve`` printed: the token in it is exchanged,
  once, for a session cookie (HttpOnly, SameSite=Strict, signed with a key made at start and
  forgotten at exit);
- every POST carries the session's CSRF token (Flask-WTF, as on the server), and a POST whose
  ``Origin`` is another origin is refused before that.

Every answer carries the server's security headers and a CSP stricter than the server's (the
casebook runs no script at all); nothing is loaded from another origin, every page works with
JavaScript off. Attachments are served only as downloads, never rendered. Spanish by default,
English on request, with the server's catalogue (whistle/translations) and Flask-Babel.

Imports nothing of :mod:`whistle.server`: the workstation installs no server code.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, current_app, g, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import Babel
from flask_wtf.csrf import CSRFError, CSRFProtect

from whistle.core.crypto import UnitSigningKey
from whistle.core.enums import LANGUAGE_NAMES, Language
from whistle.core.webpolicy import csp, headers
from whistle.workstation.casebook.answers import Fields, fields_of
from whistle.workstation.casebook.store import Casebook

PACKAGE = Path(__file__).resolve().parents[3]
ROOT = PACKAGE.parent
LANGUAGES = ("es", "en")

# The server's policy (whistle.core.webpolicy, shared with whistle/server/security.py) without
# what only its pages' scripts need: the casebook has no script, so script-src and connect-src
# are 'none' (default-src).
CSP = csp()
HEADERS = headers(CSP)
SESSION_FLAG = "casebook_auth"


@dataclass
class ServeState:
    """What one ``serve`` run holds: where the casebook is, the address it answers on, the
    one-time token (None once used) and the unit's signing key (None: replies disabled)."""

    root: Path
    host: str
    port: int
    token: str | None
    signing_key: UnitSigningKey | None
    run_id: str
    # The questionnaire's place and month questions (``--questionnaire``; default the shipped one).
    fields: Fields = field(default_factory=lambda: _default_fields())

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def login_url(self) -> str:
        """The one-time link to open in the browser."""
        return f"{self.origin}/login?token={self.token}"


def _default_fields() -> Fields:
    from whistle.core.questionnaire import load_questionnaire

    return fields_of(load_questionnaire(None))


def template_folder() -> Path:
    """The Jinja templates: inside the installed package, else the checkout's top (as the
    server finds them)."""
    for candidate in (PACKAGE / "templates", ROOT / "templates"):
        if (candidate / "casebook" / "layout.html").is_file():
            return candidate
    raise FileNotFoundError(f"no casebook templates in {PACKAGE / 'templates'} or {ROOT / 'templates'}")


def state() -> ServeState:
    """The running casebook's state."""
    value: ServeState = current_app.extensions["casebook"]
    return value


def book() -> Casebook:
    """This request's connection to the casebook (one per request: the server is threaded)."""
    if "casebook" not in g:
        g.casebook = Casebook.attach(state().root)
    found: Casebook = g.casebook
    return found


def select_locale() -> str:
    """``?lang=`` (remembered in the session), else the session's, else Spanish."""
    wanted = request.args.get("lang", "")
    if wanted in LANGUAGES:
        session["lang"] = wanted
        return wanted
    stored = session.get("lang")
    return str(stored) if stored in LANGUAGES else "es"


def create_app(serve_state: ServeState) -> Flask:
    """The casebook app for one ``serve`` run."""
    app = Flask(__name__, template_folder=str(template_folder()), static_folder=None)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),
        SESSION_COOKIE_NAME="casebook",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=False,  # plain HTTP on the loopback address
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=False,
        BABEL_DEFAULT_LOCALE="es",
        BABEL_TRANSLATION_DIRECTORIES=str(PACKAGE / "translations"),
    )
    app.extensions["casebook"] = serve_state
    # Charts and spikes, computed in the background (``serve`` starts it watching the casebook).
    from whistle.workstation.casebook.web.precompute import Precomputer

    app.extensions["casebook_precompute"] = Precomputer(serve_state.root, serve_state.fields)
    # The host, origin and session checks run first, before the CSRF check (a request from a
    # foreign host is refused as such, whatever it carries).
    _guard(app)
    CSRFProtect(app)
    Babel(app, locale_selector=select_locale)
    _helpers(app)

    from whistle.workstation.casebook.web.actions import bp as actions_bp
    from whistle.workstation.casebook.web.files import bp as files_bp
    from whistle.workstation.casebook.web.patterns import bp as patterns_bp
    from whistle.workstation.casebook.web.views import bp as views_bp

    app.register_blueprint(views_bp)
    app.register_blueprint(patterns_bp)
    app.register_blueprint(actions_bp)
    app.register_blueprint(files_bp)
    return app


def _plain(status: int, text: str) -> Response:
    """A refusal that renders nothing of the request (no template, no reflected header)."""
    response = Response(text + "\n", status=status, mimetype="text/plain")
    return response


def _guard(app: Flask) -> None:
    @app.before_request
    def _check_host_and_session() -> ResponseReturnValue | None:
        st = state()
        # DNS rebinding: a hostile page's requests carry its own host name, never ours.
        if request.host != f"{st.host}:{st.port}":
            return _plain(421, "This casebook answers only at its own address.")
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and origin != st.origin:
                return _plain(403, "Cross-site request refused.")
        if request.endpoint in ("views.login", "views.style"):
            return None
        if session.get(SESSION_FLAG) != st.run_id:
            return _plain(403, "Open the link 'whistle casebook serve' printed to use the casebook.")
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if request.endpoint != "views.style":
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        response.headers.pop("Server", None)
        return response

    @app.teardown_request
    def _close(_exc: BaseException | None) -> None:
        found = g.pop("casebook", None)
        if found is not None:
            found.db.close()

    @app.errorhandler(CSRFError)
    def _csrf(_exc: CSRFError) -> ResponseReturnValue:
        return _plain(400, "The form's security token is missing or wrong: reload the page.")

    @app.errorhandler(404)
    def _missing(_exc: Exception) -> ResponseReturnValue:
        return _plain(404, "Not found.")

    @app.errorhandler(405)
    def _method(_exc: Exception) -> ResponseReturnValue:
        return _plain(405, "Method not allowed.")

    @app.errorhandler(413)
    def _large(_exc: Exception) -> ResponseReturnValue:
        return _plain(413, "Too large.")


def _helpers(app: Flask) -> None:
    from whistle.workstation.casebook.web import labels

    labels.init_app(app)

    @app.context_processor
    def _inject() -> dict[str, Any]:
        current = select_locale()
        return {
            "current_lang": current,
            "other_langs": [(code, LANGUAGE_NAMES[Language(code)]) for code in LANGUAGES
                            if code != current],
            "replies_enabled": state().signing_key is not None,
        }


def login(token: str) -> ResponseReturnValue:
    """Exchange the one-time token for a session cookie."""
    st = state()
    if st.token is None or not hmac.compare_digest(token.encode(), st.token.encode()):
        return _plain(403, "This link is not valid or was used already: restart "
                           "'whistle casebook serve' for a new one.")
    st.token = None  # one time
    session.clear()
    session[SESSION_FLAG] = st.run_id
    return redirect(url_for("views.inbox"), code=303)


def require_case(case_id: str) -> Any:
    """The case row for a URL's id, or 404."""
    row = book().case(case_id)
    if row is None:
        abort(404)
    return row
