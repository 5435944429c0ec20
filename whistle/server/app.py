# SPDX-License-Identifier: AGPL-3.0-or-later
"""The application factory, after Flask's tutorial: extensions bound here, blueprints at module level."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import Babel
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from whistle.core.passphrase import DerivationGate, GateBusyError
from whistle.server import faults, i18n, limits, quotas, security, static_files
from whistle.server.answers import error_response, wants_json
from whistle.server.config import Config, load_config
from whistle.server.db import make_sessionmaker
from whistle.server.instance import InstanceError, check_key_folder, init_instance, load_unit_sign_key
from whistle.server.receipts import make_once_store
from whistle.server.source_sessions import make_store
from whistle.server.state import State
from whistle.server.uploads import ClientTooSlow, WhistleRequest

# whistle/ (the package: static files, translations; templates/ too once installed from a wheel)
# and, in a checkout, the repository root (templates/): see template_folder().
PACKAGE = Path(__file__).resolve().parent.parent
ROOT = PACKAGE.parent
MB = 1024 * 1024


def template_folder() -> Path:
    """Where the Jinja templates are: inside the installed package, else the checkout's top.

    The source tree keeps ``templates/`` at the repository root; a wheel (and so ``pip install .``)
    carries a copy at ``whistle/templates/`` (setup.py); an editable install reads the checkout.
    Fail closed: without templates every page would be a 500, so the app refuses to start.
    """
    for candidate in (PACKAGE / "templates", ROOT / "templates"):
        if (candidate / "base.html").is_file():
            return candidate
    raise InstanceError(f"no templates in {PACKAGE / 'templates'} or {ROOT / 'templates'}: "
                        "reinstall whistle (pip install .)")


csrf = CSRFProtect()
babel = Babel()


def create_app(config: Config | None = None) -> Flask:
    """Build the app; raise :class:`whistle.server.instance.InstanceError` (fail closed) on a bad setup."""
    config = config or load_config(os.environ)
    # Checked before anything is created: a server with a private key must not even init.
    unit_key = check_key_folder(config)
    unit_sign_key = load_unit_sign_key(config)
    secrets, engine = init_instance(config)

    app = Flask(
        __name__,
        template_folder=str(template_folder()),
        # Static files are served by static_files.py (content-hashed URLs, pre-compressed).
        static_folder=None,
    )
    app.request_class = WhistleRequest
    app.config.update(
        SECRET_KEY=secrets.flask_secret_key,
        MAX_CONTENT_LENGTH=config.max_upload_mb * MB,
        # Form text (the report body) is held in memory only; 100,000 characters fit.
        MAX_FORM_MEMORY_SIZE=2 * MB,
        MAX_FORM_PARTS=200,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=config.https,
        SESSION_COOKIE_NAME="whistle",
        PERMANENT_SESSION_LIFETIME=30 * 60,
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=True,
        BABEL_DEFAULT_LOCALE=config.default_language,
        BABEL_TRANSLATION_DIRECTORIES=str(PACKAGE / "translations"),
    )
    app.extensions["whistle"] = State(
        config=config,
        unit_key=unit_key,
        secrets=secrets,
        engine=engine,
        sessions=make_sessionmaker(engine),
        gate=DerivationGate(config.argon2_concurrency),
        source_sessions=make_store(config.ratelimit_storage, secrets.key_prefix),
        unit_sign_key=unit_sign_key,
        once=make_once_store(config.ratelimit_storage, secrets.key_prefix),
    )
    _quiet_logging(app)

    csrf.init_app(app)
    babel.init_app(app, locale_selector=i18n.select_locale)
    i18n.init_app(app)
    security.init_app(app)
    static_files.init_app(app, PACKAGE / "static")
    limits.init_app(app)
    # Upload quotas: first before_request of all, ahead of CSRF; 507 for a full disk.
    quotas.init_app(app)

    from whistle.server.web.investigator import bp as investigator_bp
    from whistle.server.web.source import bp as source_bp

    if config.interface in ("all", "source"):
        app.register_blueprint(source_bp)
    if config.interface in ("all", "investigator"):
        app.register_blueprint(investigator_bp)
    if config.interface == "whatsapp":
        # The WhatsApp bridge's webhook only (whistle/server/whatsapp/, docs/whatsapp.md).
        from whistle.server import whatsapp

        whatsapp.init_app(app)
    _register_errors(app)

    @app.context_processor
    def _home() -> dict[str, str]:
        # The start page of whichever interface this process serves.
        home = "source.index" if "source" in app.blueprints else "investigator.case_list"
        # The WhatsApp interface has no pages: its error pages link nowhere.
        return {"home_url": url_for(home) if home.partition(".")[0] in app.blueprints else "/"}

    @app.context_processor
    def _sign_fingerprint() -> dict[str, str]:
        # Beside the unit key's fingerprint wherever a page shows it: a source and the institution
        # can compare the key that signs replies too.
        return {"sign_fingerprint": unit_sign_key.fingerprint()}

    return app


def _quiet_logging(app: Flask) -> None:
    # Werkzeug's request log line carries the client address and path: never write it.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app.logger.setLevel(logging.WARNING)
    # Flask's default format starts with the exact time; a log line must not date an event
    # (a failed submission, say) more precisely than the day the database records.
    from flask.logging import default_handler

    default_handler.setFormatter(logging.Formatter("%(levelname)s in %(module)s: %(message)s"))


def _register_errors(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> ResponseReturnValue:
        from flask_babel import gettext as _

        message = _("Your session expired or the form was sent twice. Please reload the page.")
        if not wants_json() and request.endpoint == "source.followup":
            # A login refused for an old form gets the form back (with a fresh token), not a bare
            # error page: the source types the passphrase again right there.
            from whistle.server.web.source.followup import login_page

            return login_page(notice=message, status=400)
        return error_response(400, "csrf", message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        from flask_babel import gettext as _

        code = exc.code or 500
        # Werkzeug turns any error while reading the body into "client disconnected" (400); one
        # caused by the worker's minimum-rate cut gets its own answer.
        if isinstance(exc.__context__, ClientTooSlow):
            return too_slow(exc.__context__)
        # An exception in an after_request hook (the limiter deducting from Redis) reaches here
        # as a 500 wrapping it: a backend fault still answers 503.
        original = getattr(exc, "original_exception", None)
        if code == 500 and isinstance(original, Exception) and faults.is_unavailable(original):
            return unavailable(original)
        messages = {
            400: _("The request could not be understood."),
            404: _("This page does not exist."),
            405: _("This page does not accept that kind of request."),
            413: _("What you sent is too large."),
            429: _("Too many requests right now. Please wait a few minutes and try again."),
            503: _("The server is busy. Please wait a minute and try again."),
        }
        message = messages.get(code, _("Something went wrong."))
        response = error_response(code, "too_large" if code == 413 else f"http_{code}", message)
        # Keep what the exception says about the protocol (Allow on 405, for instance).
        carried = dict(exc.get_headers())
        for name in ("Allow", "Retry-After"):
            if name in carried:
                response.headers[name] = carried[name]
        if code == 429 and "Retry-After" not in response.headers:
            response.headers["Retry-After"] = str(limits.retry_after())
        if code == 503:
            response.headers.setdefault("Retry-After", "30")
        return response

    @app.errorhandler(GateBusyError)
    def gate_busy(exc: GateBusyError) -> ResponseReturnValue:
        # Every argon2 slot stayed taken for the whole bounded wait: the documented busy answer.
        return http_error(ServiceUnavailable())

    def unavailable(exc: Exception) -> ResponseReturnValue:
        from flask_babel import gettext as _

        # The database or Redis is unreachable. The request's transaction was rolled back when
        # its ``with sessions…`` block exited, so "nothing was stored" is true. Type only in the
        # log: SQLAlchemy's message quotes the statement and its parameters (ciphertext).
        app.logger.warning("backend unavailable: %s", type(exc).__name__)
        message = _("Something went wrong. Nothing was stored; please try again later.")
        return error_response(503, "unavailable", message, retry_after=faults.RETRY_AFTER_SECONDS)

    @app.errorhandler(ClientTooSlow)
    def too_slow(exc: ClientTooSlow) -> ResponseReturnValue:
        from flask_babel import gettext as _

        # The worker cut a body that arrived below the minimum rate; whatever was spooled is
        # gone with the request, and the worker closes the connection after this answer.
        message = _("What you sent arrived too slowly and was not stored. Please try again.")
        return error_response(408, "too_slow", message)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> ResponseReturnValue:
        from flask_babel import gettext as _

        if faults.is_unavailable(exc):
            return unavailable(exc)
        # Log the exception type only: messages can quote request data.
        app.logger.error("internal error: %s", type(exc).__name__)
        message = _("Something went wrong. Nothing was stored; please try again later.")
        return error_response(500, "internal", message)
