# SPDX-License-Identifier: AGPL-3.0-or-later
"""The WhatsApp channel (``WHISTLE_INTERFACE=whatsapp``, docs/whatsapp.md): a bridge from the
WhatsApp Business Cloud API's webhooks to the one intake path, sealing on arrival.

Confidential, not anonymous: Meta sees the number and the conversation; the bridge keeps neither
(the content is sealed to the unit key as it arrives, the number is never stored). Modules:
``settings`` (WHISTLE_WHATSAPP_*), ``payload`` (signature and webhook body), ``store`` (the
encrypted conversation state), ``conversation`` (its steps and words), ``texts`` (what the source
reads), ``graph`` (pywa: sending, media download into secretstream), ``flow`` (the guided
conversation), ``bridge`` (queue, background pool, limits), ``web`` (the webhook).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Register the webhook and start the bridge (called by the app factory for this interface)."""
    from whistle.server.app import csrf
    from whistle.server.whatsapp.bridge import Bridge
    from whistle.server.whatsapp.web import EXTENSION, WebhookMiddleware, bp

    settings = app.extensions["whistle"].config.whatsapp
    if settings is None:  # unreachable: load_config reads them for this interface
        raise RuntimeError("WHISTLE_INTERFACE=whatsapp without its settings")
    bridge = Bridge(app, settings)
    app.extensions[EXTENSION] = bridge
    csrf.exempt(bp)
    app.register_blueprint(bp)
    # POST /whatsapp/webhook is answered in front of Flask's request hooks (web.py says why).
    app.wsgi_app = WebhookMiddleware(app.wsgi_app, bridge)  # type: ignore[method-assign]
