# SPDX-License-Identifier: AGPL-3.0-or-later
"""The investigator blueprint: the online web UI of the investigation unit (not for sources)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("investigator", __name__, url_prefix="/investigator")

from whistle.server.web.investigator import admin, auth, cases, transparency  # noqa: E402,F401  (routes register themselves on bp)
