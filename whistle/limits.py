# SPDX-License-Identifier: AGPL-3.0-or-later
"""Rate limits (flask-limiter). Behind Tor every request comes from 127.0.0.1, so no limit is
ever keyed on the client address: limits are global, per session, or per account name."""

from __future__ import annotations

from flask import Flask
from flask_limiter import Limiter


def _global_key() -> str:
    # One bucket for everyone: a ceiling on an expensive endpoint, whoever calls it.
    return "global"


limiter = Limiter(key_func=_global_key, default_limits=[], headers_enabled=True)


def init_app(app: Flask) -> None:
    config = app.extensions["whistle"].config
    app.config["RATELIMIT_STORAGE_URI"] = config.ratelimit_storage
    app.config.setdefault("RATELIMIT_ENABLED", True)
    limiter.init_app(app)
