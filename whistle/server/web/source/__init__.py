# SPDX-License-Identifier: AGPL-3.0-or-later
"""The source blueprint: public pages and the small JSON API the page's script uses."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("source", __name__)

from whistle.server.web.source import api, case, followup, receipt, transparency, views  # noqa: E402,F401  (routes register themselves on bp)
